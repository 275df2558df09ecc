"""Secret shares on the wire: length-prefixed bytes, never pickles, between the parties.

A `libspu.Share` is its meta (a protobuf) and its chunks; both are bytes, so a share
crosses the link as plain data that the receiver rebuilds and SPU validates.
"""

from __future__ import annotations

import struct
from typing import Any

from deepreshape.pi.protocols import load_spu


def _pack(parts: list[bytes]) -> bytes:
    """Length-prefixed parts: peers exchange only bytes and JSON, never pickles."""
    return struct.pack("<I", len(parts)) + b"".join(
        struct.pack("<Q", len(p)) + p for p in parts
    )


def _unpack(data: bytes) -> list[bytes]:
    (n,), pos, parts = struct.unpack_from("<I", data), 4, []
    for _ in range(n):
        (size,) = struct.unpack_from("<Q", data, pos)
        pos += 8
        if pos + size > len(data):
            raise ValueError("truncated message")
        parts.append(data[pos:pos + size])
        pos += size
    return parts


def pack_shares(shares: list[Any]) -> bytes:
    return _pack([_pack([bytes(s.meta), *map(bytes, s.share_chunks)]) for s in shares])


def unpack_shares(data: bytes) -> list[Any]:
    lib = load_spu().libspu
    out = []
    for blob in _unpack(data):
        meta, *chunks = _unpack(blob)
        share = lib.Share()
        share.meta, share.share_chunks = meta, chunks
        out.append(share)
    return out
