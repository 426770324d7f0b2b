"""Execution traces: run code in a sandbox and render what it did."""
