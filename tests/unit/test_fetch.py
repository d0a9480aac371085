"""Which addresses and URLs a server-side fetch (POST {"url"} of the profile-image API) may reach."""

from __future__ import annotations

import ipaddress

import pytest

from server.fetch import AddressPolicy, InvalidUrl, check_url


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
    ],
)
def test_internal_addresses_are_refused(address):
    assert not AddressPolicy(()).permits(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_permitted(address):
    assert AddressPolicy(()).permits(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b::c0a8:101",  # NAT64 of 192.168.1.1
        "64:ff9b:1::a9fe:a9fe",  # local-use NAT64 of 169.254.169.254
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1 (obfuscated)
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1
    ],
)
def test_ipv6_relays_of_internal_ipv4_addresses_are_refused(address):
    assert not AddressPolicy(()).permits(ipaddress.ip_address(address))


def test_configured_networks_are_permitted_and_nothing_more():
    policy = AddressPolicy(("127.0.0.0/8",))
    assert policy.permits(ipaddress.ip_address("127.0.0.1"))
    assert policy.permits(ipaddress.ip_address("::ffff:127.0.0.2"))
    assert not policy.permits(ipaddress.ip_address("10.0.0.1"))
    assert not policy.permits(ipaddress.ip_address("::1"))


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/a",
        "gopher://x/",
        "http://",
        "//example.com/a.jpg",
        "http://user:pw@example.com/a.jpg",
        "not a url",
    ],
)
def test_only_plain_http_urls_are_accepted(url):
    with pytest.raises(InvalidUrl):
        check_url(url)


def test_http_and_https_urls_are_accepted():
    assert check_url("https://example.com/a.jpg").host == "example.com"
    assert check_url("http://[2001:db8::1]:8080/a.jpg").port == 8080
