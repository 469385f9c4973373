"""Request ids, one JSON log line per request, and Prometheus metrics."""
