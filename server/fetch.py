"""Downloading an image from a URL a client names, without becoming a way into our network.

A URL is a request to reach any host the server can reach (SSRF). So: http and https only; every
hop's host is resolved here and each address checked before connecting, and the connection goes
to the checked address (a second DNS answer cannot swap in another); redirects are followed by
hand, each target checked again; the size and the total time are bounded.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from pathlib import Path

import aiofiles
import httpx

from .settings import FetchSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_REDIRECTS = {301, 302, 303, 307, 308}


class FetchFailed(Exception):
    """The image could not be fetched; `code` says why, `message` says it to a person."""

    def __init__(self, message: str, *, code: str):
        super().__init__(message)
        self.code, self.message = code, message


class InvalidUrl(FetchFailed):
    def __init__(self, message: str, *, code: str = "invalid-url"):
        super().__init__(message, code=code)


def check_url(text: str) -> httpx.URL:
    """The URL, if it is an absolute http(s) URL without credentials; InvalidUrl otherwise."""
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise InvalidUrl("the URL is not valid") from None
    if url.scheme not in ("http", "https"):
        raise InvalidUrl("only http and https URLs can be fetched")
    if not url.host:
        raise InvalidUrl("the URL has no host")
    if url.userinfo:
        raise InvalidUrl("URLs with credentials are not fetched")
    return url


class AddressPolicy:
    """Which addresses may be connected to: public ones, and any in the configured networks."""

    def __init__(self, allowed_networks: tuple[str, ...]):
        self.allowed = [ipaddress.ip_network(n, strict=False) for n in allowed_networks]

    def permits(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address):
            embedded = _embedded_ipv4(address)
            # A relay or translator forwards to the IPv4 address inside (6to4, NAT64, Teredo):
            # the IPv4 address is where the request really goes, so it is the one checked.
            if embedded is not None and not self._permits_one(embedded):
                return False
            if address.ipv4_mapped is not None:
                address = address.ipv4_mapped
        return self._permits_one(address)

    def _permits_one(self, address: IPAddress) -> bool:
        if any(address in network for network in self.allowed if network.version == address.version):
            return True
        inward = (
            address.is_private
            or address.is_loopback
            or address.is_link_local
            or address.is_multicast
            or address.is_reserved
            or address.is_unspecified
            or not address.is_global
        )
        return not inward


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a 6to4 (2002::/16), NAT64 (64:ff9b::/96, 64:ff9b:1::/48) or Teredo
    (2001::/32, the client's address) IPv6 address carries, if it is one of those."""
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in network for network in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


async def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        answers = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise FetchFailed(f"the host {host!r} could not be resolved", code="unresolvable-host") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in answers:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


async def _checked_address(url: httpx.URL, policy: AddressPolicy) -> IPAddress:
    port = url.port or (443 if url.scheme == "https" else 80)
    addresses = await resolve(url.host, port)
    # Every answer must be allowed: a name with one public and one private address is refused.
    if not addresses or not all(policy.permits(a) for a in addresses):
        raise FetchFailed(
            f"the host {url.host!r} is a private, loopback or otherwise internal address", code="address-not-allowed"
        )
    return addresses[0]


async def download(url: str, destination: Path, max_bytes: int, settings: FetchSettings) -> None:
    """Fetch `url` into `destination` (at most `max_bytes`), or raise FetchFailed."""
    policy = AddressPolicy(settings.allowed_private_networks)
    target = check_url(url)
    timeout = httpx.Timeout(settings.timeout_seconds)
    try:
        async with asyncio.timeout(settings.timeout_seconds):
            # trust_env=False: a proxy from the environment would connect where we did not check.
            async with httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=timeout) as client:
                await _follow(client, target, destination, max_bytes, policy, settings.max_redirects)
    except (TimeoutError, httpx.TimeoutException):
        raise FetchFailed(
            f"the image did not arrive within {settings.timeout_seconds:g} seconds", code="timeout"
        ) from None
    except httpx.HTTPError as exc:
        raise FetchFailed(f"the image URL could not be fetched ({type(exc).__name__})", code="unreachable") from None


async def _follow(
    client: httpx.AsyncClient,
    url: httpx.URL,
    destination: Path,
    max_bytes: int,
    policy: AddressPolicy,
    max_redirects: int,
) -> None:
    for _hop in range(max_redirects + 1):
        address = await _checked_address(url, policy)
        request = client.build_request(
            "GET",
            url.copy_with(host=str(address)),
            headers={"Host": url.netloc.decode("ascii"), "Accept": "image/*"},
            # TLS still names, and verifies, the host of the URL, not the address.
            extensions={"sni_hostname": url.host} if url.scheme == "https" else {},
        )
        response = await client.send(request, stream=True)
        try:
            if response.status_code in _REDIRECTS:
                location = response.headers.get("location")
                if not location:
                    raise FetchFailed("the image URL redirects without a Location", code="http-error")
                url = check_url(str(url.join(location)))
                continue
            if response.status_code != 200:
                raise FetchFailed(f"the image URL answered HTTP {response.status_code}", code="http-error")
            await _save(response, destination, max_bytes)
            return
        finally:
            await response.aclose()
    raise FetchFailed(f"the image URL redirects more than {max_redirects} times", code="too-many-redirects")


async def _save(response: httpx.Response, destination: Path, max_bytes: int) -> None:
    declared = response.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        raise FetchFailed(f"the image is larger than {max_bytes} bytes", code="file-too-large")
    received = 0
    async with aiofiles.open(destination, "wb") as out:
        async for block in response.aiter_bytes():
            received += len(block)
            if received > max_bytes:
                raise FetchFailed(f"the image is larger than {max_bytes} bytes", code="file-too-large")
            await out.write(block)
