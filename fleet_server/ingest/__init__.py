"""Telemetry ingest: MQTT (shared subscription, QoS 1, manual ack) -> validated -> batched DB rows.

Modules: ``config`` (IngestConfig), ``classify`` (bytes -> message or dead-letter reason, pure),
``dead_letter`` (reasons, bounded rows), ``batching`` (size/time bounded batches), ``store`` (one
transaction per batch), ``metrics`` (Prometheus counters), ``worker`` (the paho client loop).
"""

from fleet_server.ingest.classify import Accepted, Rejected, classify
from fleet_server.ingest.config import IngestConfig
from fleet_server.ingest.dead_letter import DeadLetterReason
from fleet_server.ingest.worker import IngestWorker

__all__ = ["Accepted", "DeadLetterReason", "IngestConfig", "IngestWorker", "Rejected", "classify"]
