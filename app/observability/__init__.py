"""What operators see: Prometheus metrics, structured request logs and (optionally) OpenTelemetry traces."""
