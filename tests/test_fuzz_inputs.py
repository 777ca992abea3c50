"""Everything that arrives from outside either parses or is refused with the parser's own typed
error that says where: never KeyError, IndexError, TypeError or a crash (STYLE: parsers of outside
input get property tests). Covers trace files, scenario files, run configurations and profiles;
Modbus registers, line protocol and webhooks have their own property tests."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerting.replay import TraceError, read_trace
from cascade.config import ConfigError, load_config
from collectors.modbus.profile import ProfileError, load_profile
from simulators.scenarios import ScenarioError, parse_scenario

# YAML-shaped documents built from plausible keys and hostile values.
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True),
                     st.text(max_size=12), st.sampled_from(["5s", "1h", "-3m", "C0001", "reference-cabinet",
                                                            "voltage_v", "holding", "u16", "0x7FFF", ""]))
_keys = st.sampled_from(["model", "slots", "count", "base", "stride", "slot", "cabinet", "field", "register",
                         "offset", "address", "type", "scale", "valid", "missing", "commands", "name", "target",
                         "steps", "at", "set", "ramp", "unreachable", "garbage", "cabinets", "id", "host", "port",
                         "influxdb", "url", "database", "spool_dir", "defaults", "fleet_files", "poll", "jitter",
                         "metrics", "alerting", "input", "holding", "coil", "length", "word_order", "x"])
_docs = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(_keys, inner, max_size=5)), max_leaves=25)
_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextlib.contextmanager
def _file(text: str, name: str) -> Iterator[Path]:
    """``text`` in a fresh temporary file (hypothesis examples cannot share pytest's tmp_path)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text, encoding="utf-8")
        yield path


def _dump(doc) -> str:
    return yaml.safe_dump(doc, allow_unicode=True)


@_FUZZ
@given(st.one_of(_docs.map(_dump), st.text(max_size=200)))
def test_scenario_text_parses_or_is_refused_with_scenario_error(text: str) -> None:
    try:
        parse_scenario(text, "fuzz.yaml")
    except ScenarioError as err:
        assert "fuzz.yaml" in str(err)


@_FUZZ
@given(st.one_of(_docs.map(_dump), st.text(max_size=200)))
def test_profile_file_loads_or_is_refused_with_profile_error(text: str) -> None:
    with _file(text, "p.yaml") as path:
        try:
            load_profile(path)
        except ProfileError as err:
            assert str(path) in str(err)


@_FUZZ
@given(st.one_of(_docs.map(_dump), st.text(max_size=200)))
def test_run_config_loads_or_is_refused_with_config_error(text: str) -> None:
    with _file(text, "c.yaml") as path:
        try:
            load_config(path)
        except ConfigError as err:
            assert str(path.parent) in str(err)


_cells = st.one_of(st.sampled_from(["1700000000", "2026-11-22T01:00:00Z", "site/C1", "site/C1/3", "s/c/x",
                                    "voltage_v", "temperature_c", "battery_id", "no_such_field", "nan", "inf",
                                    "1e309", "true", "", "-5", "12.5"]), st.text(max_size=8))
_rows = st.lists(st.lists(_cells, min_size=0, max_size=5).map(",".join), max_size=8)


@_FUZZ
@given(st.booleans(), _rows)
def test_trace_file_parses_or_is_refused_with_trace_error(header: bool, rows: list[str]) -> None:
    text = ("timestamp,target,field,value\n" if header else "") + "\n".join(rows)
    with _file(text, "t.csv") as path:
        try:
            readings = read_trace(path)
        except TraceError as err:
            assert err.file and err.line >= 0
            return
        for ts, reading in readings:
            assert isinstance(ts, float) and reading.cabinet_id
