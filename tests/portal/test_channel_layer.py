"""The channel layer carries revocations to live sessions: it must survive silence.

A desktop tunnel or a proxied socket may hear nothing for minutes; redis-py 8's default
5-second read timeout once turned every such quiet wait into a crash of the consumer
(django/channels_redis#422). This waits past it on the real Redis layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers
from django.conf import settings

from tests.conftest import require


def test_a_receive_can_wait_in_silence_longer_than_redis_reads_time_out():
    require(bool(settings.CONFIG.redis_url), "Redis (REDIS_URL) for the channel layer")

    async def wait_then_hear() -> tuple[float, dict]:
        layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)  # its own: no other loop receives on it
        channel = await layer.new_channel("silence.")
        started = time.monotonic()
        with contextlib.suppress(TimeoutError):  # nothing was sent: waiting quietly is the point
            await asyncio.wait_for(layer.receive(channel), 7)
        quiet = time.monotonic() - started
        await layer.send(channel, {"type": "revoke", "why": "locked"})
        return quiet, await asyncio.wait_for(layer.receive(channel), 5)

    quiet, message = asyncio.run(wait_then_hear())
    assert quiet >= 6.5
    assert message == {"type": "revoke", "why": "locked"}
