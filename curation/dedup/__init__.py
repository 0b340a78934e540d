"""Deduplication: exact (normalized text), URL, MinHash LSH near-duplicates (cross-build too), images."""
