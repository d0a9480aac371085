"""Every Redis key of the upload core, in one place.

All keys live under one prefix (`avs` unless configured), so several servers or test runs can
share a Redis. Redis Cluster places a key by the part inside `{...}` (its hash tag): keys that
one transaction or script touches together share a tag, so they land in the same slot.

    <p>:upload:{ID}            the session record (msgpack), TTL until it expires
    <p>:gone:{ID}              a tombstone, so an expired or abandoned upload answers "gone", not "unknown"
    <p>:lock:{ID}              the one-writer lease of an upload
    <p>:stop:{ID}              a competing request's "please let go" flag for that lease
    <p>:chunks:{ID}            hash of a chunked upload's received chunks: index -> "size:sha256"
                               (its own key, so recording a chunk costs O(1) bytes, not a rewrite)
    <p>:alias:<hash>           a client's own name for an upload (owner + file name, or its upload_id) -> ID;
                               only ever read or changed on its own, so it needs no tag
    <p>:expiry                 sorted set ID -> expires_at, walked by the reaper; one key for all uploads,
                               so it is never part of a per-upload transaction (see SessionStore)
    <p>:quota:{U}:open         sorted set of a user's unfinished uploads -> expires_at
    <p>:quota:{U}:bytes        hash of a user's unfinished uploads -> bytes they hold
    <p>:events                 stream of events (chunks/outbox.py) awaiting delivery to webhooks; XADDed
                               inside per-upload transactions when webhooks are configured, so on Redis
                               Cluster those transactions would span two slots: use one Redis for events
    <p>:events:dead            stream of events whose delivery was given up (the dead letters)
    <p>:settled:{U}            sorted set of a user's finished or failed uploads -> when they settled
                               (only the newest few keep their records; see SessionStore.remember_settled)
    <p>:completable            sorted set of uploads whose bytes are all in but which are not settled
                               -> since when; walked by the completion sweeper (one key for all uploads)

`ID` is an upload id, `U` the first 32 hex digits of the sha256 of the owner's id (owner ids
are arbitrary strings and may contain braces). These strings are what running deployments
hold: changing one orphans their sessions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "avs"

    def session(self, upload_id: str) -> str:
        return f"{self.prefix}:upload:{{{upload_id}}}"

    def tombstone(self, upload_id: str) -> str:
        return f"{self.prefix}:gone:{{{upload_id}}}"

    def lock(self, upload_id: str) -> str:
        return f"{self.prefix}:lock:{{{upload_id}}}"

    def stop(self, upload_id: str) -> str:
        return f"{self.prefix}:stop:{{{upload_id}}}"

    def chunks(self, upload_id: str) -> str:
        return f"{self.prefix}:chunks:{{{upload_id}}}"

    @property
    def lock_pattern(self) -> str:
        """A SCAN pattern matching every upload lock under this prefix."""
        return f"{self.prefix}:lock:*"

    def alias(self, owner: str, alias: str) -> str:
        digest = hashlib.sha256(f"{owner}\0{alias}".encode()).hexdigest()
        return f"{self.prefix}:alias:{digest}"

    @property
    def expiry(self) -> str:
        return f"{self.prefix}:expiry"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def dead_events(self) -> str:
        return f"{self.prefix}:events:dead"

    def quota_open(self, owner: str) -> str:
        return f"{self.prefix}:quota:{{{_owner_tag(owner)}}}:open"

    def quota_bytes(self, owner: str) -> str:
        return f"{self.prefix}:quota:{{{_owner_tag(owner)}}}:bytes"

    def settled(self, owner: str) -> str:
        return f"{self.prefix}:settled:{{{_owner_tag(owner)}}}"

    @property
    def completable(self) -> str:
        return f"{self.prefix}:completable"


def _owner_tag(owner: str) -> str:
    return hashlib.sha256(owner.encode()).hexdigest()[:32]
