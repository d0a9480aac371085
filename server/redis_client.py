"""The Redis client of each `redis.mode`: standalone, sentinel or cluster (docs/deploy.md, "Redis").

Every mode keeps the standalone client's promises: short socket timeouts and one quick retry,
so a request fails fast with a 503 instead of hanging; a bounded number of connections per
process (per node in a cluster), waiting up to pool_timeout_seconds for a free one where the
client can wait (standalone, sentinel; the cluster client refuses at once, also a 503).

The cluster client is a `RedisCluster`, not a `Redis`; it takes the same commands, pipelines
and WATCH transactions (one slot each: chunks/keys.py says which keys go together), so the
rest of the server is handed it as an `aioredis.Redis`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, cast

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, RedisClusterException, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .settings import RedisSettings, host_port

# What any mode's client raises when Redis cannot serve a command: answered 503 (server/errors.py).
# RedisClusterException is not a RedisError: the cluster client raises it when no node answers.
UNAVAILABLE = (RedisError, RedisClusterException)


class LeanBlockingPool(aioredis.BlockingConnectionPool):
    """redis-py's bounded pool, with a fast path when a connection is free and nobody waits.

    Its own get_connection takes an asyncio.Condition, an async timeout and records
    observability metrics for every command, and release takes two locks and dispatches an
    event: on this server that was more client CPU than the command it served (a 64 KiB PATCH
    makes two, docs/performance.md). A free connection is handed out here directly, still
    checked by `ensure_connection`; when none is free, or someone is waiting for one, the
    original code runs, with its bound, timeout and wake-ups. Single-threaded asyncio makes
    the list and set operations atomic; the attributes used are the pool's own (redis-py 8)."""

    _waiting = 0  # requests inside the original get_connection, which a release must wake

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        if self._available_connections and not getattr(self, "_in_maintenance", False):
            connection = self._available_connections.pop()
            self._in_use_connections.add(connection)
            try:
                await self.ensure_connection(connection)
            except BaseException:
                await self.release(connection)
                raise
            return connection
        self._waiting += 1
        try:
            return await super().get_connection()
        finally:
            self._waiting -= 1

    async def release(self, connection: Any) -> None:
        if self._waiting or getattr(self, "_in_maintenance", False):
            await super().release(connection)
            return
        self._in_use_connections.remove(connection)
        if connection.should_reconnect():
            await connection.disconnect()
        self._available_connections.append(connection)


