"""Named refusals of the releases and keys services; the routes map ``status`` and ``code`` to HTTP."""

from __future__ import annotations

from typing import Any


class ReleaseServiceError(Exception):
    """Base: ``status`` is the HTTP status the API answers with, ``code`` the stable error code."""

    status = 422
    code = "release_error"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(ReleaseServiceError):
    status = 404
    code = "not_found"


class InvalidRequest(ReleaseServiceError):
    """The request names things that exist but cannot make a release (variant, class, size, version)."""

    status = 422
    code = "invalid_release"


class Conflict(ReleaseServiceError):
    status = 409
    code = "conflict"


class NoSigningKeys(Conflict):
    code = "no_signing_keys"


class KeystoreError(ReleaseServiceError):
    """The key files are missing, unreadable or inconsistent (server-side problem, not the caller's)."""

    status = 500
    code = "keystore_error"


class ArtifactStoreError(ReleaseServiceError):
    """A file the database points at is missing or does not match its recorded hash."""

    status = 500
    code = "artifact_store_error"
