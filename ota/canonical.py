"""The canonical byte encoding every TinyFleet signature covers.

Canonical form of a signed JSON document (manifest, key certificate, revocation list):

* the JSON object as received, with its top-level ``"signature"`` member removed
  (nested objects — e.g. the embedded key certificate with its own signature — stay in);
* serialised with keys sorted by code point, no insignificant whitespace (``,`` and ``:``
  separators), non-ASCII characters as raw UTF-8 (no ``\\uXXXX`` escapes), encoded as UTF-8;
* numbers are integers only: floats, NaN and Infinity are refused, so there is no float formatting
  to disagree on; duplicate member names are refused (two parsers could pick different ones).

The signer and the verifier both compute this from the parsed object, so a manifest may travel
pretty-printed; the signature is raw Ed25519 over these bytes (``openssl pkeyutl -rawin`` verifies it).
Fields a device does not know (a newer minor schema) are still covered, since the canonical form is
taken from the received object, not from what this version's model keeps.
"""

from __future__ import annotations

import json
from typing import Any

from ota.errors import ManifestFormatError

SIGNATURE_FIELD = "signature"
MAX_DOCUMENT_BYTES = 64 * 1024  # a manifest with 16 deltas is ~5 KB; anything near this is an attack
MAX_NESTING = 8


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ManifestFormatError(f"duplicate member {key!r}")
        obj[key] = value
    return obj


def _refuse_float(text: str) -> Any:
    raise ManifestFormatError(f"non-integer number {text[:20]!r}: signed documents carry integers only")


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_NESTING:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def parse_document(data: bytes, *, what: str = "manifest") -> dict[str, Any]:
    """Parse a signed JSON document strictly; every failure is a :class:`ManifestFormatError`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ManifestFormatError(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ManifestFormatError(f"{what}: {len(data)} bytes exceeds the {MAX_DOCUMENT_BYTES}-byte limit")
    if len(data) == 0:
        raise ManifestFormatError(f"{what}: empty")
    try:
        text = bytes(data).decode("utf-8")
        obj = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_float=_refuse_float,
            parse_constant=_refuse_float,
        )
    except ManifestFormatError as exc:
        raise ManifestFormatError(f"{what}: {exc.message}") from None
    except UnicodeDecodeError as exc:
        raise ManifestFormatError(f"{what}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ManifestFormatError(f"{what}: invalid or truncated JSON ({exc.msg}; char {exc.pos})") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer with > 4300 digits
        raise ManifestFormatError(f"{what}: unparseable ({str(exc)[:80]})") from None
    if not isinstance(obj, dict):
        raise ManifestFormatError(f"{what}: top level must be a JSON object, got {type(obj).__name__}")
    if _depth(obj) > MAX_NESTING:
        raise ManifestFormatError(f"{what}: nested deeper than {MAX_NESTING} levels")
    return obj


def canonical_bytes(document: dict[str, Any]) -> bytes:
    """The bytes a signature covers: the document without its top-level signature, canonical JSON."""
    unsigned = {k: v for k, v in document.items() if k != SIGNATURE_FIELD}
    try:
        return json.dumps(
            unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (UnicodeEncodeError, ValueError, TypeError) as exc:  # lone surrogates, NaN, non-JSON types
        raise ManifestFormatError(f"cannot encode canonically: {str(exc)[:80]}") from None


def encode_signed(document: dict[str, Any]) -> bytes:
    """Wire form: the canonical encoding of the whole document, signature included."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
