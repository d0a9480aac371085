"""The JSON chunk API takes `file` from the body's bytes without parsing it (server/bodies.py
`Literal`): whatever a client sends, the request must be read exactly as json.loads reads it.

Each body is read both ways: json.loads of the whole body then the chunk API's base64 rules, and
the literal way (with json.loads of the whole body only where `Literal.take` declines). The two
must agree on the document and the bytes, or on the refusal and its code."""

from __future__ import annotations

import asyncio
import base64
import json
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from server import bodies
from tests.unit._targets import BadRequest, chunk_base64, chunk_file_literal

PAYLOAD = base64.b64encode(bytes(range(256)) * 3).decode()


def _slow(raw: bytes) -> object:
    try:
        document = json.loads(raw.decode("utf-8-sig"))
    except ValueError:
        return "invalid-json"
    if not isinstance(document, dict) or type(document.get("file")) is not str:
        return ("no-file", document)
    try:
        data = chunk_base64(document.pop("file"))
    except BadRequest as exc:
        return (exc.code, document)
    return (data, document)


def _literal(raw: bytes) -> tuple[bool, object]:
    # In a reused buffer longer than the body: what follows the body is never read.
    document = chunk_file_literal.take(bytearray(raw) + b'"}, "file": "QUJD"}', len(raw))
    if document is None:
        return False, _slow(raw)
    try:
        data = chunk_base64(document.pop("file"))
    except BadRequest as exc:
        return True, (exc.code, document)
    return True, (data, document)


def _same(raw: bytes) -> bool:
    taken, answer = _literal(raw)
    assert answer == _slow(raw), raw[:200]
    return taken


def test_a_clients_chunk_body_is_taken_the_literal_way_and_read_as_json_loads_reads_it():
    fields = {"file_name": "me.jpg", "content_type": "image/jpeg", "is_chunk": True, "chunk_index": 2}
    body = json.dumps(fields)[:-1] + f', "file": "{PAYLOAD}", "total_chunks": 4}}'
    assert _same(body.encode())
    assert _same(json.dumps({"file": PAYLOAD, **fields}).encode())
    assert _same(b"\xef\xbb\xbf" + json.dumps({"file": PAYLOAD}).encode())


@pytest.mark.parametrize(
    "body",
    [
        # the key is inside another string, escaped
        '{"file_name": "a\\", \\"file\\": \\"", "file": "' + PAYLOAD + '"}',
        '{"file_name": "a\\\\", "file": "' + PAYLOAD + '"}',
        # a repeated key: json.loads keeps the last
        '{"file": "' + PAYLOAD + '", "file": "aGVsbG8="}',
        '{"file": "' + PAYLOAD + '", "file": ""}',
        '{"file": "aGVsbG8=", "file": "' + PAYLOAD + '"}',
        # escapes inside the base64 text
        '{"file": "' + PAYLOAD[:40] + "\\/" + PAYLOAD[42:] + '"}',
        '{"file": "' + PAYLOAD[:40] + "\\n" + PAYLOAD[40:] + '"}',
        '{"file": "' + PAYLOAD[:40] + "\\u0041" + PAYLOAD[41:] + '"}',
        # raw control characters, spaces, non-ASCII inside it (invalid JSON, or not base64)
        '{"file": "' + PAYLOAD[:40] + "\n" + PAYLOAD[40:] + '"}',
        '{"file": "' + PAYLOAD[:40] + "\t" + PAYLOAD[40:] + '"}',
        '{"file": "' + PAYLOAD[:40] + " " + PAYLOAD[40:] + '"}',
        '{"file": "' + PAYLOAD[:40] + "é" + PAYLOAD[40:] + '"}',
        # not canonical base64
        '{"file": "aGVsbG9="}',
        '{"file": "aGVsbG8=="}',
        '{"file": ""}',
        # the document around it is not valid, or not an object
        '{"file": "' + PAYLOAD + '"',
        '{"file": "' + PAYLOAD + '",}',
        '{"file": "' + PAYLOAD + '", "n": NaN}',
        '{"n": NaN, "file": "' + PAYLOAD + '"}',
        '{"a": {"file": "x"}, "file": "' + PAYLOAD + '"}',
        '{"a": 1 "file": "' + PAYLOAD + '"}',
        '{"a": 01, "file": "' + PAYLOAD + '"}',
        '[{"file": "' + PAYLOAD + '"}]',
        '{"file": "' + PAYLOAD + '"} {}',
        '{"fil\\u0065": "' + PAYLOAD + '"}',
        '{"file": 5}',
    ],
)
def test_bodies_that_are_not_plain_are_read_as_json_loads_reads_them(body):
    _same(body.encode())


_MEMBERS = st.sampled_from(
    [
        '"a": 1',
        '"a": 1.5e3',
        '"b": "x"',
        '"file_name": "a\\"b"',
        '"c": "\\\\"',
        '"d": true',
        '"e": null',
        '"file": "aGVsbG8="',
        '"f": [1, {"file": "x"}]',
        '"g": "\\"file\\": \\""',
        '"h": NaN',
        '"i": "\n"',
        '"file": 1',
        '"j": -',
        '"fi',
    ]
)
_TEXT = st.sampled_from([PAYLOAD, "aGVsbG8=", "aGVsbG9=", "", "aGVs\\nbG8=", "aGVs bG8=", "aGVs\\/", "=", "aGVsbG8=="])


@settings(max_examples=400, deadline=None)
@given(
    before=st.lists(_MEMBERS, max_size=4),
    after=st.lists(_MEMBERS, max_size=3),
    text=_TEXT,
    space=st.sampled_from(["", " ", "\n\t", "\r\n "]),
    end=st.sampled_from(["}", "", "}x", ",}", "} "]),
)
def test_any_mix_of_members_is_read_as_json_loads_reads_it(before, after, text, space, end):
    members = [*before, f'"file"{space}:{space}"{text}"', *after]
    _same((space + "{" + space + ("," + space).join(members) + space + end).encode())


async def test_a_large_body_cancelled_while_its_file_is_decoded_keeps_its_buffer_from_the_next_body():
    # A large `file` is decoded in a worker thread (server/bodies.py). A request cancelled then
    # (its client went, the server is stopping) must not give its buffer to the next body while
    # the worker still reads it: the next body would be written under the decoder's view (or fail
    # to resize it). The decoder is held mid-way by an event to cancel the request there.
    decoding, release, buffers = threading.Event(), threading.Event(), []

    def decode(view: memoryview) -> bytes:
        buffers.append(view.obj)
        if len(buffers) == 1:  # the first request's
            decoding.set()
            release.wait(10)
        return base64.b64decode(view, validate=True)

    literal = bodies.Literal("file", decode)
    body = json.dumps({"chunk_index": 0, "file": base64.b64encode(bytes(300_000)).decode()}).encode()
    pace = bodies.BodyPace(timeout=10)
    reading = asyncio.ensure_future(bodies.read_json_object(_request(body), 400_000, pace, literal=literal))
    try:
        assert await asyncio.to_thread(decoding.wait, 10)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        # The next body of that size gets a buffer of its own, and is read whole.
        document = await bodies.read_json_object(_request(body), 400_000, pace, literal=literal)
        assert len(buffers) == 2 and buffers[1] is not buffers[0]
        assert document == {"chunk_index": 0, "file": bytes(300_000)}
    finally:
        release.set()


def _request(body: bytes) -> Request:
    """A Starlette request whose ASGI `receive` hands over `body` in one message."""
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive)
