"""Execution traces: run code units in a sandbox and render what they did, line by line (docs/traces.md)."""
