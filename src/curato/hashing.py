"""Content hashes: how curato notices that a file changed."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from curato.errors import UnreadableImageError
from curato.imageio import IDX_SCHEME, read_raw

HASH_DIGEST_SIZE = 20


def content_hash(data: bytes) -> str:
    """blake2b-160 hex digest of stored bytes (the catalog's ``content_hash``)."""
    return hashlib.blake2b(data, digest_size=HASH_DIGEST_SIZE).hexdigest()


def text_hash(text: str) -> str:
    """Content hash of a text sample."""
    return content_hash(text.encode("utf-8"))


def _hash_uri(uri: str) -> str | None:
    try:
        return content_hash(read_raw(uri).data)
    except UnreadableImageError:
        return None


def hash_uris(uris: Sequence[str], *, workers: int = 8) -> list[str | None]:
    """Content hash of each uri's stored bytes (None where the file cannot be read).

    Threads suffice: file reads and blake2b on large buffers release the GIL.
    """
    # IDX images are already in memory: a thread hop costs more than hashing 784 bytes
    if len(uris) < 256 or workers <= 1 or all(uri.startswith(IDX_SCHEME) for uri in uris[:64]):
        return [_hash_uri(uri) for uri in uris]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_hash_uri, uris, chunksize=256))
