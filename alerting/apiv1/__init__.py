"""Building blocks of the third-party API (``alerting/api_v1.py``, docs/api.md): its pydantic models, the
OpenAPI document built from them, the per-client rate limiter and what it reads from InfluxDB."""

from alerting.apiv1.influx import InfluxReader, StoreUnavailable
from alerting.apiv1.openapi import PREFIX, Operation, build_document
from alerting.apiv1.ratelimit import RateLimiter

__all__ = ["PREFIX", "InfluxReader", "Operation", "RateLimiter", "StoreUnavailable", "build_document"]
