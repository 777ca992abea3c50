"""InfluxDB export: line-protocol encoding, a crash-safe disk spool, and the batching async sink."""
