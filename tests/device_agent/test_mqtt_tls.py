"""MqttLink over TLS to a real Mosquitto TLS listener (certificates made here with `cryptography`)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import sys
import time
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _mqtt_support import analyse, status, window
from mosquitto_broker import MosquittoBroker, MqttCollector, free_port, mosquitto_available

from device_agent.disk_buffer import BufferSettings, DiskBuffer
from device_agent.mqtt_link import MqttLink, MqttSettings, TlsSettings
from device_agent.publisher import TelemetryPublisher
from telemetry.topics import telemetry_topic

pytestmark = pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def make_ca(d: Path, cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = d / f"{cn}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def make_server_cert(d: Path, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = d / "server.pem", d / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_path)
    return cert_path, key_path


def test_tls_link_delivers_and_a_wrong_ca_is_refused_without_losing_the_buffer(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    ca_key, ca, ca_path = make_ca(certs, "tinyfleet-test-ca")
    _, _, other_ca_path = make_ca(certs, "someone-elses-ca")
    cert_path, key_path = make_server_cert(certs, ca_key, ca)
    plain_port = free_port()
    broker = MosquittoBroker(tmp_path / "broker", extra_config=[
        f"cafile {ca_path}", f"certfile {cert_path}", f"keyfile {key_path}",  # first listener: TLS
        f"listener {plain_port} 127.0.0.1",  # second listener: plain, for the test's subscriber
    ])
    dev = f"tls-{uuid.uuid4().hex[:8]}"
    with broker:
        col = MqttCollector(broker.host, plain_port, [telemetry_topic(dev)], client_id=f"col-{dev}",
                            clean_session=True)
        buf_dir = tmp_path / "buf"
        buf = DiskBuffer(buf_dir, BufferSettings(fsync=False))
        pub = TelemetryPublisher(dev, buf)
        for seq in range(30):
            pub.publish(window(dev, seq))

        wrong_settings = MqttSettings(device_id=dev, port=broker.port, reconnect_min_s=0.05,
                                      reconnect_max_s=0.2, tls=TlsSettings(ca_file=other_ca_path))
        wrong = MqttLink(wrong_settings, buf, lambda: status(dev))
        wrong.start()
        deadline = time.monotonic() + 5
        while wrong.counters.connect_failures < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        wrong.stop()
        assert wrong.counters.connect_failures >= 2 and wrong.counters.connects == 0
        assert buf.stats().pending == 30, "certificate failure leaves the buffer alone"

        settings = MqttSettings.from_url(dev, f"mqtts://127.0.0.1:{broker.port}", reconnect_min_s=0.05,
                                         reconnect_max_s=0.2, tls=TlsSettings(ca_file=ca_path))
        good = MqttLink(settings, buf, lambda: status(dev))
        good.start()
        try:
            assert good.wait_drained(15)
            col.wait_for(lambda ms: len(ms) >= 30, 10)
            rep = analyse([m.payload for m in col.snapshot()], range(30))
            assert rep.lost == [] and rep.in_order and rep.duplicates == 0
        finally:
            good.stop()
            col.close()
