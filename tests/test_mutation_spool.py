"""The disk spool (exporters/influx/spool.py) seen from its directory and its counters: segment files
and their rotation, the cursor file, recovery from a damaged cursor, and what is logged when lines
are dropped. Written to kill the mutants `make mutate` found alive."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import signal
import stat
from pathlib import Path

import pytest

from exporters.influx.spool import DiskSpool, SpoolError

HEADER = 16  # magic, payload length, line count, crc32: 4 bytes each


def _batch(tag: str, n: int) -> list[str]:
    return [f"m,b={tag} v={i}i {i}" for i in range(n)]


def _size(batch: list[str]) -> int:
    return HEADER + sum(4 + len(line.encode()) for line in batch)


def _segments(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.seg"))


@pytest.mark.parametrize("max_bytes", [0, 16])
def test_a_bound_that_cannot_hold_a_record_header_is_refused(tmp_path: Path, max_bytes: int) -> None:
    with pytest.raises(SpoolError) as info:
        DiskSpool(tmp_path, max_bytes)
    assert str(info.value) == f"spool max_bytes must be more than 16 bytes, got {max_bytes}: raise spool_max_bytes"


def test_the_smallest_bound_holds_an_empty_line(tmp_path: Path) -> None:
    with DiskSpool(tmp_path, 17, fsync=False) as spool:
        assert spool.append([""]) == 1  # 16 + 4 bytes: larger than the bound, dropped
        assert (spool.dropped_lines, len(spool)) == (1, 0)
    with DiskSpool(tmp_path, 20, fsync=False) as spool:
        assert spool.append([""]) == 0 and len(spool) == 1 and spool.depth_bytes == 20


def test_a_directory_that_cannot_be_created_is_refused_with_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SpoolError) as info:
        DiskSpool(blocker / "spool", 1 << 20)
    assert str(info.value).startswith(f"cannot create spool directory {blocker / 'spool'}: ")
    assert str(info.value).endswith("; point spool_dir at a writable directory")


def test_a_spool_directory_is_created_with_its_missing_parents(tmp_path: Path) -> None:
    directory = tmp_path / "var" / "cascade" / "spool"
    with DiskSpool(directory, 1 << 20, fsync=False) as spool:
        spool.append(_batch("a", 2))
    assert _segments(directory) == ["0000000001.seg"]
    with DiskSpool(directory, 1 << 20, fsync=False) as spool:
        assert spool.peek() == _batch("a", 2)


def test_a_fresh_spool_starts_empty_and_an_empty_batch_is_not_stored(tmp_path: Path) -> None:
    with DiskSpool(tmp_path, 1 << 20) as spool:
        assert (spool.spooled_lines, spool.replayed_lines, spool.dropped_lines, spool.torn_batches,
                spool.depth_lines, spool.depth_bytes, len(spool)) == (0, 0, 0, 0, 0, 0, 0)
        assert spool.append([]) == 0 and len(spool) == 0 and _segments(tmp_path) == []
        assert spool.claim() is None and spool.peek() is None


def test_segments_rotate_at_an_eighth_of_the_bound_and_are_numbered(tmp_path: Path) -> None:
    batch = _batch("a", 2)
    size = _size(batch)
    with DiskSpool(tmp_path, 8 * (2 * size), fsync=False) as spool:  # a segment holds two records
        for _ in range(5):
            spool.append(batch)
        assert _segments(tmp_path) == ["0000000001.seg", "0000000002.seg", "0000000003.seg"]
        assert [(tmp_path / name).stat().st_size for name in _segments(tmp_path)] == [2 * size, 2 * size, size]
        assert (spool.depth_lines, spool.depth_bytes) == (10, 5 * size)


def test_each_open_appends_to_a_new_segment_and_close_is_idempotent(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 1 << 20, fsync=False)
    spool.append(_batch("a", 1))
    spool.close()
    spool.close()
    spool.append(_batch("b", 1))  # after close: a new segment
    spool.close()
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as again:
        again.append(_batch("c", 1))
        assert _segments(tmp_path) == ["0000000001.seg", "0000000002.seg", "0000000003.seg"]
        assert again.peek() == _batch("a", 1)


def test_the_cursor_file_names_the_first_record_not_yet_committed(tmp_path: Path) -> None:
    a, b = _batch("a", 3), _batch("b", 1)
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
        spool.append(a)
        spool.append(b)
        assert not (tmp_path / "cursor").exists()
        spool.peek()
        assert spool.commit() == 3
        assert (tmp_path / "cursor").read_text() == f"1 {_size(a)}\n"
        spool.peek()
        assert spool.commit() == 1
        assert (tmp_path / "cursor").read_text() == f"1 {_size(a) + _size(b)}\n"
        assert not (tmp_path / "cursor.tmp").exists()


def test_consumed_segments_are_deleted_but_not_the_one_being_written(tmp_path: Path) -> None:
    batch = _batch("a", 2)
    with DiskSpool(tmp_path, 8 * _size(batch), fsync=False) as spool:  # one record per segment
        for _ in range(3):
            spool.append(batch)
        assert len(_segments(tmp_path)) == 3
        spool.peek()
        spool.commit()
        assert _segments(tmp_path) == ["0000000002.seg", "0000000003.seg"]
        spool.peek()
        spool.commit()
        spool.peek()
        spool.commit()
        assert _segments(tmp_path) == ["0000000003.seg"]  # the active segment stays
        assert (tmp_path / "cursor").read_text() == f"3 {_size(batch)}\n"


def test_segments_before_the_cursor_are_removed_at_open_and_other_files_ignored(tmp_path: Path) -> None:
    batch = _batch("a", 1)
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
        spool.append(batch)
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
        spool.append(_batch("b", 1))
        spool.peek()
        spool.commit()  # segment 1 consumed; the cursor points into segment 2
    (tmp_path / "notes.seg").write_text("not a segment")
    (tmp_path / "0000000001.seg").write_bytes(b"stale")  # left over: before the cursor
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
        assert spool.peek() == _batch("b", 1) and len(spool) == 1 and spool.torn_batches == 0
    assert "0000000001.seg" not in _segments(tmp_path) and (tmp_path / "notes.seg").exists()


def test_stray_seg_files_among_the_segments_hide_none_of_them(tmp_path: Path) -> None:
    """Files named *.seg that are no segment (an operator's copy, a note) are skipped wherever the
    directory listing puts them: before, between or after the real segments."""
    strays = [f"copy-{i}.seg" for i in range(20)]
    for name in strays[:10]:
        (tmp_path / name).write_text("not a segment")
    batches = [_batch(tag, 1) for tag in "abc"]
    for batch in batches:  # one segment per open
        with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
            spool.append(batch)
    for name in strays[10:]:
        (tmp_path / name).write_text("not a segment")
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
        assert (len(spool), spool.depth_lines, spool.torn_batches) == (3, 3, 0)
        spool.append(_batch("d", 1))  # after the newest segment, not over one it did not see
        for batch in [*batches, _batch("d", 1)]:
            assert spool.peek() == batch
            spool.commit()
    assert [n for n in _segments(tmp_path) if not n.startswith("copy-")] == ["0000000004.seg"]
    assert sorted(n for n in _segments(tmp_path) if n.startswith("copy-")) == sorted(strays)


@pytest.mark.parametrize("damaged", [7, 3 | 1 << 31], ids=["bit 2", "bit 31"])
def test_a_damaged_line_count_in_a_record_header_fails_its_checksum(tmp_path: Path, damaged: int) -> None:
    """The checksum covers the header's payload length and line count, not only the payload: a record
    whose line count was damaged (one bit flipped, the top one too) is torn, not read with a wrong count."""
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
        spool.append(_batch("a", 3))
    segment = tmp_path / "0000000001.seg"
    data = bytearray(segment.read_bytes())
    assert data[8:12] == (3).to_bytes(4, "little")
    data[8:12] = damaged.to_bytes(4, "little")
    segment.write_bytes(bytes(data))
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
        assert (spool.torn_batches, len(spool), spool.depth_lines) == (1, 0, 0)


@pytest.mark.parametrize("cursor", ["garbage\n", "1\n", ""])
def test_an_unreadable_cursor_replays_from_the_oldest_segment(tmp_path: Path, cursor: str, caplog) -> None:
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
        spool.append(_batch("a", 2))
        spool.append(_batch("b", 1))
        spool.peek()
        spool.commit()
    (tmp_path / "cursor").write_text(cursor)
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
        assert spool.peek() == _batch("a", 2)  # at least once: the committed batch comes again
        assert (spool.depth_lines, len(spool)) == (3, 2)
    assert (logging.ERROR, f"spool: unreadable cursor file {tmp_path / 'cursor'}; replaying from the oldest "
                           "segment") in [(r.levelno, r.getMessage()) for r in caplog.records]


def test_a_missing_cursor_starts_at_the_oldest_segment(tmp_path: Path) -> None:
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
        spool.append(_batch("a", 1))
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
        spool.append(_batch("b", 1))
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
        assert (spool.depth_lines, spool.peek()) == (2, _batch("a", 1))


def test_dropping_lines_is_logged_with_what_to_change(tmp_path: Path, caplog) -> None:
    batch = _batch("a", 5)
    with DiskSpool(tmp_path, 2 * _size(batch), fsync=False) as spool:
        spool.append(batch)
        spool.append(batch)
        assert spool.append(batch) == 5
        huge = _batch("h", 100)
        assert spool.append(huge) == 100
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert messages == [
        (logging.WARNING, f"spool full ({2 * _size(batch)} bytes): dropped the 5 oldest lines"),
        (logging.WARNING, f"spool: dropped a batch of 100 lines ({_size(huge)} bytes) larger than "
                          f"spool_max_bytes={2 * _size(batch)}; lower batch_size or raise spool_max_bytes"),
    ]


def test_a_torn_tail_is_logged_with_segment_and_offset(tmp_path: Path, caplog) -> None:
    batch = _batch("a", 2)
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
        spool.append(batch)
    segment = tmp_path / "0000000001.seg"
    segment.write_bytes(segment.read_bytes() + b"CSB1\x00")
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
        assert (spool.torn_batches, spool.depth_lines) == (1, 2)
    assert (logging.ERROR, f"spool: torn or corrupt batch in {segment} at byte {_size(batch)} (crash during "
                           "write?); skipping the rest of that segment") in [
        (r.levelno, r.getMessage()) for r in caplog.records]


def test_a_claimed_batch_dropped_for_the_bound_is_logged_and_counted_by_its_outcome(tmp_path: Path,
                                                                                      caplog) -> None:
    batch = _batch("a", 4)
    with DiskSpool(tmp_path, 2 * _size(batch), fsync=False) as spool:
        spool.append(batch)
        spool.append(batch)
        token, lines = spool.claim()
        assert spool.append(batch) == 0  # the claimed batch is removed, but not counted yet
        assert spool.dropped_lines == 0
        assert spool.release(token) == 4 and spool.dropped_lines == 4
        assert spool.release(token) == 0  # settled already
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        f"spool full ({2 * _size(batch)} bytes): removed the oldest batch (4 lines) while it is being written; "
        "it counts as dropped only if that write fails",
        "spool: the 4 lines removed for the bound while being written were not delivered; counted as dropped",
    ]


@contextlib.contextmanager
def _file_size_limit(limit: int):
    """Writes past ``limit`` bytes in any file fail with EFBIG, as on a full disk (a real OS limit)."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_a_write_that_fails_half_way_leaves_no_torn_record(tmp_path: Path) -> None:
    first, second = _batch("a", 3), _batch("b", 50)
    spool = DiskSpool(tmp_path, 1 << 20, fsync=False)
    spool.append(first)
    with _file_size_limit(_size(first) + 10), pytest.raises(OSError) as info:
        spool.append(second)
    assert info.value.errno == errno.EFBIG
    assert (tmp_path / "0000000001.seg").stat().st_size == _size(first)  # cut back to the whole record
    assert (spool.spooled_lines, spool.depth_lines, len(spool)) == (3, 3, 1)
    spool.append(_batch("c", 1))  # the next append opens a new segment
    spool.close()
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as again:
        assert again.torn_batches == 0 and again.peek() == first and len(again) == 2


def test_a_first_write_that_fails_leaves_no_empty_segment(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 1 << 20, fsync=True)
    with _file_size_limit(10), pytest.raises(OSError):
        spool.append(_batch("a", 5))
    assert _segments(tmp_path) == [] and len(spool) == 0
    spool.close()


def test_check_writable_raises_the_disk_error_and_leaves_no_probe(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 1 << 20)
    spool.check_writable()
    spool.check_writable(10_000)
    with _file_size_limit(5000), pytest.raises(OSError) as info:
        spool.check_writable(10_000)  # more than a page: the size asked for is written
    assert info.value.errno == errno.EFBIG
    with _file_size_limit(100), pytest.raises(OSError):
        spool.check_writable()  # at least a page (4096 bytes) even when nothing is asked
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    spool.close()


def test_an_unsynced_append_is_handed_out_once_for_fsync(tmp_path: Path) -> None:
    with DiskSpool(tmp_path, 1 << 20, fsync=True) as spool:
        assert spool.sync_handle() is None
        spool.append(_batch("a", 1), sync=False)
        handle = spool.sync_handle()
        assert handle is not None
        os.fsync(handle)
        os.close(handle)
        assert spool.sync_handle() is None  # until the next unsynced append
        spool.append(_batch("b", 1))  # synced in place
        assert spool.sync_handle() is None
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
        spool.append(_batch("c", 1), sync=False)
        assert spool.sync_handle() is None  # fsync off: nothing to hand out


def test_a_cursor_that_cannot_be_updated_is_logged_once_and_its_recovery_once(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="exporters.influx.spool")
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
        for tag in "abcd":
            spool.append(_batch(tag, 1))
        (tmp_path / "cursor.tmp").mkdir()  # the cursor cannot be rewritten
        spool.peek()
        assert spool.commit() == 1  # the batch is gone from the spool all the same
        assert len(caplog.records) == 1  # the first failure is logged at once
        spool.peek()
        assert spool.commit() == 1  # failing again: not logged again
        assert not (tmp_path / "cursor").exists() and (tmp_path / "cursor.tmp").is_dir()
        (tmp_path / "cursor.tmp").rmdir()
        spool.peek()
        spool.commit()
        spool.peek()
        spool.commit()
        assert (tmp_path / "cursor").read_text() == f"1 {4 * _size(_batch('a', 1))}\n"
    cursor = tmp_path / "cursor"
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert len(messages) == 2
    assert messages[0][0] == logging.ERROR and messages[0][1].startswith(f"spool: cannot update {cursor} (")
    assert messages[0][1].endswith("); a restart now would replay batches already written (duplicates are "
                                   "harmless in InfluxDB); retried at the next removal")
    assert messages[1] == (logging.INFO, f"spool: cursor file {cursor} updated again")


def test_one_append_that_drops_several_batches_returns_all_their_lines(tmp_path: Path) -> None:
    small, big = _batch("s", 2), _batch("b", 9)
    with DiskSpool(tmp_path, _size(big) + 1, fsync=False) as spool:
        spool.append(small)
        spool.append(small)
        assert spool.append(big) == 4  # both small batches make room
        assert (spool.dropped_lines, spool.depth_lines) == (4, 9)


def test_replayed_lines_add_up_across_commits_including_one_dropped_in_flight(tmp_path: Path) -> None:
    batch = _batch("a", 3)
    with DiskSpool(tmp_path, 2 * _size(batch), fsync=False) as spool:
        spool.append(batch)
        spool.peek()
        spool.commit()
        spool.append(batch)
        spool.append(batch)
        token, _ = spool.claim()
        spool.append(batch)  # the claimed batch is removed for the bound while "in flight"
        assert spool.commit(token) == 3  # it reached the server after all
        assert spool.replayed_lines == 6


def test_torn_tails_in_two_segments_count_twice(tmp_path: Path) -> None:
    for tag in "ab":
        with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
            spool.append(_batch(tag, 1))
    for segment in _segments(tmp_path):
        path = tmp_path / segment
        path.write_bytes(path.read_bytes() + b"CSB1")
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
        assert (spool.torn_batches, spool.depth_lines) == (2, 2)


def _count_fsyncs(monkeypatch) -> list[int]:
    """Record the descriptors os.fsync is called with (the fsync still happens)."""
    calls: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_by_default_every_append_and_every_commit_is_fsynced(tmp_path: Path, monkeypatch) -> None:
    """Without the fsync argument the spool is crash-safe: the segment after each append, and the new
    cursor file before it replaces the old one at each commit."""
    fsyncs = _count_fsyncs(monkeypatch)
    with DiskSpool(tmp_path, 1 << 20) as spool:
        spool.append(_batch("a", 1))
        assert len(fsyncs) == 1
        spool.peek()
        assert spool.commit() == 1
        assert len(fsyncs) == 2
    assert len(fsyncs) == 2  # nothing left unsynced to fsync at close


def test_a_spool_with_fsync_off_never_fsyncs(tmp_path: Path, monkeypatch) -> None:
    """fsync=False: no append, drop for the bound, commit, probe or close waits for the disk."""
    fsyncs = _count_fsyncs(monkeypatch)
    batch = _batch("a", 2)
    with DiskSpool(tmp_path, 2 * _size(batch), fsync=False) as spool:
        spool.append(batch)
        spool.append(batch)
        assert spool.append(batch) == 2
        spool.peek()
        assert spool.commit() == 2
        spool.check_writable()
        spool.append(batch, sync=False)
    assert fsyncs == []


def test_an_unsynced_append_that_drops_for_the_bound_fsyncs_nothing(tmp_path: Path, monkeypatch) -> None:
    """append(sync=False) never waits for the disk, not even for the cursor rewritten when it drops the
    oldest batch; the new segment is fsync'd when the spool is closed."""
    batch = _batch("a", 2)
    with DiskSpool(tmp_path, 2 * _size(batch)) as spool:  # one record per segment
        spool.append(batch)
        spool.append(batch)
        fsyncs = _count_fsyncs(monkeypatch)
        assert spool.append(batch, sync=False) == 2
        assert fsyncs == [] and (tmp_path / "cursor").read_text() == "2 0\n"
    assert len(fsyncs) == 1


def test_close_fsyncs_unsynced_appends_once(tmp_path: Path, monkeypatch) -> None:
    """close() fsyncs what append(sync=False) left; after that, synced appends leave nothing to hand out
    or to fsync again."""
    fsyncs = _count_fsyncs(monkeypatch)
    spool = DiskSpool(tmp_path, 1 << 20)
    spool.append(_batch("a", 1), sync=False)
    assert fsyncs == []
    spool.close()
    assert len(fsyncs) == 1
    spool.append(_batch("b", 1))  # a new segment, fsync'd in place
    assert len(fsyncs) == 2 and spool.sync_handle() is None
    spool.close()
    assert len(fsyncs) == 2


def test_a_failing_fsync_at_close_is_logged_and_the_segment_closed_all_the_same(tmp_path: Path, monkeypatch,
                                                                               caplog) -> None:
    spool = DiskSpool(tmp_path, 1 << 20)
    spool.append(_batch("a", 1), sync=False)

    def fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync)
    spool.close()
    monkeypatch.undo()
    segment = tmp_path / "0000000001.seg"
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, f"spool: fsync of {segment} failed ([Errno 5] Input/output error); its last batches "
                        "may not survive a crash")]
    spool.append(_batch("b", 1))  # closed: the next append opens a new segment
    spool.close()
    assert _segments(tmp_path) == ["0000000001.seg", "0000000002.seg"]
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as again:
        assert again.peek() == _batch("a", 1) and len(again) == 2


