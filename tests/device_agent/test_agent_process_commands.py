"""The Agent's command wiring with real parts: a signed release over the real HTTP range server, the real
slot store, LiteRT, the real command decoder (payloads go through ``CommandIntake.handle``, as from the
MQTT link), on a simulated board. Update -> the new model serves the next sample after its trial commits;
shadow runs the previous release from the inactive slot; rollback goes back; no sample is lost or run
twice across the swaps; unsigned updates fail and change nothing."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ota_support_loader import ota_client_support

from device_agent.agent import Agent, AgentOptions
from device_agent.config import AgentConfig, BrokerConfig, LoopConfig, ShadowConfig
from firmware_stubs.clock import SimClock
from telemetry.codec import encode
from telemetry.schemas import Rollback, SetFallbackPolicy, SetShadowMode

HERE = Path(__file__).parent


S = ota_client_support()
RS = S.range_server_module()


@pytest.fixture
def server():
    with RS.RangeServer() as srv:
        srv.add_token(S.TOKEN, S.DEVICE_ID)
        yield srv


def one_model_chain(models: Path, out: Path) -> Path:
    """A chain of one model (v1), as the device ships with it."""
    shutil.copytree(models / "v1", out / "v1")
    report = json.loads((out / "v1" / "report.json").read_text())
    (out / "chain.json").write_text(
        json.dumps(
            {
                "task": "digits",
                "version": "1.0.1",
                "metadata": {
                    "task": "digits",
                    "class_names": [str(i) for i in range(10)],
                    "positive_class_ids": [0],
                    "score_threshold": 0.5,
                    "input_shape": [8, 8, 1],
                },
                "entries": [{"rank": 0, "name": report["name"], "artifact_dir": "v1"}],
            }
        )
    )
    return out


def cmd(payload_model) -> bytes:
    return encode(payload_model)


def test_update_shadow_rollback_through_the_agent(ota_models: Path, server, tmp_path: Path) -> None:
    kit = S.make_kit(ota_models)
    chain = one_model_chain(ota_models, tmp_path / "chain")
    state = tmp_path / "state"
    shutil.copytree(ota_models / "v2", state / "releases" / "v2")  # the release's report + golden inputs
    config = AgentConfig(
        device_id=S.DEVICE_ID,
        hardware_class=S.HARDWARE_CLASS,
        model_dir=chain,
        state_dir=state,
        broker=BrokerConfig(url="mqtt://127.0.0.1:1"),  # nobody listens: windows are buffered
        loop=LoopConfig(sample_period_s=1.0, window_s=10),
        shadow=ShadowConfig(energy_budget_fraction=None),  # an exact share, not capped by energy
    )
    agent = Agent(
        config,
        AgentOptions(
            clock=SimClock(), root_public_keys=[kit.root_public], download_token=S.TOKEN, buffer_fsync=False
        ),
    )
    v1 = hashlib.sha256(S.model_bytes(ota_models, "v1")).hexdigest()
    v2_bytes = S.model_bytes(ota_models, "v2")
    try:
        agent.start()
        assert agent.store.active_image().sha256 == v1
        assert agent.ota is None  # nothing to resume: the OTA client (cryptography) is not loaded yet
        served = [agent.step() for _ in range(5)]

        # An update whose manifest no root signed (another kit) fails and leaves v1 serving.
        stranger = S.make_kit(ota_models)
        bad = S.publish(server, stranger.release("v2", 2), name="v2-unsigned", artifact=v2_bytes)
        assert agent.intake.handle(cmd(S.update_command(bad, "cmd-bad"))) == "dispatched"
        served += [agent.step() for _ in range(3)]
        assert agent.ota.state == "failed" and agent.store.active_image().sha256 == v1

        fields = S.publish(server, kit.release("v2", 2), name="v2", artifact=v2_bytes)
        assert agent.intake.handle(cmd(S.update_command(fields, "cmd-1"))) == "dispatched"
        served += [agent.step() for _ in range(5)]
        assert agent.ota.state == "committed", agent.ota.record
        assert agent.store.active_image().sha256 == hashlib.sha256(v2_bytes).hexdigest()
        assert served[-1].model.endswith("@2/float32"), served[-1]  # the new release serves, as counter 2

        ts = int(datetime.now(UTC).timestamp())
        shadow = SetShadowMode(device_id=S.DEVICE_ID, cmd_id="sh-1", ts=ts, enabled=True, sample_fraction=0.5)
        assert agent.intake.handle(cmd(shadow)) == "dispatched"
        served += [agent.step() for _ in range(20)]
        assert agent.loop.shadow is not None
        assert (
            agent.loop.shadow.candidate.artifact.report.name
            == json.loads((ota_models / "v1" / "report.json").read_text())["name"]
        )
        assert 9 <= sum(r.shadow is not None for r in served[-20:]) <= 11  # half the samples

        policy = SetFallbackPolicy(
            device_id=S.DEVICE_ID,
            cmd_id="fp-1",
            ts=ts,
            chain=["primary"],
            max_latency_us=123_456,
            recover_after_s=25,
        )
        assert agent.intake.handle(cmd(policy)) == "dispatched"
        rollback = Rollback(device_id=S.DEVICE_ID, cmd_id="rb-1", ts=ts, reason="operator test")
        assert agent.intake.handle(cmd(rollback)) == "dispatched"
        served += [agent.step() for _ in range(3)]
        assert agent.ota.state == "rolled_back", agent.ota.record
        assert agent.store.active_image().sha256 == v1
        assert "@2/" not in served[-1].model
        assert agent.policy.t.max_latency_us == 123_456 and agent.policy.t.recover_windows == 3

        # Across two swaps every wake was inferred exactly once, in order.
        assert [r.sample_index for r in served] == list(range(len(served)))
        assert all(r.score is not None for r in served)
        assert agent.loop.stats.inferences == len(served) and agent.counters.command_errors == 0
        assert agent.intake.counters.dispatched == 5
    finally:
        agent.stop(drain_timeout_s=0)
    # The OTA reports and windows wait in the disk buffer for the broker (nothing was lost).
    assert agent.publisher.counters.queued > agent.loop.stats.windows
