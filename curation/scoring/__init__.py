"""Signals per document: heuristics now; fastText and CLIP scorers join here."""