def test_a_new_claim_settles_a_claim_dropped_in_flight_as_a_release_would(tmp_path: Path) -> None:
    """Claiming again without commit/release first: if the bound dropped the earlier claimed batch
    meanwhile, it counts as dropped now, and the new token commits the new oldest batch."""
    a, b, c = _batch("a", 4), _batch("b", 4), _batch("c", 4)
    with DiskSpool(tmp_path, 2 * _size(a), fsync=False) as spool:
        spool.append(a)
        spool.append(b)
        first, _ = spool.claim()
        assert spool.append(c) == 0  # drops "a" while it is being written
        second, lines = spool.claim()
        assert lines == b and second != first
        assert spool.dropped_lines == 4
        assert spool.commit(second) == 4 and spool.peek() == c
        assert (spool.replayed_lines, spool.dropped_lines, spool.depth_lines) == (4, 4, 4)


def test_releasing_a_stale_token_leaves_the_current_claim_open(tmp_path: Path) -> None:
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
        spool.append(_batch("a", 2))
        spool.append(_batch("b", 3))
        old, _ = spool.claim()
        assert spool.commit(old) == 2
        current, lines = spool.claim()
        assert lines == _batch("b", 3)
        assert spool.release(old) == 0
        assert spool.commit(current) == 3 and len(spool) == 0


