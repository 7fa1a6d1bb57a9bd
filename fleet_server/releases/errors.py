"""Named refusals of the releases and keys services; the routes map ``status_code`` and ``code`` to HTTP."""

from __future__ import annotations

from fleet_server.service_errors import ServiceError


class ReleaseServiceError(ServiceError):
    """Base of the releases and keys refusals (``status_code`` / ``status`` and ``code``)."""

    status_code = 422
    code = "release_error"


class NotFound(ReleaseServiceError):
    status_code = 404
    code = "not_found"


class InvalidRequest(ReleaseServiceError):
    """The request names things that exist but cannot make a release (variant, class, size, version)."""

    status_code = 422
    code = "invalid_release"


class Conflict(ReleaseServiceError):
    status_code = 409
    code = "conflict"


class NoSigningKeys(Conflict):
    code = "no_signing_keys"


class KeystoreError(ReleaseServiceError):
    """The key files are missing, unreadable or inconsistent (server-side problem, not the caller's)."""

    status_code = 500
    code = "keystore_error"


class ArtifactStoreError(ReleaseServiceError):
    """A file the database points at is missing or does not match its recorded hash."""

    status_code = 500
    code = "artifact_store_error"
