"""Named refusals of the OTA trust core.

Every reason a device refuses an update has its own exception class carrying a stable ``code``
string, so the agent can report *why* (telemetry, OTA status) without parsing messages. All of them
subclass :class:`OtaError`; nothing else escapes the manifest parser or the patch applier.
"""

from __future__ import annotations


class OtaError(Exception):
    """Base of every OTA refusal. ``code`` is stable across releases; the message is for humans."""

    code: str = "ota_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class ManifestFormatError(OtaError):
    """Truncated, invalid JSON, wrong types, absurd lengths, missing or unexpected fields."""

    code = "manifest_format"


class UnsupportedSchemaError(OtaError):
    """Unknown MAJOR schema version (a newer minor is accepted; see docs/ota.md)."""

    code = "unsupported_schema"


class BadSignatureError(OtaError):
    """A signature (manifest, key certificate or revocation list) does not verify."""

    code = "bad_signature"


class UnknownKeyError(OtaError):
    """The signing key is not certified by any root key the device holds."""

    code = "unknown_key"


class RevokedKeyError(OtaError):
    """The signing key is on the device's root-signed revocation list."""

    code = "revoked_key"


class ExpiredManifestError(OtaError):
    """The manifest or the signing key's certificate is expired (or not yet valid)."""

    code = "expired"


class DowngradeError(OtaError):
    """Release counter not greater than the installed one: a downgrade or a replayed manifest."""

    code = "downgrade"


class WrongHardwareClassError(OtaError):
    """The manifest does not target this device's hardware class."""

    code = "wrong_hardware_class"


class HashMismatchError(OtaError):
    """Artifact (or patch result) sha256 differs from the manifest."""

    code = "hash_mismatch"


class LengthMismatchError(OtaError):
    """Artifact (or patch) length differs from the manifest."""

    code = "length_mismatch"


class PatchBaseMismatchError(OtaError):
    """A delta was made against a different base than the bytes the device holds."""

    code = "patch_base_mismatch"


class PatchFormatError(OtaError):
    """A patch file is not a well-formed BSDIFF40 patch (or cannot be applied)."""

    code = "patch_format"


class ArtifactTooLargeError(OtaError):
    """The artifact does not fit the device's inactive slot."""

    code = "artifact_too_large"


class AgentTooOldError(OtaError):
    """The device's agent is older than the manifest's minimum agent version."""

    code = "agent_too_old"


class RevocationListError(OtaError):
    """A revocation list is malformed, badly signed, or older than the one the device persisted."""

    code = "revocation_list"


class KeyFileError(OtaError):
    """A key file is missing, unreadable, of the wrong type, or the passphrase is wrong."""

    code = "key_file"


ALL_ERRORS: tuple[type[OtaError], ...] = (
    ManifestFormatError,
    UnsupportedSchemaError,
    BadSignatureError,
    UnknownKeyError,
    RevokedKeyError,
    ExpiredManifestError,
    DowngradeError,
    WrongHardwareClassError,
    HashMismatchError,
    LengthMismatchError,
    PatchBaseMismatchError,
    PatchFormatError,
    ArtifactTooLargeError,
    AgentTooOldError,
    RevocationListError,
    KeyFileError,
)
