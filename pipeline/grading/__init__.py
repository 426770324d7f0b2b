"""Grading: domain, difficulty score and tier."""
