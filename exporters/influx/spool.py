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

Delivery is at-least-once: a crash between a successful write and ``commit()`` replays that batch,
which InfluxDB stores idempotently (same series and timestamp overwrite). Not thread-safe: one owner.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DiskSpool", "SpoolError"]

log = logging.getLogger(__name__)

_MAGIC = b"CSB1"
_HEADER = struct.Struct("<4sIII")
_LEN = struct.Struct("<I")
_MAX_SEGMENT_BYTES = 64 * 1024 * 1024
_SUFFIX = ".seg"


class SpoolError(ValueError):
    """The spool cannot be configured or opened as asked."""


@dataclass(frozen=True)
class _Record:
    segment: int
    offset: int
    size: int
    lines: int


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
        self._active: int | None = None  # segment id this process appends to
        self._active_fd: int | None = None
        self._active_size = 0
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise SpoolError(f"cannot create spool directory {self.directory}: {err}; "
                             f"point spool_dir at a writable directory") from err
        self._recover()

    def __len__(self) -> int:
        return len(self._records)

    def __enter__(self) -> "DiskSpool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, batch: Sequence[str]) -> int:
        """Store ``batch`` at the tail; returns how many lines were dropped to stay in bounds."""
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
            dropped += self._pop(dropped=True)
        if dropped:
            log.warning("spool full (%d bytes): dropped the %d oldest lines", self.max_bytes, dropped)
        fd = self._writable_segment()
        offset = self._active_size
        try:
            _write_all(fd, record)
            if self._fsync:
                os.fsync(fd)
        except OSError:
            # The segment may now end in a partial record: never append after it.
            self.close()
            raise
        self._active_size += len(record)
        assert self._active is not None
        self._records.append(_Record(self._active, offset, len(record), len(batch)))
        self.depth_lines += len(batch)
        self.depth_bytes += len(record)
        self.spooled_lines += len(batch)
        return dropped

    def peek(self) -> list[str] | None:
        """The oldest batch, or None when empty. Stays until ``commit()``."""
        if not self._records:
            return None
        if self._head is None:
            self._head = self._read(self._records[0])
        return list(self._head)

    def commit(self) -> int:
        """Remove the oldest batch after it was written; returns its line count (0 when empty)."""
        if not self._records:
            return 0
        return self._pop(dropped=False)

    def close(self) -> None:
        if self._active_fd is not None:
            os.close(self._active_fd)
            self._active_fd = None
            self._active = None

    # -- internals -----------------------------------------------------------------------------

    def _pop(self, *, dropped: bool) -> int:
        record = self._records.popleft()
        self._head = None
        self.depth_lines -= record.lines
        self.depth_bytes -= record.size
        if dropped:
            self.dropped_lines += record.lines
        else:
            self.replayed_lines += record.lines
        if self._records:
            cursor = (self._records[0].segment, self._records[0].offset)
        else:
            cursor = (record.segment, record.offset + record.size)
        self._write_cursor(*cursor)
        self._delete_segments_before(cursor[0])
        return record.lines

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
            self._records.append(_Record(segment, offset, size, lines))
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

    def _write_cursor(self, segment: int, offset: int) -> None:
        tmp = self.directory / "cursor.tmp"
        with open(tmp, "w") as f:
            f.write(f"{segment} {offset}\n")
            if self._fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self.directory / "cursor")

    def _delete_segments_before(self, segment: int) -> None:
        for old in self._segments():
            if old >= segment:
                break
            if old != self._active:
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
