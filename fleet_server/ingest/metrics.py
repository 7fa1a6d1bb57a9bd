"""Prometheus counters of one ingest worker, on its own registry (as fleet_server.api.metrics does)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from fleet_server.ingest.dead_letter import DeadLetterReason


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.messages = Counter(
            "tinyfleet_ingest_messages",
            "Messages committed, by outcome: stored (new row / device update), duplicate (already "
            "stored, absorbed), dead_lettered.",
            ["outcome"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "tinyfleet_ingest_dead_letters",
            "Messages kept aside in the dead-letter table, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.batches = Counter("tinyfleet_ingest_batches", "Batches committed.", registry=self.registry)
        self.commit_failures = Counter(
            "tinyfleet_ingest_commit_failures",
            "Batch commits that failed and were retried (messages stay unacknowledged meanwhile).",
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "tinyfleet_ingest_batch_commit_seconds",
            "Time to write and commit one batch.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        for reason in DeadLetterReason:  # export zeros, so dashboards see every reason from the start
            self.dead_letters.labels(reason.value)
        for outcome in ("stored", "duplicate", "dead_lettered"):
            self.messages.labels(outcome)

    def value(self, name: str, **labels: str) -> float:
        """Current value of a counter sample (tests, CLI summary)."""
        got = self.registry.get_sample_value(name, labels)
        return 0.0 if got is None else got
