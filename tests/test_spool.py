"""DiskSpool: FIFO across reopen, exact counters, the byte bound, torn and corrupt records."""

from __future__ import annotations

import tempfile
from collections import deque
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporters.influx.spool import DiskSpool, SpoolError


def _batch(tag: str, n: int) -> list[str]:
    return [f"m,b={tag} v={i}i {i}" for i in range(n)]


def _drain(spool: DiskSpool) -> list[list[str]]:
    out = []
    while (batch := spool.peek()) is not None:
        out.append(batch)
        spool.commit()
    return out


def test_fifo_survives_reopen_and_commits_persist(tmp_path):
    with DiskSpool(tmp_path, 1 << 20) as spool:
        for tag, n in (("a", 3), ("b", 1), ("c", 5)):
            spool.append(_batch(tag, n))
        assert spool.peek() == _batch("a", 3)
        assert spool.commit() == 3
        assert (spool.spooled_lines, spool.replayed_lines, spool.depth_lines) == (9, 3, 6)
    with DiskSpool(tmp_path, 1 << 20) as spool:
        assert (spool.depth_lines, len(spool)) == (6, 2)
        spool.append(_batch("d", 2))
    with DiskSpool(tmp_path, 1 << 20) as spool:
        assert _drain(spool) == [_batch("b", 1), _batch("c", 5), _batch("d", 2)]
        assert (spool.replayed_lines, spool.depth_lines, spool.depth_bytes) == (8, 0, 0)
    with DiskSpool(tmp_path, 1 << 20) as spool:
        assert spool.peek() is None and spool.commit() == 0
    assert len(list(tmp_path.glob("*.seg"))) <= 1  # consumed segments are deleted


def test_any_text_round_trips(tmp_path):
    lines = ["plain", "", "two\nlines", "ünï ✓", "lone \ud800 surrogate", "x" * 70000]
    with DiskSpool(tmp_path, 1 << 20) as spool:
        spool.append(lines)
    with DiskSpool(tmp_path, 1 << 20) as spool:
        assert spool.peek() == lines


def test_bound_drops_oldest_batches_and_counts_lines_exactly(tmp_path):
    record = len(_batch("a", 10)[0]) * 10 + 10 * 4 + 16  # payload + length prefixes + header
    with DiskSpool(tmp_path, record * 3, fsync=False) as spool:
        dropped = [spool.append(_batch(tag, 10)) for tag in "abcde"]
        assert dropped == [0, 0, 0, 10, 10]
        assert (spool.spooled_lines, spool.dropped_lines, spool.depth_lines) == (50, 20, 30)
        assert spool.depth_bytes <= spool.max_bytes
        assert spool.append(_batch("huge", 1000)) == 1000  # larger than the whole bound: dropped itself
        assert spool.dropped_lines == 1020
    with DiskSpool(tmp_path, record * 3) as spool:
        assert _drain(spool) == [_batch(tag, 10) for tag in "cde"]


def _record_size(batch: list[str]) -> int:
    return 16 + sum(4 + len(line.encode()) for line in batch)


def test_commit_removes_exactly_the_claimed_batch_even_if_the_bound_dropped_it_in_flight(tmp_path):
    """Regression: a full spool dropping the batch being written made commit() remove the next one."""
    size = _record_size(_batch("a", 10))
    with DiskSpool(tmp_path, size * 3, fsync=False) as spool:
        for tag in "abc":
            spool.append(_batch(tag, 10))
        token, lines = spool.claim()
        assert lines == _batch("a", 10)
        assert spool.append(_batch("d", 10)) == 0  # "a" had to go, but it is in flight: not counted yet
        assert spool.dropped_lines == 0 and spool.depth_lines == 30
        assert spool.commit(token) == 10  # the write of "a" succeeded
        assert (spool.spooled_lines, spool.replayed_lines, spool.dropped_lines) == (40, 10, 0)
        assert spool.commit(token) == 0  # settled once only
        assert spool.peek() == _batch("b", 10)  # "b" was never sent: still there
        assert (spool.depth_lines, len(spool)) == (30, 3)
    with DiskSpool(tmp_path, size * 3) as spool:
        assert _drain(spool) == [_batch(tag, 10) for tag in "bcd"]


def test_failed_write_of_a_batch_dropped_in_flight_counts_it_dropped_once(tmp_path):
    size = _record_size(_batch("a", 10))
    with DiskSpool(tmp_path, size * 2, fsync=False) as spool:
        spool.append(_batch("a", 10))
        spool.append(_batch("b", 10))
        token, _ = spool.claim()
        assert spool.append(_batch("c", 10)) == 0
        assert spool.append(_batch("d", 10)) == 10  # "b" was not claimed: dropped and counted now
        assert spool.release(token) == 10  # the write of "a" failed: it is gone, so now it is dropped
        assert spool.release(token) == 0
        assert (spool.spooled_lines, spool.replayed_lines, spool.dropped_lines, spool.depth_lines) == (40, 0, 20, 20)
        assert _drain(spool) == [_batch("c", 10), _batch("d", 10)]


