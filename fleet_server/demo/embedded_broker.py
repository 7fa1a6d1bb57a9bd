"""The demo's zero-setup MQTT broker: amqtt (a Python MQTT 3.1.1 broker) on a loopback port, in a thread.

Only the demo uses it (ARCHITECTURE: "an embedded Python broker only as the zero-setup default of the
demo"); production and the tests use Mosquitto. amqtt speaks MQTT 3.1.1 only: no MQTT 5 shared
subscriptions, so the demo runs one ingest worker on a plain subscription
(``IngestWorker(..., protocol="mqtt311")``). Anonymous access on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from typing import Any

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


class EmbeddedBroker:
    """amqtt on ``host:port`` (a free port by default), running its own asyncio loop in a daemon thread."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 15.0) -> None:
        if self.running:
            return
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="amqtt-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"embedded MQTT broker did not start within {timeout}s")
        if self._error is not None:
            raise RuntimeError(f"embedded MQTT broker failed to start: {self._error}") from self._error

    def _config(self) -> dict[str, Any]:
        return {
            "listeners": {
                "default": {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 0}
            },
            # No $SYS publisher, no per-packet logging: both cost CPU the simulated fleet needs.
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }

    def _run(self) -> None:
        from amqtt.broker import Broker

        # amqtt logs every connect/disconnect at INFO and tracebacks of clients that drop on purpose
        # (the outage scenario): keep the demo's console readable.
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def _start() -> None:
            self._broker = Broker(self._config(), loop=loop)
            await self._broker.start()

        try:
            loop.run_until_complete(_start())
        except BaseException as exc:  # reported to start()'s caller
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(self._broker.shutdown())
            with contextlib.suppress(Exception):
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    def stop(self, timeout: float = 15.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None
        self._loop = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
