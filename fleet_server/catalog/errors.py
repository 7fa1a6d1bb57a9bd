"""Catalog errors: each carries an API error code and the HTTP status the routes answer with."""

from __future__ import annotations


class CatalogError(Exception):
    code = "catalog_error"
    status = 422

    def __init__(self, message: str, details: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidUpload(CatalogError):
    code = "invalid_upload"
    status = 422


class InvalidName(CatalogError):
    code = "validation_error"
    status = 422


class UploadTooLarge(CatalogError):
    code = "payload_too_large"
    status = 413


class ModelNotFound(CatalogError):
    code = "model_not_found"
    status = 404


class VersionNotFound(CatalogError):
    code = "version_not_found"
    status = 404


class JobNotFound(CatalogError):
    code = "job_not_found"
    status = 404


class ModelExists(CatalogError):
    code = "model_exists"
    status = 409


class VersionExists(CatalogError):
    code = "version_exists"
    status = 409


class JobNotRetryable(CatalogError):
    code = "job_not_retryable"
    status = 409


class InvalidConvertedDir(CatalogError):
    code = "invalid_converted_dir"
    status = 422


class QueueUnavailable(CatalogError):
    code = "queue_unavailable"
    status = 503
