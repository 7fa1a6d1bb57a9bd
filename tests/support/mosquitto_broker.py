"""A private Mosquitto for tests and benchmarks: free loopback port, generated config, stop/restart.

Shared by the agent and server test suites (and bench/). Import it by putting this directory on
``sys.path`` (``tests/support``), e.g.::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
    from mosquitto_broker import MosquittoBroker, MqttCollector

``MosquittoBroker`` runs the real ``mosquitto`` binary as a child process with ``listener <port>
127.0.0.1``; optional password file (made with the real ``mosquitto_passwd``), ACL lines and on-disk
persistence in its work directory. The port is kept across ``restart()`` so clients reconnect to it.
``MqttCollector`` is a plain paho subscriber that records what it receives, for assertions.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

SYSTEM_BROKER = ("127.0.0.1", 1883)


def mosquitto_available() -> bool:
    return shutil.which("mosquitto") is not None


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MosquittoBroker:
    """One private broker. Use as a context manager or call start()/stop() yourself."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        users: dict[str, str] | None = None,
        acl_lines: Iterable[str] | None = None,
        persistence: bool = False,
        allow_anonymous: bool | None = None,
        extra_config: Iterable[str] = (),
    ) -> None:
        if not mosquitto_available():
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.users = dict(users or {})
        self.acl_lines = list(acl_lines or [])
        self.persistence = persistence
        self.allow_anonymous = (not self.users) if allow_anonymous is None else allow_anonymous
        self.extra_config = list(extra_config)
        self.log_path = self.workdir / "mosquitto.log"
        self.conf_path = self.workdir / "mosquitto.conf"
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 100000",  # a test subscriber may lag behind a 1,000-message replay
        ]
        if os.geteuid() == 0:
            # As root, mosquitto drops to user "mosquitto", which cannot write into a private tmp dir
            # (no log, and persistence silently fails). Stay the user who owns the work directory.
            lines.append("user root")
        if self.persistence:
            lines += [f"persistence_location {self.workdir}/", "autosave_interval 1"]
        if self.users:
            pw = self.workdir / "passwd"
            pw.write_text("")
            for user, password in self.users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True,
                               capture_output=True, timeout=30)
            lines.append(f"password_file {pw}")
        if self.acl_lines:
            acl = self.workdir / "acl"
            acl.write_text("\n".join(self.acl_lines) + "\n")
            lines.append(f"acl_file {acl}")
        lines += self.extra_config
        self.conf_path.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        self._proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                log = self.log_path.read_text() if self.log_path.exists() else ""
                raise RuntimeError(f"mosquitto exited with {self._proc.returncode}: {err}\n{log}")
            if port_open(self.host, self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.host}:{self.port} within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (mosquitto saves its persistence file on the way out), then SIGKILL if it hangs."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        if proc.stderr:
            proc.stderr.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    dup: bool


class MqttCollector:
    """A subscriber that keeps every message it gets (QoS 1, reconnects).

    With ``clean_session=False`` (default) the broker keeps its subscription while it is away, and
    with broker persistence on, across a broker restart too: nothing published meanwhile is missed.
    """

    def __init__(self, host: str, port: int, topics: Iterable[str], *, client_id: str,
                 username: str | None = None, password: str | None = None,
                 clean_session: bool = False) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._topics = list(topics)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=clean_session)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(0.05, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect_async(host, port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise RuntimeError(f"collector could not subscribe on {host}:{port}")

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, rc: object,
                    props: object) -> None:
        for t in self._topics:
            client.subscribe(t, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain), bool(msg.dup)))

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, predicate: object, timeout: float) -> bool:
        """Poll ``predicate(messages)`` until true or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.snapshot()):  # type: ignore[operator]
                return True
            time.sleep(0.02)
        return predicate(self.snapshot())  # type: ignore[operator,no-any-return]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def private_broker(workdir: Path, **kwargs: object) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(workdir, **kwargs)  # type: ignore[arg-type]
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
