"""Uplink: publish the gateway's reports over MQTT, store and forward through outages.

Every report goes through a bounded disk buffer (:class:`DiskBuffer`) and the sender
(:class:`Uplink`) publishes the oldest one (QoS 1), waits for the broker's PUBACK, then removes it.
While the cellular link is down the buffer fills; when it is back the buffer drains in order. One
path for every report, so a report is never "in memory only".

* **Exact counters.** ``submitted`` (since start), ``sent`` (PUBACK received), ``dropped`` by reason
  (``buffer_full``: the oldest buffered reports are dropped to make room for the newest, because the
  current state of a pack matters more than its history; ``refused``: the broker answered with a
  failure reason code, e.g. "not authorised", and will refuse it again; ``too_large``), and
  ``buffered`` (now). ``buffered_at_start + submitted == sent + sum(dropped) + buffered`` always.
* **Sequence numbers survive restarts**: the buffer hands out ``seq`` and remembers the last one.
* **At least once.** A report whose PUBACK was lost (the link dropped mid-publish) is published again
  after reconnecting; the ingest drops the second copy by ``seq`` (docs/vehicles.md, ``duplicate``).

The buffer is append-only segment files (``seg-<first seq>.log``: records of ``u32 length, u64 seq,
payload``) and a ``consumed`` file (the last seq sent or dropped). A record torn by a power cut is cut
off at start-up. Disk use is at most ``max_bytes`` plus one segment.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import ssl
import struct
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from collectors.runner import backoff_delay
from core.errors import CascadeError

__all__ = ["DiskBuffer", "Uplink", "UplinkSettings"]

log = logging.getLogger("cascade.ble.uplink")

_HEADER = struct.Struct(">IQ")


class DiskBuffer:
    """Bounded, persistent FIFO of ``(seq, payload)``.

        >>> import tempfile
        >>> buf = DiskBuffer(tempfile.mkdtemp(), max_bytes=1 << 20)
        >>> seq = buf.next_seq(); buf.append(seq, b"hello")
        []
        >>> buf.peek(), len(buf)
        ((0, b'hello'), 1)
        >>> buf.consume(0), len(buf), buf.next_seq()
        (True, 0, 1)
    """

    def __init__(self, directory: str | Path, *, max_bytes: int, segment_bytes: int | None = None) -> None:
        if max_bytes < 4096:
            raise CascadeError(f"buffer size {max_bytes} bytes is too small", key="--buffer-bytes",
                               fix="allow at least 4096 bytes (a day of reports is a few MB)")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(4096, min(1 << 20, max_bytes // 8))
        self._index: deque[tuple[int, Path, int, int]] = deque()  # seq, segment, offset of payload, length
        self._bytes = 0
        self._consumed = self._read_consumed()
        self._last_seq = self._consumed
        self._active: Path | None = None
        self._active_size = 0
        self._load()

    # -- state ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._index)

    @property
    def size_bytes(self) -> int:
        """Bytes of the buffered records (headers included)."""
        return self._bytes

    def next_seq(self) -> int:
        """The sequence number of the next report (one more than the last ever appended)."""
        return self._last_seq + 1

    def _read_consumed(self) -> int:
        try:
            return int((self.dir / "consumed").read_text().strip())
        except (OSError, ValueError):
            return -1

    def _load(self) -> None:
        for path in sorted(self.dir.glob("seg-*.log")):
            data = path.read_bytes()
            at = 0
            while at + _HEADER.size <= len(data):
                length, seq = _HEADER.unpack_from(data, at)
                if at + _HEADER.size + length > len(data):
                    break
                if seq > self._consumed:
                    self._index.append((seq, path, at + _HEADER.size, length))
                    self._bytes += _HEADER.size + length
                self._last_seq = max(self._last_seq, seq)
                at += _HEADER.size + length
            if at < len(data):
                log.warning("%s: cut off a torn record at byte %d (power lost while writing)", path, at)
                with open(path, "r+b") as f:
                    f.truncate(at)
            self._active, self._active_size = path, at
        self._collect()

    # -- operations ----------------------------------------------------------------------------
    def append(self, seq: int, payload: bytes) -> list[int]:
        """Store one record; returns the seqs dropped (oldest first) to keep within ``max_bytes``."""
        size = _HEADER.size + len(payload)
        if size > self.max_bytes // 2:
            raise CascadeError(f"a report of {len(payload)} bytes does not fit the buffer", key="--buffer-bytes",
                               fix="raise --buffer-bytes or publish fewer packs per report")
        dropped: list[int] = []
        while self._index and self._bytes + size > self.max_bytes:
            old_seq, _path, _at, length = self._index.popleft()
            self._bytes -= _HEADER.size + length
            dropped.append(old_seq)
        if dropped:
            self._write_consumed(max(self._consumed, dropped[-1]))
        if self._active is None or self._active_size + size > self.segment_bytes:
            self._active, self._active_size = self.dir / f"seg-{seq:020d}.log", 0
        with open(self._active, "ab") as f:
            f.write(_HEADER.pack(len(payload), seq) + payload)
        self._index.append((seq, self._active, self._active_size + _HEADER.size, len(payload)))
        self._active_size += size
        self._bytes += size
        self._last_seq = max(self._last_seq, seq)
        self._collect()
        return dropped

    def peek(self) -> tuple[int, bytes] | None:
        """The oldest buffered record, or ``None``."""
        if not self._index:
            return None
        seq, path, at, length = self._index[0]
        with open(path, "rb") as f:
            f.seek(at)
            return seq, f.read(length)

    def consume(self, seq: int) -> bool:
        """Remove record ``seq`` if it is still the oldest (sent, or refused for good); False when it
        was dropped meanwhile to make room."""
        if not self._index or self._index[0][0] != seq:
            return False
        _seq, _path, _at, length = self._index.popleft()
        self._bytes -= _HEADER.size + length
        self._write_consumed(seq)
        self._collect()
        return True

    def _write_consumed(self, seq: int) -> None:
        self._consumed = seq
        tmp = self.dir / "consumed.tmp"
        tmp.write_text(f"{seq}\n")
        os.replace(tmp, self.dir / "consumed")

    def _collect(self) -> None:
        """Delete segments whose records are all consumed."""
        live = {path for _seq, path, _at, _len in self._index}
        for path in self.dir.glob("seg-*.log"):
            if path not in live and path != self._active:
                path.unlink(missing_ok=True)
        if not self._index and self._active is not None and self._active_size >= self.segment_bytes:
            self._active.unlink(missing_ok=True)
            self._active, self._active_size = None, 0


@dataclass(frozen=True, slots=True)
class UplinkSettings:
    """Where and as whom the gateway publishes (MQTT 5; TLS when ``tls_ca`` is set)."""

    host: str
    port: int
    username: str
    password: str
    topic: str
    tls_ca: str | None = None
    client_id: str | None = None
    keepalive_s: int = 30
    publish_timeout_s: float = 10.0
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 30.0


class Uplink:
    """Publishes what :meth:`submit` puts in the buffer, oldest first, until cancelled.

        uplink = Uplink(settings, DiskBuffer("var/ble-buffer", max_bytes=64 << 20))
        task = asyncio.create_task(uplink.run())
        uplink.submit(lambda seq: encode(PackReport(..., seq=seq, ...)))
    """

    def __init__(self, settings: UplinkSettings, buffer: DiskBuffer, *, seed: int | None = None) -> None:
        self.settings = settings
        self.buffer = buffer
        self.buffered_at_start = len(buffer)
        self.submitted = 0
        self.sent = 0
        self.dropped: Counter[str] = Counter()
        self.connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._rng = random.Random(seed)
        self._failure: Any = None  # reason code of a refused PUBACK (one publish in flight at a time)
        self._logged: str | None = None

    @property
    def buffered(self) -> int:
        return len(self.buffer)

    def counters(self) -> dict[str, int]:
        """``submitted``, ``sent``, ``buffered``, ``buffered_at_start`` and ``dropped_<reason>``."""
        out = {"submitted": self.submitted, "sent": self.sent, "buffered": self.buffered,
               "buffered_at_start": self.buffered_at_start}
        out.update({f"dropped_{reason}": n for reason, n in sorted(self.dropped.items())})
        return out

    def submit(self, build: Callable[[int], bytes]) -> int:
        """Buffer the report ``build(seq)`` under the next sequence number; returns that number."""
        seq = self.buffer.next_seq()
        payload = build(seq)
        self.submitted += 1
        try:
            dropped = self.buffer.append(seq, payload)
        except CascadeError as err:
            self.dropped["too_large"] += 1
            log.error("uplink: report %d not buffered: %s", seq, err)
            return seq
        if dropped:
            self.dropped["buffer_full"] += len(dropped)
            self._log_once("full", "uplink: buffer full (%d bytes): dropped the %d oldest reports (seq %d..%d)",
                           self.buffer.max_bytes, len(dropped), dropped[0], dropped[-1])
        self._wake.set()
        return seq

    async def drained(self) -> None:
        """Wait until everything submitted so far has been sent or dropped."""
        while len(self.buffer):
            await asyncio.sleep(0.02)

    # -- the sender ------------------------------------------------------------------------------
    async def run(self) -> None:
        failures = 0
        while True:
            try:
                async with self._client() as client:
                    self._tap(client)
                    self.connected.set()
                    if failures or self._logged == "down":
                        log.info("uplink: connected to %s:%d again; %d reports buffered", self.settings.host,
                                 self.settings.port, len(self.buffer))
                    failures = 0
                    self._logged = None
                    await self._drain(client)
            except aiomqtt.MqttError as err:
                self.connected.clear()
                failures += 1
                self._log_once("down", "uplink: broker %s:%d unreachable (%s); buffering on disk",
                               self.settings.host, self.settings.port, err)
                await asyncio.sleep(backoff_delay(failures, self.settings.backoff_base_s,
                                                  self.settings.backoff_cap_s, self._rng))

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        tls = ssl.create_default_context(cafile=s.tls_ca) if s.tls_ca else None
        return aiomqtt.Client(s.host, s.port, username=s.username, password=s.password,
                              identifier=s.client_id or s.username, protocol=aiomqtt.ProtocolVersion.V5,
                              tls_context=tls, keepalive=s.keepalive_s, timeout=s.publish_timeout_s)

    def _tap(self, client: aiomqtt.Client) -> None:
        """Keep the PUBACK reason code: aiomqtt resolves a publish whatever the broker answered, and
        MQTT 5 brokers refuse an unauthorised publish with a failure code in the PUBACK."""
        paho = client._client  # aiomqtt exposes no reason codes; the paho client underneath does
        inner: Callable[..., None] | None = paho.on_publish

        def on_publish(c: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
            if getattr(reason_code, "is_failure", False):
                self._failure = reason_code
            if inner is not None:
                inner(c, userdata, mid, reason_code, properties)

        paho.on_publish = on_publish

    async def _drain(self, client: aiomqtt.Client) -> None:
        while True:
            head = self.buffer.peek()
            if head is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            seq, payload = head
            self._failure = None
            await client.publish(self.settings.topic, payload, qos=1, timeout=self.settings.publish_timeout_s)
            if self._failure is not None:
                if self.buffer.consume(seq):
                    self.dropped["refused"] += 1
                self._log_once(f"refused:{self._failure}", "uplink: the broker refused report %d on %s (%s); "
                               "dropped: check the broker's ACL allows this topic", seq, self.settings.topic,
                               self._failure)
                continue
            if self.buffer.consume(seq):
                self.sent += 1
            else:  # dropped for room while in flight, yet it arrived: count it as sent, not dropped
                self.dropped["buffer_full"] -= 1
                self.sent += 1

    def _log_once(self, key: str, msg: str, *args: object) -> None:
        if self._logged != key:
            self._logged = key
            log.warning(msg, *args)
