"""Test-only introspection (`server.debug_endpoints: true`): what a leak test counts.

`GET /debug/resources` answers the asyncio tasks alive in this process, its open file
descriptors, and the upload locks held in Redis under this server's key prefix. Never enable
it in production: it tells an outsider about the server's insides.
"""

from __future__ import annotations

import asyncio
import os

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

import chunks

from .services import Services, services_of


def routes() -> list[BaseRoute]:
    return [Route("/debug/resources", resources, methods=["GET"])]


async def resources(request: Request) -> Response:
    services = services_of(request)
    pattern = chunks.Keys(services.settings.redis.key_prefix).lock_pattern
    locks = [key async for key in services.redis.scan_iter(match=pattern, count=1000)]
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    return JSONResponse(
        {
            "tasks": len(tasks),
            "task_names": sorted(task.get_name() for task in tasks),
            "open_files": _open_files(),
            "redis_connections": _redis_connections(services),
            "locks": len(locks),
            "pid": os.getpid(),  # which worker answered (server.workers)
        }
    )


def _redis_connections(services: Services) -> int:
    """Connected sockets in the Redis pool: it grows to the peak concurrency and stays, by design,
    so a leak check subtracts them from the open files."""
    pool = services.redis.connection_pool
    held = [*getattr(pool, "_available_connections", []), *getattr(pool, "_in_use_connections", [])]
    return sum(1 for connection in held if getattr(connection, "is_connected", False))


def _open_files() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except FileNotFoundError:
        return -1
