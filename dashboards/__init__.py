"""Grafana dashboards as code: ``python -m dashboards`` regenerates ``dashboards/*.json``."""

from dashboards.build import DASHBOARDS, build_all, render, write_all

__all__ = ["DASHBOARDS", "build_all", "render", "write_all"]
