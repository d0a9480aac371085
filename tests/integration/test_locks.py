"""The upload lock against a real redis-server."""

import asyncio
import secrets

import pytest
import redis.asyncio as aioredis

import chunks


@pytest.mark.timeout(20)  # before the fix this hung: the timeout is the failure
async def test_a_renewal_that_swallows_its_cancellation_still_ends_and_releases_the_lock(redis_url):
    """Under load (`make bench`, 1000 tus creations at concurrency 100) redis-py sometimes let a
    renewal that was cancelled mid-command return its reply instead of raising; the renewer
    went on renewing, `hold` waited for it forever, the request hung and its upload stayed
    locked. This renewal does what redis-py did."""
    client = aioredis.from_url(redis_url)
    locks = chunks.UploadLocks(client, f"t{secrets.token_hex(4)}", renew_seconds=0.01)
    renew = locks._renew
    in_flight = asyncio.Event()

    async def swallowing_renew(**kwargs):  # type: ignore[no-untyped-def]
        in_flight.set()
        try:
            await asyncio.sleep(0.2)  # the command is on the wire
        except asyncio.CancelledError:
            pass  # the reply comes back and the cancellation is lost
        return await renew(**kwargs)

    locks._renew = swallowing_renew
    renewers: list[asyncio.Task] = []
    try:
        async with asyncio.timeout(5):
            async with locks.hold("upload-1"):
                await in_flight.wait()
                renewers = [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "UploadLocks._keep"]
        async with asyncio.timeout(2):  # released: the next holder gets it at once
            async with locks.hold("upload-1", wait_seconds=0.5):
                pass
    finally:
        alive = [t for t in renewers if not t.done()]
        for _ in range(100):  # a stray renewer swallows cancels too: cancel until one lands
            if all(t.done() for t in alive):
                break
            for task in alive:
                task.cancel()
            await asyncio.wait(alive, timeout=0.05)
        await client.aclose()
    assert renewers and not alive, "the renewer outlived its lock"
