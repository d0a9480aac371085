"""One typed settings object: `config.yaml` plus environment overrides, loaded once.

Every setting `section.key` can be overridden by the environment variable
`AVS_<SECTION>_<KEY>` in upper case, e.g. `AVS_REDIS_URL`, `AVS_LIMITS_MAX_IMAGE_BYTES`.
Values are parsed as YAML, so `AVS_AUTH_API_KEYS='{k1: alice}'` gives a map.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ENV_PREFIX = "AVS_"
MiB = 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    base_url: str = ""
    debug: bool = False
    log_level: str = "info"
    cors_origins: tuple[str, ...] = ()
    shutdown_grace_seconds: float = 10.0
    # Test-only: GET /debug/resources (tasks, open files, locks). Never enable in production.
    debug_endpoints: bool = False
    # GET / (the avatar page), /web/... (its files) and /docs (the interactive API reference).
    web_page: bool = True
    # Observability (docs/operations.md): "text" or "json" log lines; a bearer token GET /metrics requires.
    log_format: str = "text"
    metrics_token: str = ""
    # Hostile-client edges. With base_url empty, links are built only for these Host names
    # (empty = the listen address and localhost); any other Host answers 400 host-not-allowed.
    allowed_hosts: tuple[str, ...] = ()
    # Request head limits (the request line and each header, and all of it), past which the
    # connection answers 431 and closes; a head that has not fully arrived in time is closed.
    max_header_bytes: int = 16 * 1024
    max_headers_total_bytes: int = 64 * 1024
    header_timeout_seconds: float = 10.0
    # Worker processes `python -m server` runs, sharing the listening socket (server/workers.py).
    workers: int = 1


@dataclass(frozen=True)
class SentinelSettings:
    """`redis.mode: sentinel`: which master to ask the sentinels for, and where they listen."""

    service_name: str = ""
    nodes: tuple[str, ...] = ()  # host:port of each sentinel


REDIS_MODES = ("standalone", "sentinel", "cluster")


@dataclass(frozen=True)
class RedisSettings:
    # standalone: one Redis at `url` (or the embedded one); sentinel: the master `sentinel` names;
    # cluster: a Redis Cluster, `url` naming any of its nodes.
    mode: str = "standalone"
    url: str = "embedded"
    embedded_dir: str = "var/redis"
    key_prefix: str = "avs"
    socket_timeout: float = 2.0
    connect_timeout: float = 2.0
    retry_after_seconds: int = 2
    # Connections per server process; a request waits up to pool_timeout for a free one.
    max_connections: int = 64
    pool_timeout_seconds: float = 2.0
    sentinel: SentinelSettings = field(default_factory=SentinelSettings)
    # A session change is acknowledged only once WAIT confirms it reached this many replicas
    # (0: not waited for); past wait_timeout_seconds without them the request answers 503.
    wait_replicas: int = 0
    wait_timeout_seconds: float = 1.0


@dataclass(frozen=True)
class S3Settings:
    """The bucket of `storage.backend: s3` (docs/deploy.md)."""

    # An S3 endpoint (http://minio:9000, https://<account>.r2.cloudflarestorage.com); empty = AWS
    # itself; "embedded" = a SeaweedFS the server starts and owns (data under embedded_dir).
    endpoint_url: str = ""
    bucket: str = "avatars"
    region: str = "us-east-1"
    access_key_id: str = ""
    secret_access_key: str = ""
    prefix: str = ""  # every key starts with this, so one bucket can serve several apps
    # When set, GET /avatars/... answers 302 to <public_base_url>/<key> (a CDN or public bucket).
    public_base_url: str = ""
    max_connections: int = 32  # HTTP connections to the endpoint per server process
    max_attempts: int = 4  # tries of one call; 5xx and throttling are retried with backoff
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 30.0
    embedded_dir: str = "var/seaweedfs"
    embedded_port: int = 0  # the embedded S3 endpoint's port (0 = any free one); other servers may point at it


@dataclass(frozen=True)
class StorageSettings:
    # "local": bytes under root; "s3": in the bucket of storage.s3 (root stays the scratch space).
    backend: str = "local"
    root: str = "var/storage"
    # Test-only fault hook: while a file exists at this path, chunk writes fail with ENOSPC.
    fault_enospc_flag: str = ""
    s3: S3Settings = field(default_factory=S3Settings)


@dataclass(frozen=True)
class AuthSettings:
    jwt_secret: str = ""
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_public_key: str = ""
    jwt_audience: str = ""
    jwt_issuer: str = ""
    api_keys: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LimitSettings:
    max_image_bytes: int = 20 * MiB
    max_chunk_bytes: int = 8 * MiB
    max_chunks: int = 10_000
    max_pixels: int = 40_000_000
    max_side: int = 16_384
    max_frames: int = 300
    # Decoding cost past pixels: counted before decoding, refused with 422 too-many-scans/-chunks.
    max_scans: int = 100
    max_png_chunks: int = 20_000
    # One image job's wall clock; past it the worker is killed and the upload fails (image-timeout).
    image_job_seconds: float = 30.0
    body_timeout_seconds: float = 60.0
    # A body slower than this on average (after the grace period) ends with 408; 0 = no minimum.
    min_body_bytes_per_second: int = 1024
    body_rate_grace_seconds: float = 10.0
    # Per user; 0 switches a limit off. Past one, a request answers 429 with Retry-After.
    max_open_uploads: int = 50
    max_bytes_in_flight: int = 512 * MiB
    requests_per_window: int = 3000
    rate_window_seconds: float = 60.0
    quota_retry_after_seconds: int = 30
    # Requests without valid credentials, per client address and rate window; 0 = no limit.
    anonymous_requests_per_window: int = 600
    # Memory a process may hold for JSON bodies at once (each costs about twice its size);
    # past it a request waits up to body_budget_wait_seconds, then answers 503 server-busy.
    json_body_memory_budget: int = 256 * MiB
    body_budget_wait_seconds: float = 1.0


@dataclass(frozen=True)
class UploadSettings:
    expire_seconds: int = 24 * 3600
    reap_interval_seconds: float = 60.0
    completion_wait_seconds: float = 30.0
    # The completion lease: a completer renews it every third of this while it works; one that
    # dies (SIGKILL, power cut) is taken over this long after its last renewal.
    claim_seconds: float = 10.0
    # How often each server process looks for uploads with every byte in but no avatar yet
    # (their completer died) and finishes them itself.
    completion_sweep_seconds: float = 2.0
    # Finished or failed uploads whose records a user keeps readable (oldest dropped); 0 = all.
    keep_settled_per_user: int = 20


@dataclass(frozen=True)
class AvatarSettings:
    sizes: tuple[int, ...] = (512, 256, 128, 64)
    webp_quality: int = 82
    # libwebp's effort, 0-6; 2 encodes these sizes ~3x faster than 4 for ~2 % more bytes
    # (docs/performance.md, "W5: real photos").
    webp_method: int = 2
    jpeg_quality: int = 85
    keep_animation: bool = False
    workers: int = 0


@dataclass(frozen=True)
class FetchSettings:
    """Fetching an image from a URL a client names (profile_image_api): bounded, and never inward."""

    timeout_seconds: float = 20.0
    max_redirects: int = 5
    # Downloads at once in one server process (each user has at most one); past it 503.
    max_concurrent: int = 32
    # CIDRs allowed even though private, loopback, link-local or reserved (e.g. "127.0.0.0/8").
    allowed_private_networks: tuple[str, ...] = ()


EVENT_TYPES = (
    "upload.created",
    "upload.finished",
    "upload.failed",
    "upload.terminated",
    "upload.expired",
    "avatar.changed",
    "avatar.deleted",
)


@dataclass(frozen=True)
class WebhookSettings:
    """One entry of `events:`: where to POST which events, signed with `secret`."""

    url: str = ""
    secret: str = ""
    types: tuple[str, ...] = ()  # empty: every type
    name: str = ""  # the metrics label; "webhook-<index>" when empty (a URL may hold credentials)


@dataclass(frozen=True)
class EventDeliverySettings:
    timeout_seconds: float = 10.0
    first_retry_seconds: float = 1.0  # doubled after each failed attempt...
    max_retry_seconds: float = 600.0  # ...up to this
    retry_for_seconds: float = 3 * 24 * 3600.0  # then the event is parked in the dead-letter stream
    dead_letter_max: int = 10_000


@dataclass(frozen=True)
class HookSettings:
    """The blocking pre-create hook: asked before an upload is accepted."""

    pre_create_url: str = ""
    pre_create_timeout_seconds: float = 5.0
    pre_create_fail_open: bool = False  # when the hook cannot be reached: accept (true) or refuse with 503


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    uploads: UploadSettings = field(default_factory=UploadSettings)
    avatars: AvatarSettings = field(default_factory=AvatarSettings)
    fetch: FetchSettings = field(default_factory=FetchSettings)
    protocols: Mapping[str, bool] = field(default_factory=dict)
    event_delivery: EventDeliverySettings = field(default_factory=EventDeliverySettings)
    hooks: HookSettings = field(default_factory=HookSettings)
    events: tuple[WebhookSettings, ...] = ()

    def protocol_enabled(self, name: str) -> bool:
        return bool(self.protocols.get(name, True))


class SettingsError(ValueError):
    pass


def load(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read `path` (YAML), apply `AVS_*` overrides from `environ`, validate, return Settings."""
    raw: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text(encoding="utf-8")
        raw = yaml.safe_load(text) or {}
        if not isinstance(raw, dict):
            raise SettingsError(f"{path}: top level must be a mapping")
    env = os.environ if environ is None else environ
    sections: dict[str, Any] = {}
    hints = typing.get_type_hints(Settings)
    for section in dataclasses.fields(Settings):
        if section.name == "events":
            sections["events"] = _webhooks(raw.get("events"), env)
            continue
        given = raw.get(section.name) or {}
        if not isinstance(given, dict):
            raise SettingsError(f"{section.name}: must be a mapping")
        section_type = hints[section.name]
        if section.name == "protocols":
            merged = {str(k): bool(v) for k, v in given.items()}
            for name, value in env.items():
                prefix = f"{ENV_PREFIX}PROTOCOLS_"
                if name.startswith(prefix):
                    merged[name[len(prefix) :].lower()] = bool(yaml.safe_load(value))
            sections["protocols"] = merged
            continue
        sections[section.name] = _build_section(section.name, section_type, given, env)
    unknown = set(raw) - {f.name for f in dataclasses.fields(Settings)}
    if unknown:
        raise SettingsError(f"unknown settings sections: {sorted(unknown)}")
    if sections["server"].log_format not in ("text", "json"):
        raise SettingsError("server.log_format: expected text or json")
    if sections["storage"].backend not in ("local", "s3"):
        raise SettingsError("storage.backend: expected local or s3")
    if sections["server"].workers < 1:
        raise SettingsError("server.workers: expected 1 or more")
    _check_redis(sections["redis"])
    return Settings(**sections)


