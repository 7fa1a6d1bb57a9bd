"""Shared set-up of the OTA client tests (loaded by path: tests/ is not a package).

Real parts only: tiny Keras digit classifiers converted by the real pipeline (converters.convert_model:
float32 .tflite, report.json, golden.npz), releases signed with ota.release, a real HTTP server
(tests/support/http_range_server.py) and a real slot store on disk.

Models (built once, cached in a directory):

* ``v1``: the factory model (Dense 128), counter 1;
* ``v2``: v1 with its output layer fine-tuned (same graph: a small bsdiff delta), counter 2;
* ``v3``: v2 with its output layer scrambled, shipped with v2's golden file -- the converter's golden
  outputs do not match what this model computes, so the trial health check must fail and revert.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ota import keys
from ota.delta import DeltaPolicy
from ota.release import PreviousArtifact, ReleaseSigner, SignedRelease, build_release
from ota.trust import DeviceTrust

HERE = Path(__file__).parent
HARDWARE_CLASS = "pi-zero-2w"
DEVICE_ID = "dev-ota-1"
TOKEN = "token-dev-ota-1"
MODEL = "digits"


def load_module(name: str, path: Path):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def range_server_module():
    return load_module("tinyfleet_tests_http_range_server", HERE.parent / "support" / "http_range_server.py")


# ------------------------------------------------------------------------------------------- models

_built: list[Path] = []  # one build per test session, shared by every OTA client test module


def session_models(tmp_path_factory) -> Path:
    """The models for this session; TINYFLEET_OTA_TEST_MODELS=<dir> caches them between local runs."""
    if not _built:
        cached = os.environ.get("TINYFLEET_OTA_TEST_MODELS")
        _built.append(build_models(Path(cached) if cached else tmp_path_factory.mktemp("ota_models")))
    return _built[0]


def build_models(out: Path) -> Path:
    """Convert v1, v2, v3 into ``out/{v1,v2,v3}`` (report.json, golden.npz, float32.tflite). Cached."""
    if all((out / v / "report.json").is_file() for v in ("v1", "v2", "v3")):
        return out
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    from keras import layers

    from converters.config import ConversionConfig, TaskInfo
    from converters.pipeline import convert_model
    from converters.reference.digits import load_digits_task

    data = load_digits_task(0)
    task = TaskInfo(class_names=list(data.class_names), positive_class_ids=[0], score_threshold=0.5)
    config = ConversionConfig(
        latency_warmup_runs=1,
        latency_runs=3,
        golden_size=16,
        variants=("float32",),
        profiles=(HARDWARE_CLASS,),
        overwrite=True,
    )
    keras.utils.set_random_seed(0)
    inp = keras.Input(data.x_train.shape[1:])
    hidden = layers.Dense(128, activation="relu")(layers.Flatten()(inp))
    model = keras.Model(inp, layers.Dense(10, activation="softmax")(hidden))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")

    def convert(version: str, directory: str) -> None:
        convert_model(
            model,
            data.x_cal,
            data.x_eval,
            data.y_eval,
            name=MODEL,
            version=version,
            out_dir=out / directory,
            config=config,
            task=task,
        )

    model.fit(data.x_train, data.y_train, epochs=4, batch_size=64, verbose=0)
    convert("1.0.1", "v1")
    # Fine-tune the head only (the hidden layer frozen): the graph and most bytes stay, a small delta.
    model.layers[2].trainable = False
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(data.x_train, data.y_train, epochs=1, batch_size=64, verbose=0)
    convert("1.0.2", "v2")
    # v3: the head scrambled after conversion of v2's golden file; the report names v3's bytes.
    kernel, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([np.roll(kernel, 1, axis=1), np.roll(bias, 1)])
    convert("1.0.3", "v3")
    golden = (out / "v2" / "golden.npz").read_bytes()
    (out / "v3" / "golden.npz").write_bytes(golden)
    report = json.loads((out / "v3" / "report.json").read_text())
    report["artifacts"]["golden.npz"]["sha256"] = hashlib.sha256(golden).hexdigest()
    report["artifacts"]["golden.npz"]["bytes"] = len(golden)
    (out / "v3" / "report.json").write_text(json.dumps(report))
    return out


def model_bytes(models: Path, version: str) -> bytes:
    return (models / version / "float32.tflite").read_bytes()


def run_litert(model_path: Path) -> None:
    """The real LiteRT interpreter loads the slot and runs one inference (raises if it cannot)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    interpreter.set_tensor(inp["index"], np.zeros(inp["shape"], dtype=np.float32))
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert np.isfinite(out).all()


# ------------------------------------------------------------------------------------------- releases


