"""Results: the SQLite results store, latency statistics and paired tests, reports."""