class _DirectSend:
    """A connection mixin: commands packed by hiredis, and sent straight into the socket's
    buffer when it is empty.

    redis-py's asyncio connection packs commands in Python (its synchronous one uses hiredis):
    about 11 µs for a hot-path script call against 1.5 µs, with the same bytes.

    With a socket_timeout, redis-py sends every command inside asyncio.wait_for, which makes a
    task per command for a write that, with nothing queued, completes at once: about a twentieth
    of a 64 KiB PATCH's CPU went there (docs/performance.md). With bytes still queued (a slow
    Redis), or when the connection must first (re)connect, redis-py's own path runs, timeout and
    all; so does error handling, through the next command's read."""

    def pack_command(self, *args: Any) -> list[bytes]:
        # As redis-py's HiredisRespSerializer: a command name with a space ("CONFIG GET") is two
        # arguments; views are copied to bytes; a value hiredis cannot pack is a DataError.
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            pass  # a bytearray or memoryview (copied to bytes here), or a value no one can pack
        try:
            return [hiredis.pack_command(tuple(bytes(a) if isinstance(a, bytearray | memoryview) else a for a in args))]  # type: ignore[arg-type]
        except TypeError as exc:
            raise DataError(str(exc)) from exc

    def pack_commands(self, commands: Iterable[Iterable[Any]]) -> list[bytes]:
        # A pipeline's commands, each packed as above, in one buffer (redis-py packs them in Python).
        return [b"".join(self.pack_command(*args)[0] for args in commands)]

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        writer = getattr(self, "_writer", None)
        if writer is None or not self.is_connected or writer.transport.get_write_buffer_size():  # type: ignore[attr-defined]
            await super().send_packed_command(command, check_health)  # type: ignore[misc]
            return
        if check_health:
            await self.check_health()  # type: ignore[attr-defined]
        if isinstance(command, str):
            command = command.encode()
        writer.writelines([command] if isinstance(command, bytes) else command)

    async def read_response(
        self,
        disable_decoding: bool = False,
        timeout: float | None = None,
        *,
        disconnect_on_error: bool = True,
        push_request: bool | None = False,
    ) -> Any:
        """redis-py's read with the connection's socket_timeout, less its per-read extras: the
        error text (host and port formatted for every read, used only on failure) and the
        bookkeeping for maintenance notifications, which a connection here never enables.
        Errors are as redis-py raises them, the connection dropped the same way. Any other
        case (an explicit timeout, none at all, notifications on) is redis-py's own read."""
        socket_timeout = getattr(self, "socket_timeout", None)
        if (
            timeout is not None
            or socket_timeout is None
            or getattr(self, "_maint_notifications_connection_handler", None)
        ):
            return await super().read_response(  # type: ignore[misc]
                disable_decoding, timeout, disconnect_on_error=disconnect_on_error, push_request=push_request
            )
        try:
            async with asyncio.timeout(socket_timeout):
                response = await self._parser.read_response(  # type: ignore[attr-defined]
                    disable_decoding=disable_decoding, push_request=push_request
                )
        except TimeoutError:
            if disconnect_on_error:
                await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise RedisTimeoutError(f"Timeout reading from {self._host_error()}") from None  # type: ignore[attr-defined]
        except OSError as exc:
            if disconnect_on_error:
                await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise RedisConnectionError(f"Error while reading from {self._host_error()} : {exc.args}") from None  # type: ignore[attr-defined]
        except BaseException:
            if disconnect_on_error:
                await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise
        interval = getattr(self, "health_check_interval", 0)
        if interval:
            self.next_health_check = asyncio.get_running_loop().time() + interval
        if isinstance(response, ResponseError):
            raise response from None
        return response


class LeanRedis(aioredis.Redis):
    """The standalone client, with a shorter path from a command to its reply.

    redis-py 8's execute_command wraps each command in closures, a retry object's loop and two
    awaited observability hooks (which do nothing unless its OpenTelemetry export is set up):
    about 60 µs of client CPU per script call on this machine, against 15 µs for the socket
    round trip itself, and a 64 KiB PATCH makes two. Here the same steps run inline: a pooled
    connection, the packed command, redis-py's own `parse_response` (reply callbacks, NOSCRIPT
    and other errors as before), and the configured retry policy kept: a connection or timeout
    error disconnects the connection and is tried once more after a short pause (`_common`'s
    Retry: one retry), then raised."""

    _scripts: list[AsyncScript] | None = None

    def register_script(self, script: Any) -> Any:  # the supertypes disagree on its types
        registered = super().register_script(script)
        if self._scripts is None:
            self._scripts = []
        self._scripts.append(registered)
        return registered

    async def warm_up(self, connections: int) -> None:
        """Before the first request: open `connections` pooled connections and load every script
        registered so far. A fresh process otherwise pays both in its first burst: each of ~50
        concurrent first requests opens a connection (connect, HELLO, CLIENT SETINFO) and meets
        NOSCRIPT once per script (EVALSHA, SCRIPT LOAD, EVALSHA again)."""
        await asyncio.gather(*(self.ping() for _ in range(connections)))
        for script in self._scripts or []:
            script.sha = await self.script_load(script.script)

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if self.single_connection_client:
            return await super().execute_command(*args, **options)
        pool = self.connection_pool
        conn = await pool.get_connection()
        try:
            for failures in range(_RETRIES + 1):
                try:
                    await conn.send_packed_command(conn.pack_command(*args))
                    return await self.parse_response(conn, args[0], **options)
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    await conn.disconnect(error=exc, failure_count=failures + 1)
                    if failures == _RETRIES:
                        raise
                    await asyncio.sleep(_RETRY_PAUSE)
        finally:
            await pool.release(conn)


