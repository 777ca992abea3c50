"""collectors.vehicles.commands.exchange / publish_outbox: one MQTT session's traffic, both directions.

The client here is a stand-in with aiomqtt's two methods the helper uses (``messages`` and ``publish``):
what is tested is how the session ends, which a live broker cannot be made to do on cue."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import aiomqtt
import pytest

from collectors.vehicles.commands import exchange, publish_outbox


class _Client:
    def __init__(self, fail_publish: bool = False) -> None:
        self.fail_publish = fail_publish
        self.published: list[tuple[str, bytes]] = []
        self.incoming: asyncio.Queue[tuple[str, object] | None] = asyncio.Queue()

    async def publish(self, where: str, payload: bytes, qos: int) -> None:
        await asyncio.sleep(0)
        if self.fail_publish:
            raise aiomqtt.MqttError("PUBACK not received")
        self.published.append((where, payload))

    @property
    async def messages(self):  # an async iterator, as aiomqtt's
        while (item := await self.incoming.get()) is not None:
            yield SimpleNamespace(topic=SimpleNamespace(value=item[0]), payload=item[1])


async def test_a_failed_publish_ends_the_session_and_keeps_the_message() -> None:
    client = _Client(fail_publish=True)
    outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    outbox.put_nowait(("cascade/v1/bj/V1/ack", b"{}"))
    got: list[tuple[str, bytes]] = []
    with pytest.raises(aiomqtt.MqttError):  # the link still receives: without this, the outbox would stall
        await asyncio.wait_for(exchange(client, lambda c: publish_outbox(c, outbox),
                                        lambda t, p: got.append((t, p)), name="t"), 5)
    assert outbox.qsize() == 1 and outbox.get_nowait() == ("cascade/v1/bj/V1/ack", b"{}")  # sent next session


async def test_messages_are_handed_over_as_bytes_and_the_queue_goes_out() -> None:
    client = _Client()
    outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    got: list[tuple[str, bytes]] = []
    session = asyncio.create_task(exchange(client, lambda c: publish_outbox(c, outbox),
                                           lambda t, p: got.append((t, p)), name="t"))
    outbox.put_nowait(("a/cmd", b"1"))
    client.incoming.put_nowait(("x/ack", b"raw"))
    client.incoming.put_nowait(("x/ack", "text"))
    client.incoming.put_nowait(None)  # the stream ends (disconnected): the session returns, the sender stops
    await asyncio.wait_for(session, 5)
    assert got == [("x/ack", b"raw"), ("x/ack", b"text")]
    assert client.published == [("a/cmd", b"1")] or outbox.qsize() == 1  # sent, or kept for the next session


async def test_a_publish_interrupted_by_the_end_of_the_session_is_kept() -> None:
    client = _Client()
    outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    release = asyncio.Event()

    async def slow_publish(where: str, payload: bytes, qos: int) -> None:
        await release.wait()

    client.publish = slow_publish  # type: ignore[method-assign]
    sender = asyncio.create_task(publish_outbox(client, outbox))
    outbox.put_nowait(("a/cmd", b"1"))
    await asyncio.sleep(0.05)
    sender.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sender
    assert outbox.get_nowait() == ("a/cmd", b"1")
