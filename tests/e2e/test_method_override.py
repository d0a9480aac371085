"""`X-HTTP-Method-Override` on every request to `/files/`, not only on POST.

Proxies and browsers that pass only GET and POST are why tus servers honour the header; a
GET that names OPTIONS, HEAD, PATCH or DELETE must act as that method.
"""

from __future__ import annotations

import pytest

from tests.support.tus import OFFSET_STREAM, TUS, create, head

pytestmark = pytest.mark.client(auth=True)


def override(method: str) -> dict[str, str]:
    return {**TUS, "X-HTTP-Method-Override": method}


def test_get_naming_options_is_an_options(client):
    r = client.get("/files/", headers=override("OPTIONS"))
    assert r.status_code == 204
    assert r.headers["tus-version"] == "1.0.0" and "tus-extension" in r.headers


def test_get_naming_head_patch_and_delete_acts_as_each(client, auth):
    url = create(client, auth, 5)
    assert client.get(url, headers=override("HEAD")).headers["upload-offset"] == "0"
    r = client.request("GET", url, content=b"hel", headers={**override("PATCH"), **OFFSET_STREAM, "Upload-Offset": "0"})
    assert r.status_code == 204 and r.headers["upload-offset"] == "3"
    assert head(client, url, auth).headers["upload-offset"] == "3"
    assert client.get(url, headers=override("DELETE")).status_code == 204
    assert head(client, url, auth).status_code in (404, 410)


def test_a_plain_get_is_still_the_status_resource(client, auth):
    url = create(client, auth, 5)
    assert client.get(url).json()["state"] == "open"
