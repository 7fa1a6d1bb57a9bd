"""The ingest worker's MQTT 3.1.1 variant (``protocol="mqtt311"``) on the demo's amqtt broker, real DB."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ingest_support import Publisher, cbor_window, count, provision_devices, wait_until
from sqlalchemy import Engine

from fleet_server.db import TelemetryWindow
from fleet_server.demo.embedded_broker import EmbeddedBroker
from fleet_server.ingest.config import IngestConfig
from fleet_server.ingest.worker import BrokerAddress, IngestWorker
from telemetry.topics import telemetry_topic

DEVICES = ["v311-a", "v311-b"]


@pytest.fixture(scope="module")
def amqtt() -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker()
    broker.start()
    yield broker
    broker.stop()


def test_plain_subscription_stores_each_window_once(engine: Engine, amqtt: EmbeddedBroker) -> None:
    provision_devices(engine, DEVICES)
    good = [(telemetry_topic(d), cbor_window(d, s)) for s in range(10) for d in DEVICES]
    config = IngestConfig(client_id="ingest-v311", batch_size=50, batch_delay_s=0.05)
    worker = IngestWorker(engine, BrokerAddress(amqtt.host, amqtt.port), config, protocol="mqtt311")
    worker.start()
    try:
        assert worker.wait_subscribed(15), "worker did not subscribe on amqtt"
        pub = Publisher(amqtt.host, amqtt.port, client_id="pub-v311")
        pub.publish_all(good + good[:5])  # five redeliveries: stored once
        pub.close()
        assert wait_until(lambda: worker.stats.stored + worker.stats.duplicates >= len(good) + 5, 30)
    finally:
        worker.stop()
    assert count(engine, TelemetryWindow) == len(good)
    assert worker.stats.stored == len(good)
    assert worker.stats.duplicates == 5


def test_unknown_protocol_is_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="protocol"):
        IngestWorker(engine, BrokerAddress("127.0.0.1", 1), IngestConfig(), protocol="mqtt3")  # type: ignore[arg-type]
