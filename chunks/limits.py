"""How big an upload may get, how long it lives, and the checks a request must pass against that."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidRequest, UploadTooLarge

MiB = 1024 * 1024


@dataclass(frozen=True)
class UploadLimits:
    max_upload_bytes: int = 20 * MiB
    max_chunk_bytes: int = 8 * MiB
    max_chunks: int = 10_000
    expire_seconds: int = 24 * 3600
    # A stream upload is fsynced and its offset recorded every this many bytes.
    checkpoint_bytes: int = 1 * MiB
    # The completion lease: a completer renews it every third of this while it works, so one
    # that died is taken over this long after its last renewal.
    claim_seconds: float = 10.0
    # Finished or failed uploads whose records a user keeps (the oldest go first); 0 = all.
    keep_settled: int = 20

    def check_total_chunks(self, total_chunks: int) -> None:
        if not 1 <= total_chunks <= self.max_chunks:
            raise InvalidRequest(f"total_chunks must be between 1 and {self.max_chunks}", code="invalid-total-chunks")

    def check_length(self, length: int) -> None:
        if length < 0:
            raise InvalidRequest("the upload length must not be negative", code="invalid-length")
        if length > self.max_upload_bytes:
            raise UploadTooLarge(f"uploads are limited to {self.max_upload_bytes} bytes")

    def check_chunk(self, total_chunks: int | None, index: int, data: bytes) -> None:
        if total_chunks is None or not 0 <= index < total_chunks:
            raise InvalidRequest(
                f"chunk_index must be between 0 and {(total_chunks or 1) - 1}", code="invalid-chunk-index"
            )
        if len(data) > self.max_chunk_bytes:
            raise UploadTooLarge(f"a chunk may hold at most {self.max_chunk_bytes} bytes", code="chunk-too-large")
        if not data:
            raise InvalidRequest("a chunk must not be empty", code="empty-chunk")

    def check_room(self, held: int, more: int) -> None:
        """An upload holding `held` bytes may take `more`."""
        if held + more > self.max_upload_bytes:
            raise UploadTooLarge(f"uploads are limited to {self.max_upload_bytes} bytes")
