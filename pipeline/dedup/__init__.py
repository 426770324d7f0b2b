"""Deduplication rounds: exact, MinHash-LSH near-duplicates, boilerplate lines, decontamination."""