def test_release_keeps_the_claimed_batch_for_a_retry_and_stale_tokens_do_nothing(tmp_path):
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
        spool.append(_batch("a", 2))
        spool.append(_batch("b", 3))
        token, _ = spool.claim()
        assert spool.release(token) == 0 and spool.commit(token) == 0
        again, lines = spool.claim()
        assert again == token and lines == _batch("a", 2)
        assert spool.commit(again) == 2
        newer, lines = spool.claim()
        assert lines == _batch("b", 3) and spool.commit(token) == 0  # an old token never removes "b"
        assert spool.commit(newer) == 3 and spool.depth_lines == 0


def test_torn_tail_is_skipped_and_counted_not_fatal(tmp_path):
    with DiskSpool(tmp_path, 1 << 20) as spool:
        spool.append(_batch("a", 2))
        spool.append(_batch("b", 2))
    segment = next(tmp_path.glob("*.seg"))
    segment.write_bytes(segment.read_bytes()[:-7])  # crash in the middle of writing "b"
    with DiskSpool(tmp_path, 1 << 20) as spool:
        assert spool.torn_batches == 1 and spool.depth_lines == 2
        spool.append(_batch("c", 1))
    with DiskSpool(tmp_path, 1 << 20) as spool:
        assert _drain(spool) == [_batch("a", 2), _batch("c", 1)]


@pytest.mark.parametrize("damage", ["checksum", "magic", "header"])
def test_corrupt_record_is_detected(tmp_path, damage):
    with DiskSpool(tmp_path, 1 << 20) as spool:
        spool.append(_batch("a", 2))
        first = spool.depth_bytes
        spool.append(_batch("b", 2))
    segment = next(tmp_path.glob("*.seg"))
    data = bytearray(segment.read_bytes())
    if damage == "checksum":
        data[-1] ^= 0xFF
    elif damage == "magic":
        data[first] = ord("X")
    else:
        del data[first + 5:]
    segment.write_bytes(bytes(data))
    with DiskSpool(tmp_path, 1 << 20) as spool:
        assert spool.torn_batches == 1
        assert _drain(spool) == [_batch("a", 2)]


def test_rejects_useless_bound(tmp_path):
    with pytest.raises(SpoolError, match="spool_max_bytes"):
        DiskSpool(tmp_path, 10)


_ops = st.lists(st.one_of(st.tuples(st.just("append"), st.integers(1, 6)), st.just(("commit",)),
                          st.just(("reopen",)), st.just(("claim",)), st.tuples(st.just("settle"), st.booleans())),
                max_size=40)


@settings(max_examples=100, deadline=None)
@given(ops=_ops, max_bytes=st.integers(60, 600))
def test_matches_a_bounded_fifo_model(ops, max_bytes):
    """Any mix of append/commit/reopen and claims settled by a successful or failed write while
    appends go on: same content as an in-memory model, counters add up."""
    model: deque[list[str]] = deque()
    sizes: deque[int] = deque()
    spooled = dropped = replayed = 0
    claimed: list[str] | None = None  # the batch "being written"
    token = None
    evicted = False  # the bound removed it while in flight

    def end_claim() -> int:  # a new claim releases the old one: dropped if it was evicted
        nonlocal claimed, evicted
        lost = len(claimed) if claimed is not None and evicted else 0
        claimed, evicted = None, False
        return lost

    with tempfile.TemporaryDirectory() as tmp:
        spool = DiskSpool(Path(tmp), max_bytes, fsync=False)
        for n, op in enumerate(ops):
            if op[0] == "append":
                batch = _batch(str(n), op[1])
                size = _record_size(batch)
                if size > max_bytes:
                    expected_drop = len(batch)
                else:
                    expected_drop = 0
                    while sum(sizes) + size > max_bytes:
                        gone = model.popleft()
                        sizes.popleft()
                        if gone is claimed:
                            evicted = True
                        else:
                            expected_drop += len(gone)
                    model.append(batch)
                    sizes.append(size)
                    spooled += len(batch)
                assert spool.append(batch) == expected_drop
                dropped += expected_drop
            elif op[0] == "commit":
                dropped += end_claim()
                expected = model.popleft() if model else None
                sizes.popleft() if expected else None
                assert spool.peek() == expected
                assert spool.commit() == (len(expected) if expected else 0)
                replayed += len(expected) if expected else 0
            elif op[0] == "claim":
                dropped += end_claim()
                got = spool.claim()
                if model:
                    claimed = model[0]
                    assert got is not None and got[1] == claimed
                    token = got[0]
                else:
                    assert got is None
            elif op[0] == "settle":
                if claimed is None:
                    assert (spool.commit(token) if op[1] else spool.release(token)) == 0
                elif op[1]:  # the write succeeded
                    assert spool.commit(token) == len(claimed)
                    replayed += len(claimed)
                    if not evicted:
                        assert model.popleft() is claimed
                        sizes.popleft()
                    claimed, evicted = None, False
                else:
                    lost = end_claim()
                    assert spool.release(token) == lost
                    dropped += lost
            else:
                spool.close()
                spool = DiskSpool(Path(tmp), max_bytes, fsync=False)
                spooled = dropped = replayed = 0  # counters are per open; depth is on disk
                claimed, token, evicted = None, None, False
            assert spool.depth_lines == sum(map(len, model)) and spool.depth_bytes == sum(sizes) <= max_bytes
            assert (spool.spooled_lines, spool.dropped_lines, spool.replayed_lines) == (spooled, dropped, replayed)
        assert _drain(spool) == list(model)
        spool.close()
