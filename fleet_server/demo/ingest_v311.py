"""The ingest worker over MQTT 3.1.1, for the demo's embedded broker (amqtt has no MQTT 5).

Same worker (:class:`fleet_server.ingest.worker.IngestWorker`: batching, commit, ack after commit,
dead letters); only the session differs: MQTT 3.1.1 persistent session (``clean_session=False``)
and a plain subscription to ``tinyfleet/v1/+/<channel>`` instead of ``$share/<group>/...``. So only
ONE such worker may run per broker (each plain subscriber gets every message); that is the demo's
single-process set-up. With Mosquitto the demo uses the regular MQTT 5 worker.
"""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as mqtt

from fleet_server.ingest.worker import IngestWorker
from telemetry.topics import DEVICE_CHANNELS, fleet_filter


class IngestWorkerV311(IngestWorker):
    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.config.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=False,
            manual_ack=True,
        )
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password)
        client.reconnect_delay_set(0.1, 5)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._connect_error = f"broker refused the connection: {reason}"
            return
        self._connect_error = None
        client.subscribe([(fleet_filter(ch), 1) for ch in DEVICE_CHANNELS])  # type: ignore[arg-type]

    def connect(self, timeout: float = 10.0) -> None:
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=self.config.keepalive_s)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            why = self._connect_error or f"no subscription on {self.broker.host}:{self.broker.port}"
            self._client.loop_stop()
            raise ConnectionError(f"ingest worker could not subscribe within {timeout}s: {why}")