def _check_redis(redis: RedisSettings) -> None:
    if redis.mode not in REDIS_MODES:
        raise SettingsError(f"redis.mode: expected one of {', '.join(REDIS_MODES)}, got {redis.mode!r}")
    if redis.mode == "sentinel":
        if not redis.sentinel.service_name or not redis.sentinel.nodes:
            raise SettingsError("redis.mode sentinel needs redis.sentinel.service_name and redis.sentinel.nodes")
        for node in redis.sentinel.nodes:
            host_port(node, "redis.sentinel.nodes")
    if redis.mode == "cluster":
        if redis.url == "embedded" or not redis.url.startswith(("redis://", "rediss://")):
            raise SettingsError("redis.mode cluster needs redis.url naming a cluster node (redis://host:port)")
        if redis.wait_replicas:
            raise SettingsError("redis.wait_replicas works in standalone and sentinel mode, not cluster")
    if redis.wait_replicas < 0:
        raise SettingsError("redis.wait_replicas: expected 0 or more")


def host_port(node: str, where: str) -> tuple[str, int]:
    """`host:port` (a bracketed IPv6 address too) as a pair, or SettingsError naming `where`."""
    host, sep, port = node.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SettingsError(f"{where}: expected host:port, got {node!r}")
    return host.strip("[]"), int(port)


