"""The agent's OTA client against a real HTTP server, real signed releases and real converted models.

Every test provisions a slot store with v1 (counter 1), publishes releases on
tests/support/http_range_server.py and drives device_agent.ota_client.OtaClient. Outcomes are checked on
the flash directory itself (sha256 of the active slot), with the real LiteRT interpreter, and on the
OtaStateChanged / OtaStatus messages the client reported.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ota_support_loader import ota_client_support

from device_agent.energy_policy import EnergyThresholds, UpdateEnergyPolicy
from device_agent.ota_state import FILE_NAME, load_record
from ota import keys
from ota.canonical import encode_signed, parse_document
from ota.release import ReleaseSigner
from telemetry.device_codec import OtaStateChanged, OtaStatus, record_from_dict
from telemetry.schemas import Rollback

HERE = Path(__file__).parent


S = ota_client_support()
RS = S.range_server_module()


@pytest.fixture(scope="session")
def kit(ota_models: Path):
    return S.make_kit(ota_models)


@pytest.fixture
def server():
    with RS.RangeServer() as srv:
        srv.add_token(S.TOKEN, S.DEVICE_ID)
        yield srv


@pytest.fixture
def flash(tmp_path: Path, ota_models: Path) -> Path:
    root = tmp_path / "flash"
    S.provision(root, ota_models)
    return root


def _v(kit, name: str) -> bytes:
    return S.model_bytes(kit.models, name)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Reports(list):
    @property
    def changes(self) -> list[OtaStateChanged]:
        return [m for m in self if isinstance(m, OtaStateChanged)]

    @property
    def statuses(self) -> list[OtaStatus]:
        return [m for m in self if isinstance(m, OtaStatus)]

    def path(self) -> list[str]:
        return [m.to_state for m in self.changes]


def _publish_v2(server, kit, *, delta: bool = False, name: str = "v2") -> dict:
    release = kit.release("v2", 2, previous="v1" if delta else None)
    return S.publish(
        server, release, name=name, artifact=_v(kit, "v2"), base=_v(kit, "v1") if delta else None
    )


def _assert_on(flash: Path, data: bytes) -> None:
    assert S.active_sha(flash) == _sha(data)
    from ota.slot_state import read_copies

    state = read_copies(flash)[0]
    S.run_litert(flash / f"slot_{state.active}.bin")


# ----------------------------------------------------------------------------------- the happy paths


def test_full_update_walks_every_state_and_commits(flash: Path, kit, server) -> None:
    reports = Reports()
    client = S.make_client(flash, kit, sink=reports.append)
    client.resume()
    record = client.handle_update(S.update_command(_publish_v2(server, kit), "cmd-1"))

    assert record.state == "committed", record
    _assert_on(flash, _v(kit, "v2"))
    assert reports.path() == ["downloading", "verifying", "installing", "trial", "trial", "committed"]
    assert all(m.cmd_id == "cmd-1" for m in reports.changes)
    assert all(s.cmd_id == "cmd-1" for s in reports.statuses)
    assert [m.from_state for m in reports.changes][1:] == reports.path()[:-1]
    final = reports.statuses[-1]
    assert (final.state, final.bytes_done, final.bytes_total) == (
        "committed",
        len(_v(kit, "v2")),
        len(_v(kit, "v2")),
    )
    assert final.target_version == 2 and final.from_version == 1 and not final.via_delta
    # Every request carried this device's bearer token.
    assert {r.device for r in server.requests()} == {S.DEVICE_ID}
    assert load_record(flash).state == "committed"

    # A new process resumes on the committed state: no download, nothing reinstalled, even on redelivery.
    before = len(server.requests())
    again = S.make_client(flash, kit, sink=reports.append)
    assert again.resume().state == "committed"
    assert (
        again.handle_update(S.update_command(_publish_v2(server, kit, name="v2b"), "cmd-2")).state
        == "committed"
    )
    assert again.record.reason == "already installed"
    assert len(server.requests()) == before
    _assert_on(flash, _v(kit, "v2"))


def test_delta_update_downloads_only_the_patch(flash: Path, kit, server) -> None:
    reports = Reports()
    client = S.make_client(flash, kit, sink=reports.append)
    client.resume()
    fields = _publish_v2(server, kit, delta=True)
    # As the agent's command intake delivers it: a device-codec record, not the pydantic command.
    cmd = record_from_dict(S.update_command(fields, "cmd-d").model_dump(mode="json"))
    assert client.handle_update(cmd).state == "committed"
    _assert_on(flash, _v(kit, "v2"))
    assert reports.statuses[-1].via_delta
    assert server.body_bytes("/releases/v2/model.tflite") == 0
    assert server.body_bytes(fields["delta"].url.removeprefix(server.base_url)) == fields["delta"].size_bytes
    assert client.transport.bytes_received < len(_v(kit, "v2"))


@pytest.mark.parametrize(
    "fault",
    [RS.Fault(drop_after=9000, times=3), RS.Fault(status=500, times=2)],
    ids=["connection-dropped", "server-500"],
)
def test_transient_transport_faults_resume_and_commit(flash: Path, kit, server, fault) -> None:
    fields = _publish_v2(server, kit)
    server.set_fault("/releases/v2/model.tflite", fault)
    client = S.make_client(flash, kit)
    client.resume()
    assert client.handle_update(S.update_command(fields, "cmd-f")).state == "committed"
    _assert_on(flash, _v(kit, "v2"))
    size = len(_v(kit, "v2"))
    sent = server.body_bytes("/releases/v2/model.tflite")
    assert size <= sent < 2 * size
    if fault.drop_after:
        starts = [r.range_start for r in server.requests("/releases/v2/model.tflite")]
        assert (
            starts[0] == 0 and all(s > 0 for s in starts[1:]) and len(starts) == 4
        )  # resumed, not restarted


def test_retries_exhausted_is_a_named_failure_and_a_later_command_resumes(flash: Path, kit, server) -> None:
    reports = Reports()
    fields = _publish_v2(server, kit)
    path = "/releases/v2/model.tflite"
    server.set_fault(path, RS.Fault(cut_at=9000))  # no response ever gets past byte 9000
    client = S.make_client(flash, kit, sink=reports.append, attempts=3)
    client.resume()
    record = client.handle_update(S.update_command(fields, "cmd-x"))
    assert (record.state, record.error_code) == ("failed", "download_failed")
    assert reports.statuses[-1].state == "failed" and "download_failed" in reports.statuses[-1].error
    assert S.active_sha(flash) == _sha(_v(kit, "v1"))
    sent_failed = server.body_bytes(path)

    # The agent is alive; the server recovers; the next command continues from the durable offset.
    server.set_fault(path, None)
    client = S.make_client(flash, kit, sink=reports.append)
    client.resume()
    record = client.handle_update(S.update_command(fields, "cmd-y"))
    assert record.state == "committed" and record.attempt == 2
    _assert_on(flash, _v(kit, "v2"))
    resumed = server.requests(path)[-1]
    assert resumed.range_start > 0 and resumed.status == 206
    assert server.body_bytes(path) - sent_failed < len(_v(kit, "v2"))


def test_server_ignoring_range_restarts_cleanly_from_zero(flash: Path, kit, server) -> None:
    fields = _publish_v2(server, kit)
    path = "/releases/v2/model.tflite"
    server.set_fault(path, RS.Fault(cut_at=9000))
    client = S.make_client(flash, kit, attempts=2)
    client.resume()
    assert client.handle_update(S.update_command(fields, "cmd-1")).state == "failed"
    server.set_fault(path, RS.Fault(ignore_range=True))  # now answers 200 with the whole file
    client = S.make_client(flash, kit)
    client.resume()
    assert client.handle_update(S.update_command(fields, "cmd-2")).state == "committed"
    _assert_on(flash, _v(kit, "v2"))
    ranged_200 = [r for r in server.requests(path) if r.range_start and r.status == 200]
    assert ranged_200, "the server should have ignored a range at least once"


# ----------------------------------------------------------------------------------- energy


def test_download_deferred_on_low_battery_and_resumed_when_charging(flash: Path, kit, server) -> None:
    reports = Reports()
    battery = {"pct": 12.0, "charging": False}
    client = S.make_client(
        flash,
        kit,
        sink=reports.append,
        battery=lambda: (battery["pct"], battery["charging"]),
        energy=UpdateEnergyPolicy(EnergyThresholds(min_battery_pct=20.0, margin_pct=5.0)),
    )
    client.resume()
    record = client.handle_update(S.update_command(_publish_v2(server, kit), "cmd-e"))
    assert record.state == "deferred"
    assert "battery 12.0 % < 20.0 %" in record.reason
    assert reports.statuses[-1].error and "deferred" in reports.statuses[-1].error
    assert reports.statuses[-1].state == "deferred" and reports.changes[-1].to_state == "deferred"
    assert server.requests() == []  # not one byte spent on the radio
    n_reports = len(reports)
    assert client.poll().state == "deferred" and len(reports) == n_reports  # no repeated report

    battery["charging"] = True
    assert client.poll().state == "committed"
    _assert_on(flash, _v(kit, "v2"))


def test_battery_dropping_mid_download_pauses_and_resumes_from_offset(flash: Path, kit, server) -> None:
    readings = iter([50.0] * 6 + [10.0] * 1000)
    state = {"pct": 50.0}

    def battery() -> tuple[float, bool]:
        state["pct"] = next(readings)
        return state["pct"], False

    client = S.make_client(
        flash, kit, battery=battery, energy=UpdateEnergyPolicy(EnergyThresholds(min_battery_pct=20.0))
    )
    client.resume()
    record = client.handle_update(S.update_command(_publish_v2(server, kit), "cmd-m"))
    assert record.state == "deferred" and 0 < record.bytes_done < len(_v(kit, "v2"))
    assert S.active_sha(flash) == _sha(_v(kit, "v1"))
    # Power cut while deferred: a new process resumes into the same state, then the battery recovers.
    client = S.make_client(
        flash,
        kit,
        battery=lambda: (80.0, False),
        energy=UpdateEnergyPolicy(EnergyThresholds(min_battery_pct=20.0)),
    )
    assert client.resume().state == "committed"
    _assert_on(flash, _v(kit, "v2"))
    assert server.body_bytes() - server.body_bytes("/releases/v2/manifest.json") < 2 * len(_v(kit, "v2"))


# ----------------------------------------------------------------------------------- rollback command


def test_rollback_command_returns_to_the_previous_slot(flash: Path, kit, server) -> None:
    reports = Reports()
    client = S.make_client(flash, kit, sink=reports.append)
    client.resume()
    fields = _publish_v2(server, kit)
    assert client.handle_update(S.update_command(fields, "cmd-u")).state == "committed"
    rollback = Rollback(
        device_id=S.DEVICE_ID, cmd_id="cmd-r", ts=0, release_id="digits-v2", reason="canary FPR"
    )
    record = client.handle_rollback(rollback)
    assert record.state == "rolled_back"
    _assert_on(flash, _v(kit, "v1"))
    assert reports.changes[-1].to_state == "reverted" and "canary FPR" in reports.changes[-1].reason
    # The rolled-back release is not taken again (the counter floor stays at 2), and a second rollback
    # has nothing to go back to.
    again = client.handle_update(S.update_command(fields, "cmd-u2"))
    assert (again.state, again.error_code) == ("failed", "downgrade")
    second = client.handle_rollback(rollback.model_copy(update={"cmd_id": "cmd-r2"}))
    assert (second.state, second.error_code) == ("failed", "install_state")
    _assert_on(flash, _v(kit, "v1"))


def test_rollback_without_a_previous_model_is_refused(flash: Path, kit) -> None:
    client = S.make_client(flash, kit)
    client.resume()
    record = client.handle_rollback(Rollback(device_id=S.DEVICE_ID, cmd_id="r", ts=0, reason="test"))
    assert (record.state, record.error_code) == ("failed", "install_state")
    assert "no previous model" in record.reason
    _assert_on(flash, _v(kit, "v1"))


# ----------------------------------------------------------------------------------- bad input


def _resigned(manifest: bytes, signer: ReleaseSigner, **changes) -> bytes:
    from ota.release import sign_manifest_document

    doc = parse_document(manifest)
    doc.update(changes)
    return sign_manifest_document(doc, signer)


def _tampered(manifest: bytes) -> bytes:
    doc = parse_document(manifest)
    doc["version"] = "9.9.9"  # changed after signing
    return encode_signed(doc)


def _unsigned(manifest: bytes) -> bytes:
    doc = parse_document(manifest)
    del doc["signature"]
    return json.dumps(doc).encode()


BAD_MANIFESTS = {
    "unsigned": ("manifest_format", lambda kit, m: _unsigned(m)),
    "mis-signed": ("bad_signature", lambda kit, m: _tampered(m)),
    "unknown-key": (
        "unknown_key",
        lambda kit, m: _resigned(
            m,
            ReleaseSigner.certified_by(
                keys.generate_private_key(), not_before=datetime.now(UTC) - timedelta(days=1)
            ),
        ),
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_bad_manifest_is_refused_by_name(flash: Path, kit, server, case: str) -> None:
    code, corrupt = BAD_MANIFESTS[case]
    fields = _publish_v2(server, kit)
    server.put("/releases/v2/manifest.json", corrupt(kit, server.state.files["/releases/v2/manifest.json"]))
    _expect_named_failure(flash, kit, server, fields, code)


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("other-hardware", "wrong_hardware_class"),
        ("expired", "expired"),
        ("replayed-counter", "downgrade"),
        ("downgrade", "downgrade"),
    ],
)
def test_untrusted_release_is_refused_by_name(tmp_path: Path, kit, server, case: str, code: str) -> None:
    flash = tmp_path / "flash"
    S.provision(flash, kit.models, counter=5 if case == "downgrade" else 1)
    if case == "other-hardware":
        release = kit.release("v2", 2, hardware_class="pi-4")
    elif case == "expired":
        release = kit.release(
            "v2", 2, created=datetime.now(UTC) - timedelta(days=2), expires_in=timedelta(days=1)
        )
    else:  # counter equal to (replay) or below (downgrade) the installed one
        release = kit.release("v2", 1 if case == "replayed-counter" else 3)
    fields = S.publish(server, release, name="v2", artifact=_v(kit, "v2"))
    _expect_named_failure(flash, kit, server, fields, code, downloads_artifact=False)


@pytest.mark.parametrize(
    ("case", "code"),
    [("bit-flipped", "hash_mismatch"), ("truncated", "length_mismatch"), ("bad-token", "download_failed")],
)
def test_bad_artifact_or_transport_is_refused_by_name(flash: Path, kit, server, case: str, code: str) -> None:
    fields = _publish_v2(server, kit)
    path = "/releases/v2/model.tflite"
    if case == "bit-flipped":
        server.set_fault(path, RS.Fault(corrupt_at=len(_v(kit, "v2")) // 2))
    elif case == "truncated":
        server.put(path, _v(kit, "v2")[:-1000])
    token = "not-the-token" if case == "bad-token" else S.TOKEN
    _expect_named_failure(flash, kit, server, fields, code, token=token)


def test_golden_output_mismatch_fails_health_check_and_reverts(flash: Path, kit, server) -> None:
    reports = Reports()
    release = kit.release("v3", 2)
    fields = S.publish(server, release, name="v3", artifact=_v(kit, "v3"))
    client = S.make_client(flash, kit, sink=reports.append)
    client.resume()
    record = client.handle_update(S.update_command(fields, "cmd-g"))
    assert (record.state, record.error_code) == ("reverted", "health_check_failed")
    assert record.reason.startswith("golden: max abs error")
    assert reports.path()[-3:] == ["trial", "trial", "reverted"]
    assert "health_check_failed" in reports.statuses[-1].error
    _assert_on(flash, _v(kit, "v1"))
    # The device is alive and takes the next good release.
    good = S.publish(server, kit.release("v2", 3), name="v2", artifact=_v(kit, "v2"))
    assert client.handle_update(S.update_command(good, "cmd-next")).state == "committed"
    _assert_on(flash, _v(kit, "v2"))


def _expect_named_failure(
    flash: Path,
    kit,
    server,
    fields: dict,
    code: str,
    *,
    token: str = S.TOKEN,
    downloads_artifact: bool = True,
) -> None:
    reports = Reports()
    client = S.make_client(flash, kit, sink=reports.append, token=token)
    client.resume()
    record = client.handle_update(S.update_command(fields, "cmd-bad"))
    assert (record.state, record.error_code) == ("failed", code), record
    last = reports.statuses[-1]
    assert last.state == "failed" and last.error.startswith(f"{code}: ")
    assert reports.changes[-1].to_state == "failed"
    _assert_on(flash, _v(kit, "v1"))
    if not downloads_artifact:
        assert server.body_bytes("/releases/v2/model.tflite") == 0  # refused before any artifact byte
    # Agent alive: the refusal survives a restart, and a good release still installs afterwards.
    again = S.make_client(flash, kit, sink=reports.append)
    assert again.resume().state == "failed"
    good = S.publish(server, kit.release("v2", 6), name="good", artifact=_v(kit, "v2"))
    assert again.handle_update(S.update_command(good, "cmd-good")).state == "committed"
    _assert_on(flash, _v(kit, "v2"))


# ----------------------------------------------------------------------------------- persisted state


def test_damaged_client_record_is_rebuilt_from_the_slot_store(flash: Path, kit, server) -> None:
    client = S.make_client(flash, kit)
    client.resume()
    assert client.handle_update(S.update_command(_publish_v2(server, kit), "cmd-1")).state == "committed"
    (flash / FILE_NAME).write_bytes(b'{"record": {"state": "downloading"}, "sha256": "00"}')
    again = S.make_client(flash, kit)
    record = again.resume()
    assert record.state == "idle" and "checksum" in record.reason
    _assert_on(flash, _v(kit, "v2"))


def test_state_file_holds_the_manifest_and_command(flash: Path, kit, server) -> None:
    client = S.make_client(flash, kit, battery=lambda: (5.0, False), energy=UpdateEnergyPolicy())
    client.resume()
    fields = _publish_v2(server, kit)
    client.handle_update(S.update_command(fields, "cmd-s"))
    record = load_record(flash)
    assert record.state == "deferred" and record.cmd_id == "cmd-s"
    assert record.command["artifact"]["url"] == fields["artifact"].url
    assert record.manifest_b64 is None  # nothing fetched while deferred
    client.battery = lambda: (90.0, False)
    client.poll()
    assert (
        base64.b64decode(load_record(flash).manifest_b64) == server.state.files["/releases/v2/manifest.json"]
    )