# `_common`'s retry policy, which LeanRedis follows: one retry, after ExponentialBackoff's first step.
_RETRIES, _RETRY_BASE, _RETRY_CAP = 1, 0.02, 0.2
_RETRY_PAUSE = min(_RETRY_CAP, _RETRY_BASE * 2)


def _direct_send(pool: aioredis.ConnectionPool) -> None:
    base = pool.connection_class
    pool.connection_class = type(f"DirectSend{base.__name__}", (_DirectSend, base), {})


class BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """The sentinel-managed pool (it finds the current master, and follows a failover) bounded
    like the standalone one: at most max_connections, a request waits `timeout` for one."""


def _common(settings: RedisSettings) -> dict[str, Any]:
    return {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "retry": Retry(ExponentialBackoff(cap=_RETRY_CAP, base=_RETRY_BASE), retries=_RETRIES),
    }


def build(url: str, settings: RedisSettings) -> aioredis.Redis:
    """The client for `settings.mode`; `url` is redis.url with "embedded" already resolved."""
    if settings.mode == "sentinel":
        return _sentinel(settings)
    if settings.mode == "cluster":
        client = RedisCluster.from_url(url, max_connections=max(1, settings.max_connections), **_common(settings))
        return cast(aioredis.Redis, client)
    # redis-py 8 defaults to long timeouts and many retries; a request must fail fast with a 503.
    # The pool is bounded (an unbounded one opens a connection per concurrent request, and a
    # flood of them exhausts Redis's maxclients for every process); when all are in use a
    # request waits for one, up to pool_timeout_seconds, rather than failing at once.
    pool = LeanBlockingPool.from_url(
        url,
        max_connections=max(1, settings.max_connections),
        timeout=settings.pool_timeout_seconds,
        health_check_interval=10,
        **_common(settings),
    )
    _direct_send(pool)
    return LeanRedis.from_pool(pool)


def _sentinel(settings: RedisSettings) -> aioredis.Redis:
    nodes = [host_port(node, "redis.sentinel.nodes") for node in settings.sentinel.nodes]
    timeouts = {"socket_timeout": settings.socket_timeout, "socket_connect_timeout": settings.connect_timeout}
    sentinel = Sentinel(nodes, sentinel_kwargs=timeouts)
    return cast(
        aioredis.Redis,
        sentinel.master_for(
            settings.sentinel.service_name,
            connection_pool_class=BlockingSentinelPool,
            max_connections=max(1, settings.max_connections),
            timeout=settings.pool_timeout_seconds,
            health_check_interval=10,
            **_common(settings),
        ),
    )


async def check(url: str, settings: RedisSettings) -> str | None:
    """Start-up's look at a sentinel or cluster configuration: None when it works, else one line
    saying what is wrong. (A standalone Redis that is down is an outage the server rides out with
    503s; a sentinel or cluster that cannot be found at start is most often a wrong setting.)"""
    if settings.mode == "standalone":
        return None
    client = build(url, settings)
    try:
        if settings.mode == "sentinel":
            sentinel = cast(Any, client).connection_pool.sentinel_manager
            await sentinel.discover_master(settings.sentinel.service_name)
        else:
            await cast(RedisCluster, client).initialize()
        await client.ping()
    except (TimeoutError, RedisError, RedisClusterException, OSError) as exc:
        where = ", ".join(settings.sentinel.nodes) if settings.mode == "sentinel" else url
        return f"redis.mode {settings.mode}: cannot use {where}: {_first_line(exc)}"
    finally:
        await client.aclose()
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
