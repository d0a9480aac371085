"""Request bodies, streamed: counted against a limit and bounded in time, never buffered whole."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request

from .settings import LimitSettings


class BodyError(Exception):
    """A request body that cannot be taken (400, or the subclass's status in `server.errors`)."""

    code = "invalid-body"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BodyTooLarge(BodyError):
    code = "body-too-large"


class BodyTimeout(BodyError):
    """uvicorn has no request-body timeout: a body that trickles in is ended here."""

    code = "body-timeout"


class Disconnected(BodyError):
    code = "client-disconnected"


def declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise BodyError("Content-Length is not a valid number")
    return int(value)


@dataclass(frozen=True)
class BodyPace:
    """How long a body may take: `timeout` seconds in all, and (when `min_rate` is set) at least
    `min_rate` bytes per second on average once `grace` seconds have passed."""

    timeout: float
    min_rate: float = 0.0
    grace: float = 0.0

    @classmethod
    def of(cls, limits: LimitSettings) -> BodyPace:
        return cls(limits.body_timeout_seconds, float(limits.min_body_bytes_per_second), limits.body_rate_grace_seconds)


async def stream(request: Request, limit: int, pace: BodyPace) -> AsyncIterator[bytes]:
    """Yield the body's blocks; BodyTooLarge past `limit`, BodyTimeout when it is slower than `pace`."""
    length = declared_length(request)
    if length is not None and length > limit:
        raise BodyTooLarge(f"the body is larger than {limit} bytes")
    timeout, min_rate, grace = pace.timeout, pace.min_rate, pace.grace
    started = time.monotonic()
    deadline = started + timeout
    received = 0
    blocks = request.stream().__aiter__()
    while True:
        # The next block must come before the total deadline, and soon enough that the average
        # rate so far stays above the minimum (a slow-loris body holds a worker and a lock).
        due = deadline if min_rate <= 0 else min(deadline, started + grace + received / min_rate)
        remaining = due - time.monotonic()
        if remaining <= 0:
            raise _timeout(timeout, min_rate, due < deadline)
        try:
            # A timer per block, not wait_for's task per block (and the loop turn it takes to
            # start). Only around the receive: a timer spanning the `yield` would cancel what
            # the consumer does with the block.
            async with asyncio.timeout(remaining):
                block = await blocks.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise _timeout(timeout, min_rate, due < deadline) from None
        except ClientDisconnect:
            raise Disconnected("the client went away before sending the whole body") from None
        received += len(block)
        if received > limit:
            raise BodyTooLarge(f"the body is larger than {limit} bytes")
        if block:
            yield block


def _timeout(timeout: float, min_rate: float, too_slow: bool) -> BodyTimeout:
    if too_slow:
        return BodyTimeout(f"the body arrived slower than {min_rate:g} bytes per second")
    return BodyTimeout(f"the body did not arrive within {timeout:g} seconds")


async def read(request: Request, limit: int, pace: BodyPace) -> bytearray:
    """The whole body, for protocols that make it one small document (a JSON chunk).

    Gathered into one buffer, sized up front when the length is declared, so the body is held
    once (a list of blocks joined at the end is held twice)."""
    length = declared_length(request)
    body = bytearray(length if length is not None and length <= limit else 0)
    filled = await _gather(request, limit, pace, body)
    del body[filled:]
    return body


async def _gather(request: Request, limit: int, pace: BodyPace, body: bytearray) -> int:
    """Copy the body into `body` from its start (growing it past its end if need be); its length."""
    filled = 0
    async for block in stream(request, limit, pace):
        end = filled + len(block)
        if end <= len(body):
            body[filled:end] = block
        else:
            del body[filled:]
            body += block
        filled = end
    return filled


class _SpareBuffers:
    """Buffers of JSON bodies read before, kept for the next ones. A 1.4 MB buffer made anew for
    each 1 MiB chunk is zeroed and, once the allocator has given the memory back to the system,
    faulted in again page by page: about a tenth of such a chunk's CPU (docs/performance.md).
    At most `keep` buffers of at most `largest` bytes each are kept (idle memory, bounded)."""

    def __init__(self, keep: int, largest: int) -> None:
        self.keep, self.largest = keep, largest
        self._free: list[bytearray] = []

    def take(self, size: int) -> bytearray:
        """A buffer of at least `size` bytes: the smallest kept one that fits, else a new one."""
        fits = [b for b in self._free if len(b) >= size]
        if not fits:
            return bytearray(size)
        best = min(fits, key=len)
        self._free.remove(best)
        return best

    def give(self, buffer: bytearray) -> None:
        """Keep `buffer` for a later body: nothing may still hold a view of it."""
        if len(buffer) > self.largest:
            return
        self._free.append(buffer)
        if len(self._free) > self.keep:
            self._free.remove(min(self._free, key=len))


_SPARE = _SpareBuffers(keep=4, largest=4 * 1024 * 1024)
# Bodies up to this size have their literal taken in the event loop: decoding the 85 KB of a
# 64 KiB chunk takes ~10 us, less than a worker-thread hop; a 1 MiB chunk's 1.4 MB took ~0.25-0.5
# ms of the loop's time under load (docs/performance.md).
_TAKE_IN_LOOP = 256 * 1024


class InvalidJson(BodyError):
    code = "invalid-json"


class ServerBusy(BodyError):
    """The process's memory budget for bodies is spent (503 with Retry-After)."""

    code = "server-busy"
    retry_after = 1


# Room for the JSON around a base64 payload: field names, a file name, numbers.
_JSON_OVERHEAD = 64 * 1024
# A JSON body costs about twice its size while it is parsed (see read_json_object).
_JSON_COST = 2


def json_body_limit(payload_limit: int) -> int:
    """The largest JSON body that carries `payload_limit` bytes as base64."""
    return (payload_limit + 2) // 3 * 4 + _JSON_OVERHEAD


class MemoryBudget:
    """Bytes of memory a process may hold for request bodies at once. A request takes its share
    before it reads its body; one that cannot have it within `wait` seconds is refused with
    ServerBusy, so many large bodies at once cannot take the process past the budget."""

    def __init__(self, budget: int, wait: float):
        self.budget, self.wait = budget, wait
        self.held = 0
        self._freed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        # One body larger than the whole budget may still go, alone: it would never fit otherwise.
        size = min(size, self.budget)
        async with self._freed:
            if self.held + size > self.budget:
                try:
                    await asyncio.wait_for(self._freed.wait_for(lambda: self.held + size <= self.budget), self.wait)
                except TimeoutError:
                    raise ServerBusy("the server is handling too many large requests; try again shortly") from None
            self.held += size
        try:
            yield
        finally:
            async with self._freed:
                self.held -= size
                self._freed.notify_all()


async def read_json_object(
    request: Request,
    payload_limit: int,
    pace: BodyPace,
    budget: MemoryBudget | None = None,
    *,
    literal: Literal | None = None,
) -> dict[str, Any]:
    """A JSON object body carrying at most `payload_limit` bytes as base64 (one small document).

    Memory: the raw body is decoded to text and dropped before parsing, so at most two copies
    live at once (raw + text, then text + the parsed base64 string). Under `budget` the request
    holds twice its declared length (or twice the limit, when undeclared) while it does so.

    NaN and Infinity are refused; so is anything `json.loads` cannot take, which includes
    bad UTF-8 and integers too long to convert (a ValueError, not a JSONDecodeError).

    `literal`: one large string value taken from the body's bytes without parsing it (see
    `Literal`); the answer is the same document `json.loads` would make, with that value decoded."""
    limit = json_body_limit(payload_limit)
    if budget is None:
        return await _read_json_object(request, limit, pace, literal)
    length = declared_length(request)
    try:
        async with budget.hold(_JSON_COST * min(limit, length if length is not None else limit)):
            return await _read_json_object(request, limit, pace, literal)
    except ServerBusy:
        # Read the body and drop it, block by block, before answering: a client that is still
        # sending when the server closes gets a reset, not the 503 that tells it to retry.
        async for _ in stream(request, limit, pace):
            pass
        raise


async def _read_json_object(request: Request, limit: int, pace: BodyPace, literal: Literal | None) -> dict[str, Any]:
    length = declared_length(request)
    if literal is None or length is None or length > min(limit, _SPARE.largest):
        raw = await read(request, limit, pace)
        found = literal.take(raw, len(raw)) if literal is not None else None
        if found is not None:
            return found
        text = _text(raw, len(raw))
        del raw  # held once: the raw body or its text, then the text or the document
        return _loads(text)
    # Neither the document nor an error keeps a view of the buffer (Literal.take, _text): it
    # is given back before json.loads, which holds the text and the document as above.
    raw, idle = _SPARE.take(length), True
    try:
        filled = await _gather(request, limit, pace, raw)
        if filled <= _TAKE_IN_LOOP:
            found = literal.take(raw, filled)
        else:
            # A large value is decoded in a worker thread (pybase64 lets go of the GIL), off the
            # event loop. Were this request cancelled meanwhile, the buffer would still be read
            # there: it is not given back to another body then (nor resized under the view).
            idle = False
            found = await asyncio.to_thread(literal.take, raw, filled)
            idle = True
        if found is not None:
            return found
        text = _text(raw, filled)
    finally:
        if idle:
            _SPARE.give(raw)
    return _loads(text)


def _text(raw: bytearray, size: int) -> str:
    try:
        # utf-8-sig: a leading BOM is tolerated, as json.loads tolerates it in bytes.
        with memoryview(raw) as view, view[:size] as body:
            return str(body, "utf-8-sig")
    except ValueError:
        raise InvalidJson("the body must be a JSON object") from None


def _loads(text: str) -> dict[str, Any]:
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise InvalidJson("the body must be a JSON object") from None
    if not isinstance(document, dict):
        raise InvalidJson("the body must be a JSON object")
    return document


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# JSON whitespace, a string token (its escapes are only stepped over: json.loads judges them),
# and the scalars a flat object's members may have before the literal's key.
_WS = rb"[ \t\r\n]*"
_STRING = rb'"(?:[^"\\]|\\.)*"'
_SCALAR = rb"(?:" + _STRING + rb"|[-+.0-9eE]+|true|false|null)"
# The literal's key is looked for in the body's first bytes only: a regular expression over a
# whole 1.4 MB body would cost more than the parse it saves.
_LITERAL_WINDOW = 4096


class Literal:
    """One string member of a JSON object body taken from the raw bytes, not parsed.

    `json.loads` scans a string a character at a time: the 1.4 MB of base64 text of a 1 MiB
    chunk cost 2.3 ms to parse and 0.15 ms more to decode as UTF-8, most of a chunk's CPU
    (docs/performance.md). When the object is flat up to `key` (strings, numbers, true, false,
    null), the value of `key` is the bytes up to the next quote. The rest of the body, with
    that value cut out to "", is parsed by json.loads as before, and `decode` turns the cut
    bytes into the member's value.

    Why the document is then the one json.loads would make of the whole body: the prefix is
    tokenized here as JSON tokenizes it, so the cut starts just inside a string token; `decode`
    must raise ValueError unless every byte is one JSON writes as itself (printable ASCII but
    the quote and the backslash), so the token ends at the next quote and means exactly those
    bytes; the body with the token emptied is then valid JSON exactly when the whole one is.
    The object may not repeat a key (json.loads keeps the last of a repeated key, so which one
    was cut would matter). Whenever any of this does not hold, the whole body goes to
    json.loads as before: a refusal always comes from there, with its usual answer."""

    def __init__(self, key: str, decode: Callable[[memoryview], Any]) -> None:
        self.key, self.decode = key, decode
        member = json.dumps(key).encode() + _WS + b":" + _WS + b'"'
        pair = _STRING + _WS + b":" + _WS + _SCALAR + _WS + b"," + _WS
        self._prefix = re.compile(rb"(?:\xef\xbb\xbf)?" + _WS + rb"\{" + _WS + rb"(?:" + pair + rb")*?" + member, re.S)

    def take(self, raw: bytearray, size: int) -> dict[str, Any] | None:
        """The document in raw[:size], or None when the fast way does not apply (then json.loads
        all of it). `decode` must not keep the view it is given: it is released after the call."""
        found = self._prefix.match(raw, 0, min(size, _LITERAL_WINDOW))
        if found is None:
            return None
        start = found.end()
        end = raw.find(b'"', start, size)
        if end < 0:
            return None
        rest = raw[:start] + raw[end:size]
        repeated = False

        def pairs(members: list[tuple[str, Any]]) -> dict[str, Any]:
            nonlocal repeated
            made = dict(members)
            repeated |= len(made) != len(members)
            return made

        try:
            document = json.loads(rest.decode("utf-8-sig"), parse_constant=_reject_constant, object_pairs_hook=pairs)
        except (ValueError, RecursionError):
            return None
        if repeated or not isinstance(document, dict) or document.get(self.key) != "":
            return None
        try:
            with memoryview(raw) as view, view[start:end] as value:
                document[self.key] = self.decode(value)
        except ValueError:
            return None
        return document
