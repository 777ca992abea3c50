"""Decode and encode one poll, without the network: the read plan compiled vs ``decode_poll``.

    python -m bench decode [--profiles reference-cabinet volta-s8 kestrel-k10] [--polls 2000]

For each profile, one poll of a simulated cabinet (12 slots, or the profile's count) is read over
loopback once; then, in this process and the same run, per poll: the reference decoder
(``decode_poll``) against the plan compiled to one function (``compile_plan``, what a cabinet polls
with), and the poll's lines by ``reading_to_lines`` (compiled tuple formatters) against the general
rules (``encode_line``, one dict per point). Both pairs give the same output (checked here too). CPU µs
per poll, best of five rounds. Loopback only, bounded by ``--polls``.

Then, per profile, what building the compiled decoder costs (once per plan, at start-up): the generated
function's lines and bytecode, the compiler's peak memory (tracemalloc; glibc keeps much of it in the
process afterwards), the time; and a poll in which one field is past its valid range (that read is
decoded again by ``decode_read``: the price of a sensor stuck at its limit, every poll).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

__all__ = ["main"]


def _best_us(fn, polls: int, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(polls):
            fn()
        best = min(best, (time.process_time() - started) / polls)
    return best * 1e6


def _general_lines(reading) -> list[str]:
    """The poll's points by the general rules: a dict per point, ``encode_line`` (the baseline)."""
    import dataclasses

    from core.model import BmsProtection, ChargerProtection, EmergencyState, describe_flags
    from exporters.influx.lineprotocol import encode_line

    fixed = {"cabinet_id", "site", "model", "timestamp_ns", "slots", "over_range", "extra", "vehicle"}
    fields = {f.name: getattr(reading, f.name) for f in dataclasses.fields(reading) if f.name not in fixed}
    fields["emergency_state_text"] = (None if reading.emergency_state is None
                                      else describe_flags(EmergencyState, reading.emergency_state))
    fields["over_range"] = ",".join(reading.over_range) or None
    tags = {"site": reading.site, "cabinet": reading.cabinet_id, "model": reading.model}
    ts = reading.timestamp_ns
    lines = [encode_line("cabinet", tags, fields, ts)]
    if reading.extra:
        lines.append(encode_line("cabinet", tags, {f"extra_{k}": v for k, v in reading.extra.items()}, ts))
    for slot in reading.slots:
        fields = {f.name: getattr(slot, f.name) for f in dataclasses.fields(slot)
                  if f.name not in {"slot", "over_range", "extra"}}
        fields["charger_protection_text"] = (None if slot.charger_protection is None
                                             else describe_flags(ChargerProtection, slot.charger_protection))
        fields["bms_protection_text"] = (None if slot.bms_protection is None
                                         else describe_flags(BmsProtection, slot.bms_protection))
        fields["over_range"] = ",".join(slot.over_range) or None
        tags = {"site": reading.site, "cabinet": reading.cabinet_id, "slot": str(slot.slot)}
        lines.append(encode_line("slot", tags, fields, ts))
        if slot.extra:
            lines.append(encode_line("slot", tags, {f"extra_{k}": v for k, v in slot.extra.items()}, ts))
    return lines


async def _one_poll(host: str, port: int, device_id: int, plan) -> list:
    from collectors.modbus.tcp import ModbusTcpLink

    link = ModbusTcpLink(host, port, timeout=5.0)
    await link.connect()
    try:
        await asyncio.sleep(1.0)  # let the simulated packs settle into a charging state
        out = []
        for request in plan:
            method = {"holding": link.read_holding_registers, "input": link.read_input_registers,
                      "coil": link.read_coils, "discrete": link.read_discrete_inputs}[request.register_type]
            response = await method(request.address, count=request.count, device_id=device_id)
            out.append(None if response.isError() else
                       response.bits[: request.count] if request.register_type in ("coil", "discrete")
                       else response.registers)
        return out
    finally:
        link.close()


