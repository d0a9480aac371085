"""`python -m server [--config PATH] [--host H] [--port N]` serves;
`python -m server token USER_ID [--email E] [--ttl S]` prints a JWT signed with the configured secret."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from . import settings as settings_module
from .auth import InsecureSecret, issue_token

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
    args = parser.parse_args(argv)
    settings = settings_module.load(_config_path(args.config))
    host = args.host or settings.server.host
    port = args.port if args.port is not None else settings.server.port
    # The app's own checks (the JWT secret, the allowed Host names) see where it really listens.
    settings = dataclasses.replace(settings, server=dataclasses.replace(settings.server, host=host, port=port))

    import uvicorn

    from .app import create_app
    from .http_limits import limited_protocol
    from .request_log import configure

    # One handler for every logger, uvicorn's too (log_config=None): JSON or readable lines, and
    # one access line per request from server.request_log instead of uvicorn's.
    configure(settings.server.log_format, settings.server.log_level)
    try:
        app = create_app(settings)
    except InsecureSecret as exc:
        parser.error(str(exc))
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=limited_protocol(settings.server),
        log_level=settings.server.log_level,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.server.shutdown_grace_seconds),
        proxy_headers=False,
    )
    return 0


def _token(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m server token", description="Print a signed JWT for USER_ID.")
    parser.add_argument("user_id")
    parser.add_argument("--email", default="")
    parser.add_argument("--ttl", type=int, default=3600, help="seconds until the token expires")
    parser.add_argument("--config")
    args = parser.parse_args(argv)
    settings = settings_module.load(_config_path(args.config))
    print(issue_token(settings.auth, args.user_id, email=args.email, ttl=args.ttl))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
