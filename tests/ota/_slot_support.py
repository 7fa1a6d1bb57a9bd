"""Helpers shared by the slot-store tests (loaded by path: tests/ is not a package).

Builds two real, small .tflite models with the TensorFlow converter (v2 = v1 fine-tuned: same
graph, changed weights, as a real model update is) and signs releases for them with ota.release.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ota import keys
from ota.delta import DeltaPolicy
from ota.release import PreviousArtifact, ReleaseSigner, SignedRelease, build_release
from ota.trust import DeviceTrust

HARDWARE_CLASS = "pi-zero-2w"  # a LiteRT class that runs float32 models
INPUT_SIZE = 8


def _convert(model: object) -> bytes:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def build_models(cache_dir: Path) -> tuple[bytes, bytes]:
    """(v1, v2) .tflite bytes, built once and cached under ``cache_dir``."""
    v1_path, v2_path = cache_dir / "v1.tflite", cache_dir / "v2.tflite"
    if v1_path.exists() and v2_path.exists():
        return v1_path.read_bytes(), v2_path.read_bytes()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [keras.Input((INPUT_SIZE,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)]
    )
    v1 = _convert(model)
    # "Fine-tune" the last layer: the graph is unchanged, some weights move (a small bsdiff delta).
    kernel, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([kernel * 1.5 + 0.1, bias - 0.2])
    v2 = _convert(model)
    cache_dir.mkdir(parents=True, exist_ok=True)
    v1_path.write_bytes(v1)
    v2_path.write_bytes(v2)
    return v1, v2


def run_litert(model_path: Path) -> np.ndarray:
    """Load a slot with the real LiteRT interpreter and run one inference (raises if it cannot)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    interpreter.set_tensor(inp["index"], np.linspace(-1, 1, INPUT_SIZE, dtype=np.float32).reshape(1, -1))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()


@dataclass(frozen=True)
class ReleaseKit:
    root_public: bytes
    signer: ReleaseSigner
    v1: bytes
    v2: bytes
    release_v2: SignedRelease  # counter 2, with a delta from v1

    def device(self, installed_counter: int = 1) -> DeviceTrust:
        return DeviceTrust(
            root_public_keys=[self.root_public],
            hardware_class=HARDWARE_CLASS,
            installed_counter=installed_counter,
        )

    def release(self, artifact: bytes, counter: int, *, previous: bytes | None = None) -> SignedRelease:
        prev = (
            [PreviousArtifact(version=f"1.0.{counter - 1}", counter=counter - 1, data=previous)]
            if previous
            else []
        )
        return build_release(
            artifact,
            model="kws",
            version=f"1.0.{counter}",
            counter=counter,
            hardware_classes=[HARDWARE_CLASS],
            variant="float32",
            signer=self.signer,
            previous=prev,
            delta_policy=DeltaPolicy(max_fraction=1.0),  # always ship the delta: these tests exercise it
            created=datetime.now(UTC),
        )


def make_kit(v1: bytes, v2: bytes) -> ReleaseKit:
    root = keys.generate_private_key()
    signer = ReleaseSigner.certified_by(root)
    kit = ReleaseKit(keys.raw_public_key(root), signer, v1, v2, None)  # type: ignore[arg-type]
    release_v2 = kit.release(v2, 2, previous=v1)
    return ReleaseKit(kit.root_public, signer, v1, v2, release_v2)


def write_release_dir(kit: ReleaseKit, directory: Path) -> Path:
    """Everything the power-loss child needs, as files: trust anchors, manifest, artifact, patch."""
    directory.mkdir(parents=True, exist_ok=True)
    rel = kit.release_v2
    (directory / "manifest.json").write_bytes(rel.manifest_bytes)
    (directory / "artifact.bin").write_bytes(kit.v2)
    (directory / "patch.bin").write_bytes(rel.patches[hashlib.sha256(kit.v1).hexdigest()])
    (directory / "device.json").write_text(
        json.dumps({"root_public_key": kit.root_public.hex(), "hardware_class": HARDWARE_CLASS})
    )
    return directory