def _measure(name: str, polls: int) -> tuple[int, float, float, float, float, dict] | str:
    """(fields, µs decode_poll, µs compiled, µs encode_line, µs reading_to_lines, what building the compiled
    decoder costs and a poll with a field past its range), or what disagreed."""
    from bench.collector import _start_simulators, stop_simulators
    from collectors.modbus.decode import compile_plan, decode_poll
    from collectors.modbus.planner import plan_reads
    from collectors.modbus.profile import find_profile
    from exporters.influx.schema import reading_to_lines

    profile = find_profile(name)
    slots = min(profile.slot_count, 12)
    with tempfile.TemporaryDirectory(prefix="cascade-bench-") as tmp:
        procs, fleet = _start_simulators(1, slots, 1, 1, Path(tmp), name)
        try:
            entry = fleet[0]
            plan = plan_reads(profile, slots)
            responses = asyncio.run(_one_poll(entry["host"], entry["port"], entry.get("device_id", 1), plan))
        finally:
            stop_simulators(procs)
    args = {"cabinet_id": "C1", "site": "bench", "model": profile.model, "timestamp_ns": time.time_ns()}
    compiled = compile_plan(plan, slots)
    reading, errors = decode_poll(plan, responses, slot_count=slots, **args)
    if compiled(responses, **args) != (reading, errors):
        return "the compiled decoder disagrees with decode_poll"
    if reading_to_lines(reading) != _general_lines(reading):
        return "reading_to_lines disagrees with encode_line"
    over = _one_over_range(plan, responses, slots, args)
    if over == _DISAGREES:
        return over
    from collectors.modbus import codec

    # As at start-up: the scales' exhaustive division checks (remembered per process) not yet made.
    codec._divisors.clear()
    started = time.perf_counter()
    again = compile_plan(plan, slots)
    build_s = time.perf_counter() - started
    codec._divisors.clear()
    tracemalloc.start()  # a second build, traced (tracing slows it down)
    compile_plan(plan, slots)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (sum(len(r.fields) for r in plan),
            _best_us(lambda: decode_poll(plan, responses, slot_count=slots, **args), polls),
            _best_us(lambda: compiled(responses, **args), polls),
            _best_us(lambda: _general_lines(reading), polls),
            _best_us(lambda: reading_to_lines(reading), polls),
            {"lines": again.source.count("\n") + 1, "bytecode_kib": len(again.__code__.co_code) / 1024,
             "peak_mib": peak / 2**20, "ms": build_s * 1e3,
             "over_us": None if over is None else _best_us(lambda: compiled(over[0], **args), polls),
             "over_field": None if over is None else over[1]})


_DISAGREES = "the compiled decoder disagrees with decode_poll on a value past its range"


def _one_over_range(plan, responses: list, slots: int, args: dict) -> tuple[list, str] | str | None:
    """``responses`` with one 16-bit field set past its valid range (the first such field that a word makes
    over range) and its label, checked against ``decode_poll`` (the same reading, types included); None
    when no field of the plan can be set past its range that way."""
    from collectors.modbus.decode import compile_plan, decode_poll

    compiled = compile_plan(plan, slots)
    for r, request in enumerate(plan):
        if responses[r] is None or request.register_type in ("coil", "discrete"):
            continue
        for item in request.fields:
            if item.spec.valid is None or item.spec.words != 1:
                continue
            for word in (0x7FFF, 0x8001, 0xFFFE, 0x1000):
                edited = [list(w) if i == r else w for i, w in enumerate(responses)]
                edited[r][item.index] = word
                expected = decode_poll(plan, edited, slot_count=slots, **args)
                if any(item.label in s.over_range for s in (expected[0], *expected[0].slots)):
                    got = compiled(edited, **args)
                    if got != expected or repr(got) != repr(expected):  # repr: 1 == 1.0 == True would hide a type
                        return _DISAGREES
                    return edited, item.label
    return None


def main(argv: list[str] | None = None) -> int:
    from bench.collector import exit_on_sigterm

    parser = argparse.ArgumentParser(prog="python -m bench decode", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", nargs="+", default=["reference-cabinet", "volta-s8", "kestrel-k10"])
    parser.add_argument("--polls", type=int, default=2000, help="polls per round (5 rounds; max 100,000)")
    args = parser.parse_args(argv)
    polls = min(max(args.polls, 1), 100_000)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    exit_on_sigterm()
    print(f"one poll decoded and encoded in this process, CPU µs per poll (best of 5 x {polls})")
    print(f"  {'profile':20s} {'fields':>6s} {'decode_poll':>11s} {'compiled':>9s} {'ratio':>6s}"
          f" {'encode_line':>11s} {'compiled':>9s} {'ratio':>6s}")
    builds = []
    for name in args.profiles:
        row = _measure(name, polls)
        if isinstance(row, str):
            print(f"  {name}: {row}", file=sys.stderr)
            return 1
        fields, reference, fast, general, lines, build = row
        builds.append((name, fast, build))
        print(f"  {name:20s} {fields:6d} {reference:11.1f} {fast:9.1f} {reference / fast:5.2f}x"
              f" {general:11.1f} {lines:9.1f} {general / lines:5.2f}x")
    print("building the compiled decoder (once per plan), and a poll with one field past its range")
    print(f"  {'profile':20s} {'lines':>6s} {'bytecode':>9s} {'compiler peak':>13s} {'build':>7s}"
          f" {'poll':>7s}  poll with 1 field over range (the field)")
    for name, fast, build in builds:
        over = "     -" if build["over_us"] is None else f"{build['over_us']:6.0f} µs ({build['over_field']})"
        print(f"  {name:20s} {build['lines']:6d} {build['bytecode_kib']:5.0f} KiB {build['peak_mib']:9.1f} MiB"
              f" {build['ms']:4.0f} ms {fast:4.0f} µs {over}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
