"""Property-based fuzzing: the manifest parser and the patch applier raise only named OTA errors."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ota import keys
from ota.delta import apply_patch, make_patch
from ota.errors import OtaError
from ota.release import PreviousArtifact, ReleaseSigner, build_release, sign_manifest_document
from ota.revocation import build_revocation_list
from ota.trust import DeviceTrust, accept_revocations, verify_manifest

FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ROOT = keys.generate_private_key()
SIGNER = ReleaseSigner.certified_by(ROOT, not_before=NOW - timedelta(days=1))
OLD = os.urandom(4000)
NEW = OLD[:1000] + os.urandom(40) + OLD[1040:]
VALID = build_release(
    NEW,
    model="kws",
    version="1.1.0",
    counter=2,
    hardware_classes=["esp32-s3"],
    variant="full_int8",
    signer=SIGNER,
    previous=[PreviousArtifact("1.0.0", 1, OLD)],
    created=NOW - timedelta(hours=1),
).manifest_bytes
VALID_DOC: dict[str, Any] = json.loads(VALID)
PATCH = make_patch(OLD, NEW)
DEVICE = DeviceTrust(
    root_public_keys=[keys.raw_public_key(ROOT)], hardware_class="esp32-s3", installed_counter=1
)


def _only_named_errors(fn: Any, *args: Any, **kw: Any) -> None:
    # every refusal is named; anything else propagates and fails the test
    with contextlib.suppress(OtaError):
        fn(*args, **kw)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.text(max_size=70)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


@FUZZ
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(data: bytes) -> None:
    _only_named_errors(verify_manifest, data, DEVICE, now=NOW)


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 7)), min_size=1, max_size=6),
    st.integers(0, len(VALID)),
)
def test_bit_flipped_and_truncated_manifest(flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(VALID)
    for pos, bit in flips:
        data[pos] ^= 1 << bit
    _only_named_errors(verify_manifest, bytes(data[: max(cut, len(VALID) - 50)]), DEVICE, now=NOW)
    _only_named_errors(verify_manifest, bytes(data), DEVICE, now=NOW)


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(VALID_DOC)), json_values, min_size=1, max_size=4))
def test_well_signed_manifest_with_arbitrary_field_values(changes: dict[str, Any]) -> None:
    """Signed properly, so the fuzz reaches field validation and the trust rules behind it."""
    doc = {**VALID_DOC, **changes}
    try:
        data = sign_manifest_document(doc, SIGNER)
    except OtaError:
        return  # e.g. a float the canonical encoder refuses to sign
    _only_named_errors(verify_manifest, data, DEVICE, now=NOW)


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(VALID_DOC["deltas"][0])), json_values, min_size=1, max_size=3))
def test_well_signed_manifest_with_arbitrary_delta_entries(changes: dict[str, Any]) -> None:
    doc = {**VALID_DOC, "deltas": [{**VALID_DOC["deltas"][0], **changes}]}
    try:
        data = sign_manifest_document(doc, SIGNER)
    except OtaError:
        return
    _only_named_errors(verify_manifest, data, DEVICE, now=NOW)


REVOCATION = build_revocation_list(ROOT, serial=2, revoked_key_ids=["ab" * 32])


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, len(REVOCATION) - 1), st.integers(0, 7)), max_size=4),
    st.binary(max_size=40),
)
def test_revocation_list_parser(flips: list[tuple[int, int]], junk: bytes) -> None:
    data = bytearray(REVOCATION)
    for pos, bit in flips:
        data[pos] ^= 1 << bit
    _only_named_errors(accept_revocations, bytes(data) + junk, DEVICE)


def _apply(patch: bytes) -> None:
    apply_patch(
        OLD,
        patch,
        base_sha256=hashlib.sha256(OLD).hexdigest(),
        result_sha256=hashlib.sha256(NEW).hexdigest(),
        result_length=len(NEW),
    )


@FUZZ
@given(st.binary(max_size=600))
def test_patch_applier_arbitrary_bytes(tail: bytes) -> None:
    _only_named_errors(_apply, b"BSDIFF40" + tail)


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, len(PATCH) - 1), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, len(PATCH)),
)
def test_patch_applier_mutated_patch(edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(PATCH)
    for pos, value in edits:
        data[pos] = value
    _only_named_errors(_apply, bytes(data))
    _only_named_errors(_apply, bytes(data[:cut]))


def _offtout(v: int) -> bytes:
    return (abs(v) | (1 << 63 if v < 0 else 0)).to_bytes(8, "little")


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 3000), st.integers(-(2**40), 2**40)), max_size=6),
    st.binary(max_size=3000),
    st.binary(max_size=3000),
    st.booleans(),
)
def test_patch_applier_structurally_valid_but_hostile_control(
    control: list[tuple[int, int, int]], diff: bytes, extra: bytes, consistent: bool
) -> None:
    """Well-formed bzip2 blocks carrying hostile control records (e.g. seeks far outside the base)."""
    import bz2

    if consistent:  # make the sums add up so the records reach bsdiff4's C patcher
        diff = (diff * 2)[: sum(x for x, _, _ in control)].ljust(sum(x for x, _, _ in control), b"\0")
        extra = (extra * 2)[: sum(y for _, y, _ in control)].ljust(sum(y for _, y, _ in control), b"\0")
    n = sum(x + y for x, y, _ in control) if consistent else len(NEW)
    blocks = [
        bz2.compress(b"".join(_offtout(x) + _offtout(y) + _offtout(z) for x, y, z in control)),
        bz2.compress(diff),
        bz2.compress(extra),
    ]
    patch = b"BSDIFF40" + _offtout(len(blocks[0])) + _offtout(len(blocks[1])) + _offtout(n) + b"".join(blocks)
    _only_named_errors(
        apply_patch,
        OLD,
        patch,
        base_sha256=hashlib.sha256(OLD).hexdigest(),
        result_sha256=hashlib.sha256(NEW).hexdigest(),
        result_length=n,
    )
