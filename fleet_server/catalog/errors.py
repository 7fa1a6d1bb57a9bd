"""Catalog errors: each carries an API error code and the HTTP status the routes answer with."""

from __future__ import annotations

from fleet_server.service_errors import ServiceError


class CatalogError(ServiceError):
    code = "catalog_error"
    status_code = 422


class InvalidUpload(CatalogError):
    code = "invalid_upload"
    status_code = 422


class InvalidName(CatalogError):
    code = "validation_error"
    status_code = 422


class UploadTooLarge(CatalogError):
    code = "payload_too_large"
    status_code = 413


class ModelNotFound(CatalogError):
    code = "model_not_found"
    status_code = 404


class VersionNotFound(CatalogError):
    code = "version_not_found"
    status_code = 404


class JobNotFound(CatalogError):
    code = "job_not_found"
    status_code = 404


class ModelExists(CatalogError):
    code = "model_exists"
    status_code = 409


class VersionExists(CatalogError):
    code = "version_exists"
    status_code = 409


class JobNotRetryable(CatalogError):
    code = "job_not_retryable"
    status_code = 409


class InvalidConvertedDir(CatalogError):
    code = "invalid_converted_dir"
    status_code = 422


class QueueUnavailable(CatalogError):
    code = "queue_unavailable"
    status_code = 503
