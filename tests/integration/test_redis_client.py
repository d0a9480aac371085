"""The standalone client's short path (server/redis_client.py: LeanRedis, the hiredis packer, the
direct send and read) against a real redis-server: the same replies and errors as redis-py's own
path, a dropped connection replaced, a stuck Redis a timeout, and the client whole afterwards."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import DataError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server.redis_client import LeanRedis, build
from server.settings import RedisSettings


@pytest.fixture()
async def client(redis_url: str):
    built = build(redis_url, RedisSettings(socket_timeout=0.3))
    assert isinstance(built, LeanRedis)
    yield built
    await built.aclose()


@pytest.fixture()
async def plain(redis_url: str):
    """redis-py's own client on the same Redis: what the short path must agree with."""
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_replies_are_what_redis_py_gives(client, plain):
    key = "lean:{t}"
    await client.delete(key, key + "z", key + "b")
    assert await client.set(key, memoryview(b"\x00\xffview")) is True
    assert await plain.get(key) == b"\x00\xffview"
    assert await client.set(key + "b", bytearray(b"array"), nx=True) is True
    assert await client.set(key + "b", b"other", nx=True) is None  # the reply callbacks still apply
    score = 1796088039.1224105
    assert await client.zadd(key + "z", {"m": score}) == 1
    assert await plain.zscore(key + "z", "m") == score
    assert await client.zscore(key + "z", "m") == score
    assert (await client.config_get("maxmemory-policy")).keys() == {"maxmemory-policy"}  # "CONFIG GET": two words
    script = client.register_script("return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}")
    assert await script(keys=[key], args=[b"\x01bin", 41]) == [key.encode(), b"\x01bin", 42]
    with pytest.raises(ResponseError):
        await client.incr(key)  # not a number: Redis's error, raised as redis-py raises it
    with pytest.raises(DataError):
        await client.set(key, None)  # type: ignore[arg-type]


async def test_a_pipeline_sends_what_redis_py_would_and_reads_every_reply(client, plain):
    key = "lean:{p}"
    await client.delete(key, key + "h", key + "z")
    script = client.register_script("return ARGV[1] .. KEYS[1]")
    await script(keys=[key], args=["warm"])  # loaded, so EVALSHA answers inside the pipeline
    async with client.pipeline(transaction=False) as pipe:
        pipe.set(key, memoryview(b"\x00\xffview"), ex=100)
        pipe.hset(key + "h", mapping={"a": bytearray(b"1"), "b": 2.5})
        pipe.zadd(key + "z", {"m": 1796088039.1224105})
        pipe.evalsha(script.sha, 1, key, b"\x01")
        pipe.incr(key)  # not a number: its error comes back in its place, the others still read
        pipe.get(key)
        answers = await pipe.execute(raise_on_error=False)
    assert answers[:4] == [True, 2, 1, b"\x01" + key.encode()]
    assert isinstance(answers[4], ResponseError) and answers[5] == b"\x00\xffview"
    assert await plain.hgetall(key + "h") == {b"a": b"1", b"b": b"2.5"}
    assert await client.get(key) == b"\x00\xffview"  # the connection is in step after it
    async with client.pipeline(transaction=True) as pipe:  # MULTI/EXEC packed the same way
        pipe.set(key, b"in a transaction")
        pipe.get(key)
        assert await pipe.execute() == [True, b"in a transaction"]


async def test_a_connection_dropped_between_commands_is_replaced(client, redis_url):
    await client.set("lean:dropped", b"still here")
    admin = redis.Redis.from_url(redis_url)
    try:
        assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
    finally:
        admin.close()
    # The pooled connection is dead; the command fails once, is retried on a new one, answers.
    assert await client.get("lean:dropped") == b"still here"


async def test_a_stuck_redis_is_a_timeout_and_the_client_recovers(client, redis_url):
    admin = redis.Redis.from_url(redis_url)
    try:
        admin.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        with pytest.raises(RedisTimeoutError):
            await client.get("lean:paused")
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()
    assert await client.set("lean:paused", b"back") is True
    assert await client.get("lean:paused") == b"back"
    # Every connection went back to the pool: none was lost to the timeout.
    pool = client.connection_pool
    await asyncio.gather(*(client.ping() for _ in range(8)))
    assert not pool._in_use_connections
