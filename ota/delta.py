"""Binary deltas between model artifacts: standard BSDIFF40 patches (bsdiff4), checked on both ends.

A patch is produced with ``bsdiff4.diff`` and is byte-for-byte the format the stock ``bspatch`` reads.
Applying one on a device is defensive: the base hash is checked first, the header and the three
bzip2 blocks are validated with bounded decompression (a 1 KB patch cannot make the device allocate
gigabytes), the control records are checked for consistency, and the result's length and hash are
checked against the signed manifest before anyone writes it to a slot.

Ship policy (:class:`DeltaPolicy`): a delta is shipped only when it is smaller than ``max_fraction``
of the full artifact compressed with zlib level 9 (what an agent would otherwise download with
HTTP ``Content-Encoding: deflate``; zlib is also what an MCU can inflate cheaply). Otherwise the
device downloads the full artifact.
"""

from __future__ import annotations

import bz2
import hashlib
import zlib
from dataclasses import dataclass

import bsdiff4

from ota.errors import HashMismatchError, LengthMismatchError, PatchBaseMismatchError, PatchFormatError
from ota.manifest import MAX_ARTIFACT_BYTES

MAGIC = b"BSDIFF40"
HEADER_BYTES = 32
CONTROL_RECORD_BYTES = 24
MAX_CONTROL_BYTES = 64 * 1024 * 1024
FULL_COMPRESSOR = "zlib-9"


def compressed_size(data: bytes) -> int:
    """Size of the full artifact as it would travel compressed (zlib, level 9)."""
    return len(zlib.compress(data, 9))


@dataclass(frozen=True)
class DeltaPolicy:
    """Ship a delta only if ``len(patch) < max_fraction * compressed_size(full artifact)``."""

    max_fraction: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.max_fraction <= 1.0:
            raise ValueError("max_fraction must be in (0, 1]")

    def ships(self, patch_length: int, full_compressed_length: int) -> bool:
        return patch_length < self.max_fraction * full_compressed_length


def make_patch(old: bytes, new: bytes) -> bytes:
    """A BSDIFF40 patch turning ``old`` into ``new`` (bsdiff4; readable by the stock ``bspatch``)."""
    return bsdiff4.diff(bytes(old), bytes(new))


@dataclass(frozen=True)
class PatchHeader:
    control_length: int  # compressed
    diff_length: int  # compressed
    new_length: int  # length of the patched result


def _offtin(buf: bytes) -> int:
    """bsdiff's 8-byte sign-magnitude little-endian integer."""
    value = int.from_bytes(buf[:8], "little") & ~(1 << 63)
    return -value if buf[7] & 0x80 else value


def read_patch_header(patch: bytes) -> PatchHeader:
    if len(patch) < HEADER_BYTES:
        raise PatchFormatError(f"patch of {len(patch)} bytes is shorter than the {HEADER_BYTES}-byte header")
    if patch[:8] != MAGIC:
        raise PatchFormatError(f"not a BSDIFF40 patch (magic {patch[:8]!r})")
    lc, ld, ln = _offtin(patch[8:16]), _offtin(patch[16:24]), _offtin(patch[24:32])
    if lc < 0 or ld < 0 or ln < 0:
        raise PatchFormatError("negative length in patch header")
    if HEADER_BYTES + lc + ld > len(patch):
        raise PatchFormatError(f"header announces {lc}+{ld} block bytes; only {len(patch) - 32} present")
    if ln > MAX_ARTIFACT_BYTES:
        raise PatchFormatError(f"patch result of {ln} bytes exceeds the {MAX_ARTIFACT_BYTES}-byte limit")
    return PatchHeader(control_length=lc, diff_length=ld, new_length=ln)


def _bunzip_bounded(block: bytes, limit: int, name: str) -> bytes:
    if not block:
        raise PatchFormatError(f"{name} block is empty")
    dec = bz2.BZ2Decompressor()
    try:
        out = dec.decompress(block, max_length=limit + 1)
    except (OSError, ValueError, EOFError) as exc:
        raise PatchFormatError(f"{name} block is not valid bzip2 ({exc})") from None
    if len(out) > limit:
        raise PatchFormatError(f"{name} block inflates beyond {limit} bytes")
    if not dec.eof or dec.unused_data:
        raise PatchFormatError(f"{name} block is truncated or has trailing data")
    return out


def validate_patch(patch: bytes, *, expected_length: int) -> PatchHeader:
    """Check a patch's structure without applying it; raises PatchFormatError / LengthMismatchError."""
    header = read_patch_header(patch)
    if header.new_length != expected_length:
        raise LengthMismatchError(f"patch produces {header.new_length} bytes; expected {expected_length}")
    n = header.new_length
    a = HEADER_BYTES
    b = a + header.control_length
    c = b + header.diff_length
    control = _bunzip_bounded(patch[a:b], min(CONTROL_RECORD_BYTES * (n + 2), MAX_CONTROL_BYTES), "control")
    diff = _bunzip_bounded(patch[b:c], n, "diff")
    extra = _bunzip_bounded(patch[c:], n, "extra")
    if len(control) % CONTROL_RECORD_BYTES:
        raise PatchFormatError("control block is not a whole number of records")
    sum_x = sum_y = 0
    for i in range(0, len(control), CONTROL_RECORD_BYTES):
        x = _offtin(control[i : i + 8])
        y = _offtin(control[i + 8 : i + 16])
        if x < 0 or y < 0:
            raise PatchFormatError("negative copy length in control block")
        sum_x += x
        sum_y += y
    if sum_x != len(diff) or sum_y != len(extra) or sum_x + sum_y != n:
        raise PatchFormatError("control block does not add up to the diff/extra blocks and result length")
    return header


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def apply_patch(
    base: bytes, patch: bytes, *, base_sha256: str, result_sha256: str, result_length: int
) -> bytes:
    """Apply a BSDIFF40 patch after checking the base, and check the result before returning it.

    Raises only :class:`PatchBaseMismatchError`, :class:`PatchFormatError`, :class:`LengthMismatchError`
    or :class:`HashMismatchError`.
    """
    if sha256_hex(base) != base_sha256.lower():
        raise PatchBaseMismatchError(f"base sha256 {sha256_hex(base)[:16]}… ≠ patch base {base_sha256[:16]}…")
    validate_patch(patch, expected_length=result_length)
    try:
        result = bsdiff4.patch(bytes(base), bytes(patch))
    except (ValueError, OSError, EOFError, MemoryError, OverflowError) as exc:
        raise PatchFormatError(f"patch cannot be applied: {exc}") from None
    if len(result) != result_length:
        raise LengthMismatchError(f"patched result is {len(result)} bytes, manifest says {result_length}")
    if sha256_hex(result) != result_sha256.lower():
        raise HashMismatchError(f"patched result sha256 {sha256_hex(result)[:16]}… ≠ {result_sha256[:16]}…")
    return result
