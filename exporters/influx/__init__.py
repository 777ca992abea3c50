"""InfluxDB export: line-protocol encoding, a crash-safe disk spool, and the batching async sink."""

from exporters.influx.lineprotocol import LineEncoder, LineProtocolError, encode_line
from exporters.influx.sink import InfluxConfig, InfluxConfigError, InfluxSink, SinkStats
from exporters.influx.spool import DiskSpool, SpoolError

__all__ = ["DiskSpool", "InfluxConfig", "InfluxConfigError", "InfluxSink", "LineEncoder", "LineProtocolError",
           "SinkStats", "SpoolError", "encode_line"]