def test_tokens_number_the_batches_of_one_open_from_one(tmp_path: Path) -> None:
    """A token is the batch's sequence number within this open: 1, 2, 3, ... in FIFO order, the
    batches found on disk first."""
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
        spool.append(_batch("a", 1))
        spool.append(_batch("b", 1))
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
        spool.append(_batch("c", 1))
        tokens = []
        while (claimed := spool.claim()) is not None:
            tokens.append(claimed[0])
            spool.commit(claimed[0])
        assert tokens == [1, 2, 3]


def test_a_probe_left_by_a_crash_is_removed_by_the_next_check(tmp_path: Path) -> None:
    """check_writable() always probes with the same file name, so a probe left behind by a crash in the
    middle of a check is overwritten and removed by the next one instead of piling up."""
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
        (tmp_path / "probe.tmp").write_bytes(bytes(100))
        spool.check_writable()
        assert sorted(p.name for p in tmp_path.iterdir()) == []


@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_the_spool_files_are_created_rw_r_r(tmp_path: Path, monkeypatch) -> None:
    """Under the usual umask 022, segments, the cursor and the (short-lived) probe are plain data files:
    rw-r--r--, never executable. The probe's mode is read while it exists, at its fsync."""
    modes: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with _umask(0o022), DiskSpool(tmp_path, 1 << 20) as spool:
        spool.check_writable()
        assert modes == [0o644]
        spool.append(_batch("a", 1))
        spool.append(_batch("b", 1))
        spool.peek()
        spool.commit()
    for name in ["0000000001.seg", "cursor"]:
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644
    assert modes == [0o644] * 4


