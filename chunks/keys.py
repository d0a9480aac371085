"""Every Redis key of the upload core, in one place.

All keys live under one prefix (`avs` unless configured), so several servers or test runs can
share a Redis. Redis Cluster places a key by the part inside `{...}` (its hash tag): keys that
one transaction or script touches together share a tag, so they land in the same slot.

    <p>:upload:{ID}            the session record (msgpack), TTL until it expires
    <p>:gone:{ID}              a tombstone, so an expired or abandoned upload answers "gone", not "unknown"
    <p>:lock:{ID}              the one-writer lease of an upload
    <p>:stop:{ID}              a competing request's "please let go" flag for that lease
    <p>:chunks:{ID}            hash of a chunked upload's received chunks: index -> "size:digest:place"
                               (its own key, so recording a chunk costs O(1) bytes, not a rewrite)
    <p>:alias:<hash>           a client's own name for an upload (owner + file name, or its upload_id) -> ID;
                               only ever read or changed on its own, so it needs no tag
    <p>:expiry                 sorted set ID -> expires_at, walked by the reaper; one key for all uploads,
                               so it is never part of a per-upload transaction (see SessionStore)
    <p>:quota:{U}:open         sorted set of a user's unfinished uploads -> expires_at
    <p>:quota:{U}:bytes        hash of a user's unfinished uploads -> bytes they hold
    <p>:outbox:{ID}            list of an upload's events staged in the transaction that changed it
                               (chunks/outbox.py), until relayed to the events stream just after
    <p>:outbox:pending         sorted set ID -> when its events were staged; written before the
                               transaction, so the reaper relays events whose relay a crash lost
    <p>:events                 stream of events (chunks/outbox.py) awaiting delivery to webhooks;
                               never written inside a per-upload transaction (see below)
    <p>:events:dead            stream of events whose delivery was given up (the dead letters)
    <p>:settled:{U}            sorted set of a user's finished or failed uploads -> when they settled
                               (only the newest few keep their records; see settled.py)
    <p>:completable            sorted set of uploads whose bytes are all in but which are not settled
                               -> since when; walked by the completion sweeper (one key for all uploads)

    <p>:replicated             written just before WAIT (redis.wait_replicas), so WAIT counts replicas
                               that have everything up to this point (SessionStore.replicated)

Redis Cluster: every MULTI/EXEC and Lua script touches keys of one hash tag only: an upload's
(`{ID}`: session, chunks, tombstone, lock, stop, outbox) or a user's (`{U}`: quotas, settled),
or a single key (alias, rate limit, pending fetch, gravatar choice). What a change needs of a
key for every upload (expiry, completable, outbox:pending, events) is a separate command,
ordered so that a crash between the steps leaves only what a background pass repairs:
  - expiry: indexed before a session is written and dropped after it is deleted; an id without
    a session, or an old score, is what the reaper already expects (SessionStore).
  - completable: listed before the record says all bytes are in and dropped after it settles;
    the completion sweeper drops entries whose session does not await completion.
  - events: staged in the upload's outbox list inside its transaction, noted in outbox:pending
    before it, relayed to the stream after it; the reaper relays what a crash left staged
    (at least once: a crash during the relay can deliver an event twice, with one event id).
  - events:dead: a given-up event is added to the dead letters before it is acknowledged on
    the stream (server/events.py), so a crash in between parks it twice rather than losing it.
Per-slot sharded keys were the other way; they would make the reaper and the delivery loop
walk every slot, where these ordered steps keep one key each and cost one command more.

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

    def outbox(self, upload_id: str) -> str:
        return f"{self.prefix}:outbox:{{{upload_id}}}"

    @property
    def outbox_pending(self) -> str:
        return f"{self.prefix}:outbox:pending"

    @property
    def replicated(self) -> str:
        return f"{self.prefix}:replicated"

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
