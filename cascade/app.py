"""Assemble the running application from a validated configuration."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from cascade.config import AppConfig
from cascade.pipeline import Pipeline

__all__ = ["start_app"]


@contextlib.asynccontextmanager
async def start_app(config: AppConfig) -> AsyncIterator[Pipeline]:
    """Start the collector pipeline; stop everything in reverse order on exit."""
    async with Pipeline(config) as pipeline:
        yield pipeline