def test_a_failed_write_whose_truncate_fails_too_raises_the_write_error(tmp_path: Path, monkeypatch) -> None:
    """If even cutting back the partial record fails, append still raises the write's own error, and
    the torn tail is skipped (and counted) when the spool is opened."""
    first, second = _batch("a", 3), _batch("b", 50)
    spool = DiskSpool(tmp_path, 1 << 20, fsync=False)
    spool.append(first)

    def ftruncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "ftruncate", ftruncate)
    with _file_size_limit(_size(first) + 10), pytest.raises(OSError) as info:
        spool.append(second)
    monkeypatch.undo()
    assert info.value.errno == errno.EFBIG
    assert (tmp_path / "0000000001.seg").stat().st_size == _size(first) + 10  # the torn tail stays
    assert (spool.spooled_lines, len(spool)) == (3, 1)
    spool.close()
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as again:
        assert (again.torn_batches, len(again), again.peek()) == (1, 1, first)


def test_a_consumed_segment_that_cannot_be_deleted_is_removed_at_the_next_open(tmp_path: Path,
                                                                              monkeypatch) -> None:
    """A commit still succeeds when the consumed segment cannot be deleted (read-only file system);
    the segment, now before the cursor, goes at the next open."""
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
        spool.append(_batch("a", 1))
    spool = DiskSpool(tmp_path, 1 << 20, fsync=False)
    spool.append(_batch("b", 1))  # in segment 2
    real = os.unlink

    def unlink(path, *args, **kwargs) -> None:
        if str(path).endswith(".seg"):
            raise OSError(errno.EROFS, "Read-only file system")
        real(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    spool.peek()
    assert spool.commit() == 1
    assert _segments(tmp_path) == ["0000000001.seg", "0000000002.seg"]
    monkeypatch.undo()
    spool.close()
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as again:
        assert again.peek() == _batch("b", 1) and len(again) == 1
    assert _segments(tmp_path) == ["0000000002.seg"]


def test_a_cursor_that_cannot_be_updated_is_logged_with_the_error(tmp_path: Path, caplog) -> None:
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
        spool.append(_batch("a", 1))
        (tmp_path / "cursor.tmp").mkdir()
        with pytest.raises(OSError) as info:
            open(tmp_path / "cursor.tmp", "w")  # the error the spool meets
        spool.peek()
        assert spool.commit() == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"spool: cannot update {tmp_path / 'cursor'} ({info.value}); a restart now would replay batches "
        "already written (duplicates are harmless in InfluxDB); retried at the next removal"]


