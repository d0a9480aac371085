"""`python -m server [--config PATH] [--host H] [--port N]` serves;
`python -m server token USER_ID [--email E] [--ttl S]` prints a JWT signed with the configured secret."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import socket
import sys

from . import settings as settings_module

DEFAULT_CONFIG = "config.yaml"


def _config_path(given: str | None) -> str | None:
    if given:
        return given
    path = os.environ.get("AVS_CONFIG", DEFAULT_CONFIG)
    return path if os.path.exists(path) else None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "token":
        return _token(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m server", description="Serve the avatar upload server.")
    parser.add_argument("--config", help=f"settings file (default: $AVS_CONFIG or {DEFAULT_CONFIG})")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    # Internal: a worker of `server.workers` (server/workers.py) serving the parent's socket,
    # and the parent itself once its checks are done (see below).
    parser.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--supervise", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    config_path = _config_path(args.config)
    try:
        settings = settings_module.load(config_path)
    except settings_module.SettingsError as exc:
        parser.exit(2, f"error: {exc}\n")
    host = args.host or settings.server.host
    port = args.port if args.port is not None else settings.server.port
    # The app's own checks (the JWT secret, the allowed Host names) see where it really listens.
    settings = dataclasses.replace(settings, server=dataclasses.replace(settings.server, host=host, port=port))

    if args.supervise:
        from .log_format import configure
        from .workers import Supervisor

        configure(settings.server.log_format, settings.server.log_level)
        return Supervisor(settings, config_path).run()
    if args.worker_fd is None:
        from . import redis_client
        from .auth import InsecureSecret, check_secret

        problem = asyncio.run(redis_client.check(settings.redis.url, settings.redis))
        if problem is not None:
            parser.exit(2, f"error: {problem}\n")  # one line: a setting to fix, not a crash to read
        if settings.server.workers > 1:
            try:
                check_secret(settings.auth, host)  # once here, rather than N workers failing alike
            except InsecureSecret as exc:
                parser.error(str(exc))
            # The supervisor only starts and watches Redis and the workers: it goes on as a fresh
            # interpreter (exec: the same pid), without the ~25 MiB the checks above imported.
            sys.stdout.flush()
            sys.stderr.flush()
            os.execv(sys.executable, [sys.executable, "-m", "server", *argv, "--supervise"])
    return _serve(parser, settings, args.worker_fd)


def _serve(parser: argparse.ArgumentParser, settings: settings_module.Settings, worker_fd: int | None) -> int:
    import uvicorn

    from .app import create_app
    from .auth import InsecureSecret
    from .http_limits import limited_protocol
    from .log_format import configure
    from .workers import STARTUP_FAILED

    # One handler for every logger, uvicorn's too (log_config=None): JSON or readable lines, and
    # one access line per request from server.request_log instead of uvicorn's.
    configure(settings.server.log_format, settings.server.log_level)
    try:
        app = create_app(settings)
    except InsecureSecret as exc:
        parser.error(str(exc))
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        loop="uvloop",
        http=limited_protocol(settings.server),
        log_level=settings.server.log_level,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.server.shutdown_grace_seconds),
        proxy_headers=False,
        server_header=False,  # no "server: uvicorn" on every answer: one header less, nothing advertised
    )
    server = uvicorn.Server(config)
    server.run(sockets=None if worker_fd is None else [socket.socket(fileno=worker_fd)])
    return 0 if server.started else STARTUP_FAILED


def _token(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m server token", description="Print a signed JWT for USER_ID.")
    parser.add_argument("user_id")
    parser.add_argument("--email", default="")
    parser.add_argument("--ttl", type=int, default=3600, help="seconds until the token expires")
    parser.add_argument("--config")
    args = parser.parse_args(argv)
    settings = settings_module.load(_config_path(args.config))
    from .auth import issue_token

    print(issue_token(settings.auth, args.user_id, email=args.email, ttl=args.ttl))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
