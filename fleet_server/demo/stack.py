"""The demo's server side in one process: MQTT broker (embedded amqtt, or a given Mosquitto), the API
(uvicorn in a thread on a free loopback port), the telemetry ingest worker and an operator token.

Start order matters when the broker authenticates devices from the devices table (Mosquitto with the
server-generated passwd/ACL): :meth:`DemoStack.start_server` (migrate + serve) -> provision devices ->
the caller writes the broker config and starts its broker -> :meth:`DemoStack.start_messaging` (ingest).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fleet_server.demo.embedded_broker import EmbeddedBroker, free_port, port_open

log = logging.getLogger(__name__)

DEMO_ACTOR = "demo"


class DemoError(RuntimeError):
    """A demo step cannot go on; the message says which and why."""


@dataclass(frozen=True)
class BrokerTarget:
    host: str
    port: int
    embedded: bool
    username: str | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def parse_mqtt_url(url: str) -> tuple[str, int, str | None, str | None]:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise DemoError(f"--mqtt-url must look like mqtt://host[:port], got {url!r}")
    return parts.hostname, parts.port or 1883, parts.username, parts.password


class DemoStack:
    """Broker + API server + ingest worker. ``close()`` stops whatever was started, in reverse order."""

    def __init__(
        self,
        data_dir: Path,
        *,
        database_url: str | None = None,
        mqtt_url: str | None = None,
        mqtt_username: str | None = None,
        mqtt_password: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.mqtt_url = mqtt_url
        self._mqtt_username = mqtt_username
        self._mqtt_password = mqtt_password
        self.broker: EmbeddedBroker | None = None
        self.target: BrokerTarget | None = None
        self.settings: Any = None
        self.app: Any = None
        self.engine: Any = None
        self.sessions: Any = None
        self.api_port = 0
        self.token: str = ""
        self.api: Any = None
        self.ingest: Any = None
        self._server: Any = None
        self._server_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ broker

    def start_broker(self) -> BrokerTarget:
        if self.mqtt_url:
            host, port, user, password = parse_mqtt_url(self.mqtt_url)
            self.target = BrokerTarget(
                host, port, False, user or self._mqtt_username, password or self._mqtt_password
            )
        else:
            self.broker = EmbeddedBroker()
            self.broker.start()
            self.target = BrokerTarget(self.broker.host, self.broker.port, True)
        return self.target

    # ------------------------------------------------------------------ server

    def start_server(self) -> None:
        """Settings, migrations, the API on a free port, an admin token, the REST client."""
        import uvicorn
        from pydantic import SecretStr

        from fleet_server.api.app import create_app
        from fleet_server.auth import Role, issue_token
        from fleet_server.cli.api_client import ApiClient
        from fleet_server.settings import Settings

        if self.target is None:
            raise DemoError("start the broker first")
        self.api_port = free_port()
        overrides: dict[str, Any] = {
            "data_dir": self.data_dir,
            "mqtt_host": self.target.host,
            "mqtt_port": self.target.port,
            "mqtt_username": self.target.username,
            "mqtt_password": SecretStr(self.target.password) if self.target.password else None,
            "api_host": "127.0.0.1",
            "api_port": self.api_port,
            # The demo drives the rollout runner itself, on the simulated clock.
            "rollout_runner_enabled": False,
            "rollout_public_base_url": f"http://127.0.0.1:{self.api_port}",
            "rollout_retarget_delay_s": 60.0,
            # A 20-50 device demo fleet reports fewer inputs per cohort than a production fleet.
            "drift_min_samples": 300,
        }
        if self.database_url:
            overrides["database_url"] = self.database_url
        known = set(Settings.model_fields)
        self.settings = Settings(**{k: v for k, v in overrides.items() if k in known})
        self.app = create_app(self.settings)
        self.engine = self.app.state.engine
        self.sessions = self.app.state.session_factory
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.api_port, log_level="warning", access_log=False
        )
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
        self._server = server
        self._server_thread = threading.Thread(target=server.run, name="demo-api", daemon=True)
        self._server_thread.start()
        deadline = time.monotonic() + 30
        while not (server.started and port_open("127.0.0.1", self.api_port)):
            if time.monotonic() > deadline or not self._server_thread.is_alive():
                raise DemoError(f"the API server did not start on port {self.api_port}")
            time.sleep(0.05)
        with self.sessions() as session:
            self.token = issue_token(
                session, name=f"demo-admin-{self.api_port}", role=Role.admin, created_by=DEMO_ACTOR
            ).secret
            session.commit()
        self.api = ApiClient(self.url, self.token, timeout_s=120.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def rest(self, method: str, path: str, **kwargs: Any) -> Any:
        """One REST call; an API error becomes a DemoError with the API's message."""
        import typer

        try:
            return self.api.request(method, path, **kwargs)
        except typer.Exit as exc:  # ApiClient printed the API's error line on stderr
            raise DemoError(f"{method} {path} refused (exit {exc.exit_code}); see the error above") from None

    def database_is_empty(self) -> bool:
        from sqlalchemy import func, select

        from fleet_server.db import Device, Release

        with self.sessions() as s:
            return not (s.scalar(select(func.count()).select_from(Device)) or 0) and not (
                s.scalar(select(func.count()).select_from(Release)) or 0
            )

    # ------------------------------------------------------------------ messaging

    def start_messaging(self, timeout: float = 30.0) -> None:
        """The ingest worker (MQTT 3.1.1 flavour on the embedded broker, MQTT 5 shared subscription else)."""
        from fleet_server.ingest.config import IngestConfig
        from fleet_server.ingest.worker import BrokerAddress, IngestWorker

        assert self.target is not None
        address = BrokerAddress(
            self.target.host, self.target.port, self.target.username, self.target.password
        )
        # Own client id and shared-subscription group: on a shared broker other ingest workers must not
        # take this demo's messages (and this worker none of theirs).
        config = IngestConfig(
            client_id=f"tinyfleet-demo-ingest-{self.api_port}",
            group=f"demo-{self.api_port}",
            batch_delay_s=0.05,
        )
        # amqtt (the embedded broker) speaks MQTT 3.1.1 only: one worker on a plain subscription.
        self.ingest = IngestWorker(
            self.engine, address, config, protocol="mqtt311" if self.target.embedded else "mqtt5"
        )
        self.ingest.start()
        if not self.ingest.wait_subscribed(timeout):
            raise DemoError(f"the ingest worker could not subscribe on {self.target.url}")

    def wait_ingested(self, delivered: int, timeout: float = 10.0) -> bool:
        """Wait until the ingest worker has acknowledged (= committed) at least ``delivered`` messages
        and then stayed idle briefly. ``delivered``: what the devices' links had acknowledged by the
        broker; the worker also counts status messages, so this is a lower bound."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = self.ingest.stats
            if stats.acked >= delivered:
                before = stats.acked
                time.sleep(0.1)
                if self.ingest.stats.acked == before:
                    return True
                continue
            time.sleep(0.02)
        return False

    # ------------------------------------------------------------------ stop

    def close(self) -> None:
        if self.ingest is not None:
            with contextlib.suppress(Exception):
                self.ingest.stop()
            self.ingest = None
        if self.api is not None:
            with contextlib.suppress(Exception):
                self.api.__exit__(None, None, None)
        if self._server is not None:
            self._server.should_exit = True
            if self._server_thread is not None:
                self._server_thread.join(10)
            self._server = None
        if self.app is not None:
            with contextlib.suppress(Exception):
                self.app.state.engine.dispose()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
