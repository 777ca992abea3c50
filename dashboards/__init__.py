"""Grafana dashboards as code: ``python -m dashboards`` regenerates ``dashboards/*.json``."""

from dashboards import vehicle as _vehicle  # noqa: F401 - registers cascade-vehicle in DASHBOARDS
from dashboards.build import DASHBOARDS, build_all, render, write_all

__all__ = ["DASHBOARDS", "build_all", "render", "write_all"]
