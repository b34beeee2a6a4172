"""The Redis side: the supervised pub/sub connection (one per process, or one per cluster
master), Sentinel lookups, the diagnoses of Redis failures, the embedded redis-server."""
