"""The base of the services' named refusals: an HTTP status and a stable error code travel with the error.

Domain code raises these without knowing about HTTP frameworks; ``fleet_server.api.errors.service_error``
turns one into the API's JSON error, the dashboard into its own page. Releases/keys and rollouts derive
their error families from it.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """``status_code`` is the HTTP status the API answers with, ``code`` the stable error code."""

    status_code = 422
    code = "validation_error"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    @property
    def status(self) -> int:
        # The releases services' callers read ``status``; one value, two names.
        return self.status_code
