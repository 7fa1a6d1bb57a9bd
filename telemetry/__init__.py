"""Telemetry schemas, codecs, topic names and drift statistics shared by agent and server. No I/O.

Importing the package is nearly free: submodules load on first use of a name (pydantic and cbor2 for
schemas/codec, numpy for drift), so ``from telemetry.topics import cmd_topic`` pulls in only ``re``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # schemas
    "SCHEMA_VERSION": "schemas",
    "ModelRef": "schemas",
    "MetricsWindow": "schemas",
    "ShadowFigures": "schemas",
    "Status": "schemas",
    "FallbackSwitched": "schemas",
    "OtaStateChanged": "schemas",
    "ErrorEvent": "schemas",
    "OtaStatus": "schemas",
    "ArtifactRef": "schemas",
    "DeltaRef": "schemas",
    "UpdateAvailable": "schemas",
    "Rollback": "schemas",
    "SetShadowMode": "schemas",
    "SetFallbackPolicy": "schemas",
    "Ping": "schemas",
    "channel_of": "schemas",
    # codec
    "encode": "codec",
    "decode": "codec",
    "decode_from_topic": "codec",
    "MAX_PAYLOAD_BYTES": "codec",
    # errors
    "TelemetryError": "errors",
    "TelemetryDecodeError": "errors",
    "TelemetryEncodeError": "errors",
    "PayloadTooLarge": "errors",
    "MalformedPayload": "errors",
    "UnsupportedVersion": "errors",
    "UnknownMessageType": "errors",
    "SchemaViolation": "errors",
    "DeviceMismatch": "errors",
    "WrongChannel": "errors",
    # drift
    "psi": "drift",
    "ks_statistic": "drift",
    "js_divergence": "drift",
    "drift_status": "drift",
    "drift_report": "drift",
    # aggregation
    "WindowAggregator": "aggregation",
    "merge_windows": "aggregation",
    "SequenceTracker": "aggregation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'telemetry' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"telemetry.{module}"), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
