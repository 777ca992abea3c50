"""The collector bench's two comparison clients against a real simulated cabinet: the plain pymodbus client
(the baseline) and the floor (the same requests, nothing decoded) make the planned requests and count
what they read."""

from __future__ import annotations

import argparse
import asyncio
import logging

import yaml

from bench.floorclient import FloorCabinet
from bench.plainclient import PlainCabinet
from collectors.modbus.planner import plan_reads
from collectors.modbus.profile import find_profile
from simulators import cli
from tests.fixtures.ports import free_port_block


async def test_plain_and_floor_clients_make_the_planned_requests(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="cascade.simulate")
    port = free_port_block(1)
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--cabinets", "1", "--port", str(port), "--control-port", "0",
                              "--fleet-file", str(tmp_path / "fleet.yaml"), "--profile", "reference-cabinet"])
    server = asyncio.create_task(cli.run(args))
    try:
        for _ in range(200):
            if (tmp_path / "fleet.yaml").exists() and any("simulating" in r.message for r in caplog.records):
                break
            await asyncio.sleep(0.05)
        (entry,) = yaml.safe_load((tmp_path / "fleet.yaml").read_text())["cabinets"]
        plan = plan_reads(find_profile("reference-cabinet"), entry["slots"])
        for kind in (PlainCabinet, FloorCabinet):
            client = kind(entry["id"], entry["host"], entry["port"], entry["device_id"], plan, entry["slots"], 5.0)
            try:
                polls = [await asyncio.wait_for(client.fetch(), 10) for _ in range(2)]  # the connection is kept
            finally:
                await client.close()
            assert [(p.slots, p.requests) for p in polls] == [(12, len(plan))] * 2, kind
            # the plain client writes a cabinet line and a line per slot; the floor writes nothing
            assert [len(p.lines) for p in polls] == ([13, 13] if kind is PlainCabinet else [0, 0])
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


def test_decode_bench_checks_both_pairs_agree_and_prints_the_table(capsys) -> None:
    """``bench decode``: one real poll of each named profile's simulator, then compiled vs reference
    decoding and compiled vs general line encoding, checked equal before they are timed."""
    from bench.decode import main

    assert main(["--profiles", "volta-s8", "kestrel-k10", "--polls", "3"]) == 0
    out = capsys.readouterr().out
    assert "decode_poll" in out and "encode_line" in out
    assert out.count("x\n") == 2 and "volta-s8" in out and "kestrel-k10" in out
    # what building each plan's decoder costs, and a poll with a field past its range (same reading checked)
    assert "compiler peak" in out and out.count(" MiB ") == 2 and out.count("(chemistry)") == 2


def test_a_simulator_whose_port_is_taken_stops_the_bench_with_its_reason(tmp_path, capsys) -> None:
    """The simulator writes its fleet file once its ports listen: a port another process holds stops it
    without one, and the bench says why instead of measuring a fleet half of which refuses connections
    (it wrote the file first, and the bench went on)."""
    import socket

    from bench import collector

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    real = collector.free_port_block
    collector.free_port_block = lambda _count: port  # the block the simulator is told to use is taken
    try:
        assert collector.main(["--cabinets", "2", "--per-port", "2", "--workers", "1", "--duration", "5",
                               "--no-baseline"]) == 1
    finally:
        collector.free_port_block = real
        taken.close()
    err = capsys.readouterr().err
    assert "bench collector: simulator 0 did not start" in err and str(port) in err, err
