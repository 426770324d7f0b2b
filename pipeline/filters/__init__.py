"""Quality filters: each returns (keep, reason)."""
