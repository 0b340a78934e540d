"""Deduplication: exact (normalized-text hash) now; URL, MinHash LSH and image dedup next."""
