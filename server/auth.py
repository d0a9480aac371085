"""Who is asking: a JWT bearer token (algorithm pinned by config) or an API key."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from starlette.requests import HTTPConnection

from .settings import AuthSettings

_SYMMETRIC = {"HS256", "HS384", "HS512"}
# An HMAC key shorter than the hash's output is guessable offline from one token (RFC 7518 3.2).
_MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
# The secret config.yaml ships with: public, so only good for a server nobody else can reach.
DEV_SECRET = "dev-secret-change-me-0123456789abcdef"
# Where a request's verified caller is kept, in the per-request ASGI scope state.
_PRINCIPAL = "avs.principal"
# Verified tokens remembered per process (by the sha256 of the token, until its `exp`): a
# client sends the same token with every chunk, and the signature check is the costly part.
TOKEN_CACHE_SIZE = 4096


class InsecureSecret(ValueError):
    """The configured JWT secret must not be used (a start-up error, never a request's)."""


def check_secret(settings: AuthSettings, listen_host: str) -> None:
    """Refuse, at start-up, a secret too short for its HMAC algorithm, and the example secret
    anywhere but on loopback (anyone who read config.yaml could mint tokens)."""
    secret = settings.jwt_secret.encode()
    if not secret:
        return  # token authentication is off; API keys only
    for algorithm in settings.jwt_algorithms:
        need = _MIN_SECRET_BYTES.get(algorithm, 0)
        if len(secret) < need:
            raise InsecureSecret(
                f"auth.jwt_secret is {len(secret)} bytes; {algorithm} needs at least {need}: "
                "set AVS_AUTH_JWT_SECRET (or auth.jwt_secret) to a longer random secret"
            )
    if settings.jwt_secret == DEV_SECRET and not _loopback(listen_host):
        raise InsecureSecret(
            f"refusing to serve on {listen_host} with the example auth.jwt_secret from config.yaml: "
            "set AVS_AUTH_JWT_SECRET (or auth.jwt_secret) to a secret of your own"
        )


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class AuthError(Exception):
    """The request's credentials are missing or not valid (401)."""

    def __init__(self, message: str, *, code: str = "unauthenticated"):
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Principal:
    user_id: str
    claims: dict[str, Any] = field(default_factory=dict)

    @property
    def email(self) -> str:
        value = self.claims.get("email")
        return value if isinstance(value, str) else ""


class Authenticator:
    def __init__(self, settings: AuthSettings):
        self.settings = settings
        self.algorithms = list(settings.jwt_algorithms)
        if not self.algorithms or "none" in {a.lower() for a in self.algorithms}:
            raise ValueError("auth.jwt_algorithms must name real signing algorithms")
        symmetric = [a for a in self.algorithms if a in _SYMMETRIC]
        asymmetric = [a for a in self.algorithms if a not in _SYMMETRIC]
        if symmetric and asymmetric:
            # One key per deployment: mixing them invites key-confusion attacks.
            raise ValueError("auth.jwt_algorithms mixes HMAC and public-key algorithms")
        if asymmetric:
            key = settings.jwt_public_key
            if key and not key.lstrip().startswith("-----BEGIN") and Path(key).is_file():
                key = Path(key).read_text()
            self._verify_key: Any = key
        else:
            self._verify_key = settings.jwt_secret
        self._api_keys = [(k.encode(), v) for k, v in settings.api_keys.items() if k]
        self._verified: OrderedDict[bytes, tuple[float, Principal]] = OrderedDict()

    def authenticate(self, conn: HTTPConnection) -> Principal:
        """The caller of this request. Verified once per request: the rate limiter asks first,
        the handler again, and a signature check is the costly part of both."""
        state = conn.scope.setdefault("state", {})
        principal = state.get(_PRINCIPAL)
        if principal is None:
            principal = state[_PRINCIPAL] = self._verify(conn)
        return principal

    def _verify(self, conn: HTTPConnection) -> Principal:
        header = conn.headers.get("authorization", "")
        api_key = conn.headers.get("x-api-key")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthError("the Authorization header must be 'Bearer <token>'", code="invalid-authorization")
            return self.from_token(token.strip())
        if api_key is not None:
            return self.from_api_key(api_key)
        raise AuthError("authentication required: send a Bearer token or an X-Api-Key header")

    def from_token(self, token: str) -> Principal:
        """The token's caller. A token verified before is taken from the cache until its `exp`
        (the claims were checked then; only the clock can change the answer, and it is read)."""
        key = hashlib.sha256(token.encode()).digest()
        cached = self._verified.get(key)
        if cached is not None:
            if time.time() < cached[0]:
                return cached[1]
            del self._verified[key]
        principal = self._decode(token)
        expires = principal.claims.get("exp")
        if isinstance(expires, int | float):
            self._verified[key] = (float(expires), principal)
            if len(self._verified) > TOKEN_CACHE_SIZE:
                self._verified.popitem(last=False)  # the oldest entry: bounded memory
        return principal

    def _decode(self, token: str) -> Principal:
        if not self._verify_key:
            raise AuthError("token authentication is not configured", code="invalid-token")
        try:
            claims = jwt.decode(
                token,
                self._verify_key,
                algorithms=self.algorithms,
                options={"require": ["exp", "sub"]},
                audience=self.settings.jwt_audience or None,
                issuer=self.settings.jwt_issuer or None,
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired", code="token-expired") from None
        except jwt.PyJWTError:
            raise AuthError("the token is not valid", code="invalid-token") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject) > 256:
            raise AuthError("the token has no usable subject", code="invalid-token")
        return Principal(subject, claims)

    def from_api_key(self, presented: str) -> Principal:
        candidate = presented.encode()
        match = None
        # Compare against every key, in constant time each, so timing tells nothing.
        for key, user in self._api_keys:
            if hmac.compare_digest(candidate, key):
                match = user
        if match is None:
            raise AuthError("the API key is not valid", code="invalid-api-key")
        return Principal(match, {"sub": match})


def verified_principal(conn: HTTPConnection) -> Principal | None:
    """The caller, if this request's credentials were already verified; never verifies them itself."""
    principal = conn.scope.get("state", {}).get(_PRINCIPAL)
    return principal if isinstance(principal, Principal) else None


def issue_token(
    settings: AuthSettings, user_id: str, *, email: str = "", ttl: int = 3600, extra: dict[str, Any] | None = None
) -> str:
    """A token signed with the configured HMAC secret (for curl, tests and the CLI)."""
    algorithm = next((a for a in settings.jwt_algorithms if a in _SYMMETRIC), None)
    if algorithm is None or not settings.jwt_secret:
        raise ValueError("issuing tokens needs auth.jwt_secret and an HS* algorithm")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + ttl}
    if email:
        claims["email"] = email
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    claims.update(extra or {})
    return jwt.encode(claims, settings.jwt_secret, algorithm=algorithm)