def _webhooks(given: Any, env: Mapping[str, str]) -> tuple[WebhookSettings, ...]:
    """`events:`, a list of webhook endpoints (AVS_EVENTS replaces the whole list, as YAML)."""
    if f"{ENV_PREFIX}EVENTS" in env:
        given = yaml.safe_load(env[f"{ENV_PREFIX}EVENTS"])
    if given is None:
        return ()
    if not isinstance(given, list):
        raise SettingsError("events: must be a list of {url, secret, types}")
    hooks = []
    for i, entry in enumerate(given):
        if not isinstance(entry, dict):
            raise SettingsError(f"events[{i}]: must be a mapping")
        hook = _build_section(f"events[{i}]", WebhookSettings, entry, {})
        if not hook.url.startswith(("http://", "https://")) or not hook.secret:
            raise SettingsError(f"events[{i}]: needs an http(s) url and a secret")
        unknown = set(hook.types) - set(EVENT_TYPES)
        if unknown:
            raise SettingsError(f"events[{i}]: unknown event types {sorted(unknown)}; known: {list(EVENT_TYPES)}")
        hooks.append(hook)
    return tuple(hooks)


def _build_section(name: str, cls: type, given: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(given) - known
    if unknown:
        raise SettingsError(f"unknown settings in {name}: {sorted(unknown)}")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            # A group inside a section (storage.s3, redis.sentinel): AVS_STORAGE_S3_<KEY>.
            group = given.get(f.name) or {}
            if not isinstance(group, dict):
                raise SettingsError(f"{name}.{f.name}: expected a mapping, got {group!r}")
            values[f.name] = _build_section(f"{name}.{f.name}", hints[f.name], group, env)
            continue
        env_name = f"{ENV_PREFIX}{name}_{f.name}".upper().replace(".", "_")
        if env_name in env:
            value = yaml.safe_load(env[env_name]) if env[env_name] != "" else ""
        elif f.name in given:
            value = given[f.name]
        else:
            continue
        values[f.name] = _coerce(f"{name}.{f.name}", hints[f.name], value)
    return cls(**values)


def _coerce(where: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise SettingsError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise SettingsError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise SettingsError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        return "" if value is None else str(value)
    if origin is tuple:
        (item_type, _) = typing.get_args(hint)
        if value is None:
            return ()
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise SettingsError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(where, item_type, v) for v in value)
    if origin in (Mapping, dict) or origin is typing.get_origin(Mapping[str, str]):
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise SettingsError(f"{where}: expected a mapping, got {value!r}")
        return types.MappingProxyType({str(k): str(v) for k, v in value.items()})
    raise SettingsError(f"{where}: unsupported setting type {hint!r}")