@dataclass(frozen=True)
class Kit:
    models: Path
    root_private: keys.Ed25519PrivateKey
    signer: ReleaseSigner

    @property
    def root_public(self) -> bytes:
        return keys.raw_public_key(self.root_private)

    def device(self, installed_counter: int = 1) -> DeviceTrust:
        return DeviceTrust(
            root_public_keys=[self.root_public],
            hardware_class=HARDWARE_CLASS,
            installed_counter=installed_counter,
        )

    def release(
        self,
        version: str,
        counter: int,
        *,
        previous: str | None = None,
        hardware_class: str = HARDWARE_CLASS,
        created: datetime | None = None,
        expires_in: timedelta = timedelta(days=30),
        signer: ReleaseSigner | None = None,
    ) -> SignedRelease:
        prev = (
            [
                PreviousArtifact(
                    version=f"1.0.{counter - 1}", counter=counter - 1, data=model_bytes(self.models, previous)
                )
            ]
            if previous
            else []
        )
        return build_release(
            model_bytes(self.models, version),
            model=MODEL,
            version=f"1.0.{counter}",
            counter=counter,
            hardware_classes=[hardware_class],
            variant="float32",
            signer=signer or self.signer,
            previous=prev,
            delta_policy=DeltaPolicy(max_fraction=1.0),
            created=created or datetime.now(UTC),
            expires_in=expires_in,
        )

    def companions(self, manifest) -> Path | None:
        """The converter directory whose report names this artifact (the device's golden inputs)."""
        for version in ("v1", "v2", "v3"):
            if hashlib.sha256(model_bytes(self.models, version)).hexdigest() == manifest.artifact_sha256:
                return self.models / version
        return None


def make_kit(models: Path) -> Kit:
    root = keys.generate_private_key()
    return Kit(
        models, root, ReleaseSigner.certified_by(root, not_before=datetime.now(UTC) - timedelta(days=3))
    )


def publish(server, release: SignedRelease, *, name: str, artifact: bytes, base: bytes | None = None) -> dict:
    """Put a release on the HTTP server; return the UpdateAvailable fields that point at it."""
    from telemetry.schemas import ArtifactRef, DeltaRef

    prefix = f"/releases/{name}"
    manifest_url = server.put(f"{prefix}/manifest.json", release.manifest_bytes)
    artifact_url = server.put(f"{prefix}/model.tflite", artifact)
    delta = None
    if base is not None:
        patch = release.patches[hashlib.sha256(base).hexdigest()]
        url = server.put(f"{prefix}/from-{release.manifest.counter - 1}.patch", patch)
        delta = DeltaRef(
            url=url,
            sha256=hashlib.sha256(patch).hexdigest(),
            size_bytes=len(patch),
            from_version=release.manifest.counter - 1,
        )
    return {
        "release_id": f"{MODEL}-{name}",
        "model_name": MODEL,
        "target_version": release.manifest.counter,
        "hardware_class": HARDWARE_CLASS,
        "manifest": ArtifactRef(
            url=manifest_url,
            sha256=hashlib.sha256(release.manifest_bytes).hexdigest(),
            size_bytes=len(release.manifest_bytes),
        ),
        "artifact": ArtifactRef(
            url=artifact_url, sha256=hashlib.sha256(artifact).hexdigest(), size_bytes=len(artifact)
        ),
        "delta": delta,
    }


def update_command(fields: dict, cmd_id: str):
    from telemetry.schemas import UpdateAvailable

    return UpdateAvailable(
        device_id=DEVICE_ID, cmd_id=cmd_id, ts=int(datetime.now(UTC).timestamp()), **fields
    )


# ------------------------------------------------------------------------------------------- device


def provision(flash: Path, models: Path, counter: int = 1):
    from firmware_stubs.hardware_profiles import get_profile
    from ota.slots import SlotStore

    store = SlotStore(
        flash, capacity=get_profile(HARDWARE_CLASS).model_flash_budget_bytes, checkpoint_bytes=4096
    )
    store.provision(model_bytes(models, "v1"), counter=counter)
    return store


def make_client(
    flash: Path,
    kit: Kit,
    *,
    sink=None,
    token: str | None = TOKEN,
    battery=None,
    attempts: int = 4,
    energy=None,
):
    """An OtaClient on a fresh SlotStore object over ``flash`` (a new "process" view of the device)."""
    from device_agent.http_download import HttpFetcher, RetryPolicy
    from device_agent.ota_client import GoldenHealthCheck, OtaClient
    from firmware_stubs.hardware_profiles import get_profile
    from ota.slots import SlotStore

    profile = get_profile(HARDWARE_CLASS)
    store = SlotStore(flash, capacity=profile.model_flash_budget_bytes, checkpoint_bytes=4096)
    fetcher = HttpFetcher(
        token=token, retry=RetryPolicy(attempts=attempts, backoff_s=0.01, timeout_s=5.0), chunk_size=4096
    )
    return OtaClient(
        flash,
        store,
        kit.device(),
        fetcher,
        GoldenHealthCheck(profile, kit.companions),
        device_id=DEVICE_ID,
        sink=sink,
        energy=energy,
        battery=battery,
    )


def active_sha(flash: Path) -> str:
    from ota.slot_state import read_copies

    state = read_copies(flash)[0]
    return hashlib.sha256((flash / f"slot_{state.active}.bin").read_bytes()).hexdigest()
