"""Database layer: ORM tables (one module per resource), engine/session, migrations runner.

Importing this package registers every table on ``Base.metadata`` (what Alembic compares against).
"""

from fleet_server.db.alerts import AlertRow
from fleet_server.db.api_tokens import ApiToken
from fleet_server.db.audit_log import AuditEntry
from fleet_server.db.base import Base
from fleet_server.db.devices import Device
from fleet_server.db.drift import DriftSnapshot, RetrainingEvent
from fleet_server.db.engine import make_engine, make_session_factory
from fleet_server.db.ml_models import ConversionJob, MlModel, ModelVersion
from fleet_server.db.releases import Release, ReleaseDelta
from fleet_server.db.rollouts import RolloutCommand, RolloutDecision, RolloutRow
from fleet_server.db.telemetry import DeadLetter, DeviceEvent, OtaStatusReport, TelemetryWindow

__all__ = [
    "AlertRow",
    "ApiToken",
    "AuditEntry",
    "Base",
    "ConversionJob",
    "DeadLetter",
    "Device",
    "DeviceEvent",
    "DriftSnapshot",
    "MlModel",
    "ModelVersion",
    "OtaStatusReport",
    "Release",
    "ReleaseDelta",
    "RetrainingEvent",
    "RolloutCommand",
    "RolloutDecision",
    "RolloutRow",
    "TelemetryWindow",
    "make_engine",
    "make_session_factory",
]
