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
                          st.just(("reopen",))), max_size=40)


@settings(max_examples=60, deadline=None)
@given(ops=_ops, max_bytes=st.integers(60, 600))
def test_matches_a_bounded_fifo_model(ops, max_bytes):
    """Any mix of append/commit/reopen: same content as an in-memory model, counters add up."""
    model: deque[list[str]] = deque()
    sizes: deque[int] = deque()
    spooled = dropped = replayed = 0
    with tempfile.TemporaryDirectory() as tmp:
        spool = DiskSpool(Path(tmp), max_bytes, fsync=False)
        for n, op in enumerate(ops):
            if op[0] == "append":
                batch = _batch(str(n), op[1])
                size = 16 + sum(4 + len(line.encode()) for line in batch)
                if size > max_bytes:
                    expected_drop = len(batch)
                else:
                    expected_drop = 0
                    while sum(sizes) + size > max_bytes:
                        expected_drop += len(model.popleft())
                        sizes.popleft()
                    model.append(batch)
                    sizes.append(size)
                    spooled += len(batch)
                assert spool.append(batch) == expected_drop
                dropped += expected_drop
            elif op[0] == "commit":
                expected = model.popleft() if model else None
                sizes.popleft() if expected else None
                assert spool.peek() == expected
                assert spool.commit() == (len(expected) if expected else 0)
                replayed += len(expected) if expected else 0
            else:
                spool.close()
                spool = DiskSpool(Path(tmp), max_bytes, fsync=False)
                spooled = dropped = replayed = 0  # counters are per open; depth is on disk
            assert spool.depth_lines == sum(map(len, model)) and spool.depth_bytes == sum(sizes) <= max_bytes
            assert (spool.spooled_lines, spool.dropped_lines, spool.replayed_lines) == (spooled, dropped, replayed)
        assert _drain(spool) == list(model)
        spool.close()
