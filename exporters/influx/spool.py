"""A bounded, crash-safe FIFO of line batches on disk, for data InfluxDB could not take yet.

Layout in ``directory``: append-only segment files ``<id>.seg`` holding records, plus a ``cursor``
file naming the first record not yet committed (segment id and byte offset). A record is::

    magic "CSB1" | payload length u32 | line count u32 | crc32 u32 | payload
    payload = for each line: byte length u32 | UTF-8 bytes

A record torn by a crash (short, bad magic, bad checksum) is skipped with ``torn_batches`` counted;
its line count is unknown, so it cannot be added to the line counters. Each process appends to a
fresh segment, so nothing is ever written after a torn tail.

Bound: ``depth_bytes`` (live records, headers included) never exceeds ``max_bytes``. To make room,
the OLDEST batches are dropped and their lines counted in ``dropped_lines``: during a long outage
the most recent data is the most useful for safety analysis, and it bounds disk use predictably.
A single batch larger than ``max_bytes`` is dropped itself. On-disk usage can exceed ``max_bytes``
by up to one segment (the consumed head of the oldest segment is reclaimed when it is deleted).

Writing a batch: ``claim()`` returns the oldest batch with a token; after the write, ``commit(token)``
removes exactly that batch (never a newer one), ``release(token)`` leaves it for a retry. ``peek()``
is ``claim()`` without the token; ``commit()``/``release()`` without one settle the last claim.
If ``append`` must drop the claimed batch for the bound while its write is in flight, its lines are
not counted yet: ``commit`` then counts them in ``replayed_lines`` (they reached the server), and
``release`` counts them in ``dropped_lines`` (they are gone). So once no claim is open, and per open::

    spooled_lines + lines found on disk at open == replayed_lines + dropped lines of spooled batches
                                                   + depth_lines

(``dropped_lines`` also counts batches larger than the bound, which were never spooled; torn records
are counted in ``torn_batches`` only.)

Delivery is at-least-once: a crash between a successful write and ``commit()`` replays that batch,
which InfluxDB stores idempotently (same series and timestamp overwrite). Not thread-safe: one owner.

A full or read-only disk: ``append`` raises the ``OSError`` and leaves nothing behind (a partial
record is truncated away, a segment it created is removed), so the caller can keep the batch and
try again later. Removing batches (``commit``, the bound) only needs the cursor file rewritten; if
that fails too, the removal still holds in memory, the failure is logged once and the cursor is
rewritten at the next removal. A restart before that replays batches already written, which is
the at-least-once case above. ``check_writable()`` tells whether the directory takes data again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.errors import CascadeError

__all__ = ["DiskSpool", "SpoolError"]

log = logging.getLogger(__name__)

_MAGIC = b"CSB1"
_HEADER = struct.Struct("<4sIII")
_LEN = struct.Struct("<I")
_MAX_SEGMENT_BYTES = 64 * 1024 * 1024
_SUFFIX = ".seg"
_PROBE_BYTES = 4096  # one page: what the smallest record needs on tmpfs and most file systems


class SpoolError(CascadeError):
    """The spool cannot be configured or opened as asked."""


@dataclass(frozen=True)
class _Record:
    segment: int
    offset: int
    size: int
    lines: int
    seq: int  # token: unique per record within this open


class DiskSpool:
    """FIFO of line batches in ``directory``, at most ``max_bytes`` of live records."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int, *, fsync: bool = True) -> None:
        if max_bytes <= _HEADER.size:
            raise SpoolError(f"spool max_bytes must be more than {_HEADER.size} bytes, got {max_bytes}: "
                             f"raise spool_max_bytes")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._fsync = fsync
        self._segment_bytes = max(1, min(_MAX_SEGMENT_BYTES, max_bytes // 8))
        self.spooled_lines = 0
        self.replayed_lines = 0
        self.dropped_lines = 0
        self.torn_batches = 0
        self.depth_lines = 0
        self.depth_bytes = 0
        self._records: deque[_Record] = deque()
        self._head: list[str] | None = None
        self._next_seq = 0
        self._claimed: int | None = None  # token of the batch being written, if any
        self._claimed_evicted: _Record | None = None  # that batch, if append dropped it meanwhile
        self._active: int | None = None  # segment id this process appends to
        self._active_fd: int | None = None
        self._active_size = 0
        self._cursor_failed = False  # the last cursor rewrite failed (logged once until it works again)
        self._unsynced = False  # the active segment has appends not fsync'd yet (append(sync=False))
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise SpoolError(f"cannot create spool directory {self.directory}: {err}; "
                             f"point spool_dir at a writable directory") from err
        self._recover()

    def __len__(self) -> int:
        return len(self._records)

    def __enter__(self) -> DiskSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, batch: Sequence[str], *, sync: bool = True) -> int:
        """Store ``batch`` at the tail; returns how many lines were dropped to stay in bounds.

        ``sync=False`` leaves the fsync to whoever calls :meth:`sync_handle` (off the event loop), so
        an async caller never waits for the disk; the segment is fsync'd at the latest when closed."""
        if not batch:
            return 0
        record = _encode_record(batch)
        if len(record) > self.max_bytes:
            self.dropped_lines += len(batch)
            log.warning("spool: dropped a batch of %d lines (%d bytes) larger than spool_max_bytes=%d; "
                        "lower batch_size or raise spool_max_bytes", len(batch), len(record), self.max_bytes)
            return len(batch)
        dropped = 0
        while self.depth_bytes + len(record) > self.max_bytes:
            dropped += self._pop(dropped=True, sync=sync)
        if dropped:
            log.warning("spool full (%d bytes): dropped the %d oldest lines", self.max_bytes, dropped)
        fd = self._writable_segment()
        offset = self._active_size
        try:
            _write_all(fd, record)
            if self._fsync and sync:
                os.fsync(fd)
            elif self._fsync:
                self._unsynced = True
        except OSError:
            self._abandon_segment(offset)
            raise
        self._active_size += len(record)
        assert self._active is not None
        self._records.append(self._new_record(self._active, offset, len(record), len(batch)))
        self.depth_lines += len(batch)
        self.depth_bytes += len(record)
        self.spooled_lines += len(batch)
        return dropped

    def claim(self) -> tuple[int, list[str]] | None:
        """``(token, lines)`` of the oldest batch, to write it; None when empty. The batch stays until
        ``commit(token)``. A new claim settles an earlier one as ``release()`` would."""
        if self._claimed is not None:
            self.release()
        if not self._records:
            return None
        head = self._records[0]
        if self._head is None:
            self._head = self._read(head)
        self._claimed = head.seq
        return head.seq, list(self._head)

    def peek(self) -> list[str] | None:
        """The oldest batch, or None when empty (``claim()`` without the token)."""
        claimed = self.claim()
        return None if claimed is None else claimed[1]

    def commit(self, token: int | None = None) -> int:
        """The claimed batch (``token``, default the last claim) was written: remove exactly that batch
        and count its lines replayed, also when ``append`` already dropped it for the bound. Returns
        its line count; 0 when nothing is claimed or the token is stale."""
        record = self._settle(token)
        if record is None:
            return 0
        if self._records and self._records[0].seq == record.seq:
            self._pop(dropped=False)
        else:  # removed for the bound while in flight, not counted then: it did reach the server
            self.replayed_lines += record.lines
        return record.lines

    def release(self, token: int | None = None) -> int:
        """The write of the claimed batch did not complete. It stays the oldest batch for a retry,
        unless ``append`` dropped it for the bound meanwhile: then its lines are counted dropped now.
        Returns the number of lines dropped (0 or the batch's line count)."""
        record = self._settle(token)
        if record is None or (self._records and self._records[0].seq == record.seq):
            return 0
        self.dropped_lines += record.lines
        log.warning("spool: the %d lines removed for the bound while being written were not delivered; "
                    "counted as dropped", record.lines)
        return record.lines

    def check_writable(self, size: int = 0) -> None:
        """Raise the ``OSError`` (ENOSPC, EROFS, EACCES, ...) if ``size`` bytes (at least a page) cannot
        be written to the directory now; the probe file is removed either way."""
        path = self.directory / "probe.tmp"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _write_all(fd, bytes(max(size, _PROBE_BYTES)))
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        finally:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

    def sync_handle(self) -> int | None:
        """A duplicate of the active segment's descriptor if it has appends not fsync'd yet, else None.
        The caller fsyncs and closes it, e.g. in a thread (the duplicate stays valid even if the spool
        moves on to a new segment meanwhile)."""
        if not self._unsynced or self._active_fd is None:
            return None
        self._unsynced = False
        return os.dup(self._active_fd)

    def close(self) -> None:
        if self._active_fd is not None:
            if self._unsynced:
                self._unsynced = False
                try:
                    os.fsync(self._active_fd)
                except OSError as err:  # closing must go on; the batches are still readable from the cache
                    log.error("spool: fsync of %s failed (%s); its last batches may not survive a crash",
                              self._segment_path(self._active or 0), err)
            os.close(self._active_fd)
            self._active_fd = None
            self._active = None

    # -- internals -----------------------------------------------------------------------------

    def _new_record(self, segment: int, offset: int, size: int, lines: int) -> _Record:
        self._next_seq += 1
        return _Record(segment, offset, size, lines, self._next_seq)

    def _settle(self, token: int | None) -> _Record | None:
        """End the claim ``token`` (default: the current one); the claimed record, or None if stale."""
        if token is None:
            token = self._claimed
        if token is None or token != self._claimed:
            return None
        evicted = self._claimed_evicted
        self._claimed = self._claimed_evicted = None
        if evicted is not None:
            return evicted
        if self._records and self._records[0].seq == token:
            return self._records[0]
        return None

    def _pop(self, *, dropped: bool, sync: bool = True) -> int:
        """Remove the oldest record; returns the lines counted (0 for a claimed one dropped in flight)."""
        record = self._records.popleft()
        self._head = None
        self.depth_lines -= record.lines
        self.depth_bytes -= record.size
        counted = record.lines
        if dropped and record.seq == self._claimed:
            self._claimed_evicted = record  # counted when the write's outcome is known
            counted = 0
            log.warning("spool full (%d bytes): removed the oldest batch (%d lines) while it is being written; "
                        "it counts as dropped only if that write fails", self.max_bytes, record.lines)
        elif dropped:
            self.dropped_lines += record.lines
        else:
            self.replayed_lines += record.lines
        if self._records:
            cursor = (self._records[0].segment, self._records[0].offset)
        else:
            cursor = (record.segment, record.offset + record.size)
        self._write_cursor(*cursor, sync=sync)
        self._delete_segments_before(cursor[0])
        return counted

    def _abandon_segment(self, offset: int) -> None:
        """A write to the active segment failed: cut it back to its last whole record (removing it if
        that leaves it empty) and close it, so a full disk neither keeps a torn tail nor fills up with
        empty segments. If even the truncate fails, the torn tail is skipped when the spool is opened."""
        assert self._active_fd is not None and self._active is not None
        path = self._segment_path(self._active)
        with contextlib.suppress(OSError):
            os.ftruncate(self._active_fd, offset)
            if offset == 0:
                path.unlink()
        self.close()

    def _writable_segment(self) -> int:
        if self._active_fd is not None and self._active_size >= self._segment_bytes:
            self.close()
        if self._active_fd is None:
            existing = self._segments()
            self._active = (existing[-1] + 1) if existing else 1
            path = self._segment_path(self._active)
            self._active_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            self._active_size = 0
        return self._active_fd

    def _read(self, record: _Record) -> list[str]:
        with open(self._segment_path(record.segment), "rb") as f:
            f.seek(record.offset)
            data = f.read(record.size)
        return _decode_payload(data[_HEADER.size:])

    def _recover(self) -> None:
        segments = self._segments()
        cursor_segment, cursor_offset = self._read_cursor(segments)
        for segment in segments:
            if segment < cursor_segment:
                with contextlib.suppress(OSError):  # read-only at start: the sink still starts
                    self._segment_path(segment).unlink(missing_ok=True)
                continue
            start = cursor_offset if segment == cursor_segment else 0
            self._scan(segment, start)

    def _scan(self, segment: int, offset: int) -> None:
        data = self._segment_path(segment).read_bytes()
        while offset < len(data):
            size = _valid_record_size(data, offset)
            if size is None:
                self.torn_batches += 1
                log.error("spool: torn or corrupt batch in %s at byte %d (crash during write?); skipping the "
                          "rest of that segment", self._segment_path(segment), offset)
                return
            lines = _HEADER.unpack_from(data, offset)[2]
            self._records.append(self._new_record(segment, offset, size, lines))
            self.depth_lines += lines
            self.depth_bytes += size
            offset += size

    def _segments(self) -> list[int]:
        ids = []
        for path in self.directory.glob(f"*{_SUFFIX}"):
            try:
                ids.append(int(path.stem))
            except ValueError:
                continue
        return sorted(ids)

    def _segment_path(self, segment: int) -> Path:
        return self.directory / f"{segment:010d}{_SUFFIX}"

    def _read_cursor(self, segments: list[int]) -> tuple[int, int]:
        path = self.directory / "cursor"
        try:
            segment, offset = (int(part) for part in path.read_text().split())
            return segment, offset
        except FileNotFoundError:
            return (segments[0] if segments else 0), 0
        except (OSError, ValueError):
            # Replaying from the oldest segment may resend committed batches; InfluxDB overwrites
            # identical points, so that is safe, unlike skipping.
            log.error("spool: unreadable cursor file %s; replaying from the oldest segment", path)
            return (segments[0] if segments else 0), 0

    def _write_cursor(self, segment: int, offset: int, *, sync: bool = True) -> None:
        tmp = self.directory / "cursor.tmp"
        try:
            with open(tmp, "w") as f:
                f.write(f"{segment} {offset}\n")
                if self._fsync and sync:  # unsynced, a crash can only make it older: replay, never loss
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, self.directory / "cursor")
        except OSError as err:
            # Full or read-only disk: the batch is gone from the spool in memory either way; a stale
            # cursor only makes a restart replay batches already written (at-least-once).
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if not self._cursor_failed:
                log.error("spool: cannot update %s (%s); a restart now would replay batches already written "
                          "(duplicates are harmless in InfluxDB); retried at the next removal",
                          self.directory / "cursor", err)
            self._cursor_failed = True
            return
        if self._cursor_failed:
            log.info("spool: cursor file %s updated again", self.directory / "cursor")
            self._cursor_failed = False

    def _delete_segments_before(self, segment: int) -> None:
        for old in self._segments():
            if old >= segment:
                break
            if old != self._active:
                with contextlib.suppress(OSError):  # read-only: removed at the next open
                    self._segment_path(old).unlink(missing_ok=True)


def _encode_record(batch: Sequence[str]) -> bytes:
    parts = []
    for line in batch:
        # surrogatepass: a broken line must still be spooled (the server will reject it, counted)
        data = line.encode("utf-8", "surrogatepass")
        parts.append(_LEN.pack(len(data)))
        parts.append(data)
    payload = b"".join(parts)
    return _HEADER.pack(_MAGIC, len(payload), len(batch), _checksum(len(payload), len(batch), payload)) + payload


def _checksum(length: int, lines: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<II", length, lines)))


def _valid_record_size(data: bytes, offset: int) -> int | None:
    if offset + _HEADER.size > len(data):
        return None
    magic, length, lines, crc = _HEADER.unpack_from(data, offset)
    end = offset + _HEADER.size + length
    if magic != _MAGIC or end > len(data):
        return None
    if _checksum(length, lines, data[offset + _HEADER.size:end]) != crc:
        return None
    return _HEADER.size + length


def _decode_payload(payload: bytes) -> list[str]:
    lines, pos = [], 0
    while pos < len(payload):
        (length,) = _LEN.unpack_from(payload, pos)
        pos += _LEN.size
        lines.append(payload[pos:pos + length].decode("utf-8", "surrogatepass"))
        pos += length
    return lines


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