def test_an_unreadable_cursor_with_no_segments_opens_an_empty_spool(tmp_path: Path) -> None:
    (tmp_path / "cursor").write_text("garbage\n")
    with DiskSpool(tmp_path, 1 << 20, fsync=False) as spool:
        assert len(spool) == 0 and spool.peek() is None
        spool.append(_batch("a", 1))
        assert spool.peek() == _batch("a", 1)
    assert _segments(tmp_path) == ["0000000001.seg"]


@pytest.mark.parametrize("extra", ["one byte over a record", "seven bytes over two records"])
def test_a_segment_is_closed_once_it_holds_an_eighth_of_the_bound_rounded_down(tmp_path: Path,
                                                                               extra: str) -> None:
    """The segment size is max_bytes // 8 whole bytes: a bound of 8 * (record + 1) and one of
    8 * (2 records) + 7 both put exactly two records in each segment."""
    batch = _batch("a", 2)
    size = _size(batch)
    max_bytes = 8 * (size + 1) if extra == "one byte over a record" else 8 * (2 * size) + 7
    with DiskSpool(tmp_path, max_bytes, fsync=False) as spool:
        for _ in range(5):
            spool.append(batch)
        assert [(tmp_path / name).stat().st_size for name in _segments(tmp_path)] == [2 * size, 2 * size, size]
