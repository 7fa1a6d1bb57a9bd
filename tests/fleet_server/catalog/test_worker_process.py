"""Upload -> conversion by a real worker child process, on SQLite and PostgreSQL, through the served API.

One module-scoped environment per backend: the first test SIGKILLs a worker mid-conversion and shows
the next worker requeue and finish the job (attempts 2, no partial directory ever registered); that
converted version then serves the detail/report/registration tests, and the second worker keeps
running for the CLI upload and the failing-job tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from catalog_support import ServedApp, keras_with_config, npz_bytes, store_files, wait_for
from typer.testing import CliRunner

from fleet_server.api import create_app
from fleet_server.auth import Role, issue_token
from fleet_server.catalog import service
from fleet_server.catalog.errors import InvalidConvertedDir, VersionExists
from fleet_server.catalog.local_process import WorkerProcess
from fleet_server.cli.main import app as cli_app
from fleet_server.db import ConversionJob, ModelVersion
from fleet_server.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "support"))
from postgres import postgres_reachable, postgres_schema_url

pytestmark = pytest.mark.slow
CLASSES = ",".join(str(i) for i in range(10))


@dataclass
class Env:
    settings: Settings
    app: Any
    served: ServedApp
    tokens: dict[str, str]
    files: dict[str, Path]
    worker: WorkerProcess | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.served.url

    def http(self, role: str = "operator") -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.tokens[role]}"}, timeout=60
        )

    def job(self, job_id: int) -> dict[str, Any]:
        with self.http("viewer") as c:
            return c.get(f"/api/v1/jobs/{job_id}").json()  # type: ignore[no-any-return]

    def wait_job(self, job_id: int, states: tuple[str, ...], timeout_s: float = 240) -> dict[str, Any]:
        return wait_for(  # type: ignore[no-any-return]
            lambda: (j := self.job(job_id))["state"] in states and j,
            timeout_s,
            f"job {job_id} in {states}",
            0.2,
        )

    def upload(self, model_name: str, version: str, options: Any = None, **override: bytes) -> dict[str, Any]:
        files = {k: p.read_bytes() for k, p in self.files.items()}
        files.update(override)
        with self.http() as c:
            c.post("/api/v1/models", json={"name": model_name})
            r = c.post(
                f"/api/v1/models/{model_name}/versions",
                data={"version": version, "options": json.dumps(options or {})},
                files={k: (k, v) for k, v in files.items()},
            )
        assert r.status_code == 202, r.text
        return r.json()["job"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_files: dict[str, Path]
) -> Iterator[Env]:
    with contextlib.ExitStack() as stack:
        tmp = tmp_path_factory.mktemp(f"catalog-{request.param}")
        if request.param == "sqlite":
            url = f"sqlite:///{tmp / 'fleet.db'}"
        else:
            if not postgres_reachable():
                pytest.skip("PostgreSQL does not answer on 127.0.0.1:5432")
            url = stack.enter_context(postgres_schema_url())
        settings = Settings(
            data_dir=tmp / "data",
            database_url=url,
            job_heartbeat_interval_s=0.5,
            job_stale_after_s=3.0,
            job_poll_interval_s=0.2,
        )
        app = create_app(settings)
        stack.callback(app.state.engine.dispose)
        with app.state.session_factory() as s:
            tokens = {
                role.name: issue_token(s, name=f"{role.name}-t", role=role, created_by="test").secret
                for role in Role
            }
            s.commit()
        served = ServedApp(app)
        stack.callback(served.stop)
        environment = Env(settings=settings, app=app, served=served, tokens=tokens, files=tiny_files)
        stack.callback(lambda: environment.worker.stop() if environment.worker else None)
        yield environment


@pytest.fixture
def worker(env: Env) -> WorkerProcess:
    """A running local worker (the one that survived the crash test, or a fresh one)."""
    if env.worker is None or env.worker.process is None or env.worker.process.poll() is not None:
        env.worker = WorkerProcess(env.settings).start()
    return env.worker


def _partials(version_dir: Path) -> list[Path]:
    return sorted(version_dir.glob(".converted.*"))


def test_killed_worker_job_is_requeued_and_finished_by_the_next_worker(env: Env) -> None:
    job = env.upload("tiny", "1.0.0", {"task": {"class_names": CLASSES.split(",")}})
    version_dir = Path(env.settings.artifact_dir or "") / "models/tiny/1.0.0"
    first = WorkerProcess(env.settings).start()
    try:
        # Mid-conversion: the converter is building variants into its hidden partial directory.
        wait_for(lambda: env.job(job["id"])["progress"] >= 0.06 and _partials(version_dir), 180, "conversion")
    finally:
        first.kill()  # SIGKILL to the worker's process group: no cleanup code runs
    killed = env.job(job["id"])
    assert (killed["state"], killed["attempts"]) == ("running", 1)
    assert killed["worker"].endswith(f":{first.pid}")
    assert _partials(version_dir), "the killed conversion left its partial directory"
    with env.app.state.session_factory() as s:
        assert s.query(ModelVersion).filter_by(version="1.0.0").one().artifact_dir is None

    env.worker = WorkerProcess(env.settings).start()
    done = env.wait_job(job["id"], ("succeeded", "failed"))
    assert done["state"] == "succeeded", done["error"]
    assert done["attempts"] == 2 and done["worker"].endswith(f":{env.worker.pid}")
    assert done["report_path"] == "models/tiny/1.0.0/converted/report.json"
    assert _partials(version_dir) == []  # the next run removed what the killed one left
    assert sorted(p.name for p in version_dir.iterdir()) == ["converted", "upload"]

    with env.http("viewer") as c:
        detail = c.get("/api/v1/models/tiny/versions/1.0.0").json()
        report = c.get("/api/v1/models/tiny/versions/1.0.0/report").json()
    assert detail["status"] == "ready" and detail["artifact_dir"] == "models/tiny/1.0.0/converted"
    assert report["name"] == "tiny" and report["task"]["class_names"] == CLASSES.split(",")
    converted = version_dir / "converted"
    for artifact in detail["artifacts"]:  # every listed artifact is on disk, whole
        data = (converted / artifact["path"]).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (artifact["bytes"], artifact["sha256"])
    assert {a["path"] for a in detail["artifacts"]} >= {"full_int8.tflite", "float32.tflite", "golden.npz"}
    assert (
        detail["summary"]["variants"]["full_int8"]["accuracy"] == report["variants"]["full_int8"]["accuracy"]
    )
    assert done["report"] == detail["summary"]
    env.extra["converted"] = converted


def _files_args(f: dict[str, Path]) -> list[str]:
    return [
        "--model",
        str(f["model"]),
        "--calibration",
        str(f["calibration"]),
        "--eval",
        str(f["evaluation"]),
    ]


def test_cli_upload_follows_the_job_and_shows_the_version(env: Env, worker: WorkerProcess) -> None:
    runner = CliRunner()
    auth = ["--server", env.url, "--token", env.tokens["operator"]]
    upload = ["model", "upload", "digits-cli", "2.0.0", *_files_args(env.files)]
    result = runner.invoke(
        cli_app, [*upload, "--class-names", CLASSES, "--profiles", "esp32-s3,pi-4", "--json", *auth]
    )
    assert result.exit_code == 0, result.output
    detail = json.loads(result.stdout)
    assert detail["status"] == "ready" and detail["job"]["state"] == "succeeded"
    assert set(detail["summary"]["default_variants"]) == {"esp32-s3", "pi-4"}

    listed = runner.invoke(cli_app, ["model", "versions", "digits-cli", "--json", *auth])
    assert [v["version"] for v in json.loads(listed.stdout)["items"]] == ["2.0.0"]
    shown = runner.invoke(cli_app, ["model", "show", "digits-cli", "2.0.0", *auth])
    assert shown.exit_code == 0 and "full_int8" in shown.stdout and "ready" in shown.stdout
    job = runner.invoke(cli_app, ["model", "job", str(detail["job"]["id"]), "--json", *auth])
    assert json.loads(job.stdout)["state"] == "succeeded"
    models = json.loads(runner.invoke(cli_app, ["model", "list", "--json", *auth]).stdout)
    assert "digits-cli" in [m["name"] for m in models["items"]]
    dup = runner.invoke(cli_app, [*upload, *auth])
    assert dup.exit_code == 1 and "already has a version '2.0.0'" in dup.stderr


def test_jobs_failing_on_the_model_say_why_and_retry_as_new_rows(env: Env, worker: WorkerProcess) -> None:
    # Passes the cheap upload checks (a zip with a config.json) but is no Keras model.
    bogus = env.upload("broken", "1", model=keras_with_config({"class_name": "Nope", "config": {}}))
    # Labels beyond the model's 10 outputs: only the job, which loads the model, can know.
    import numpy as np

    with np.load(env.files["evaluation"]) as data:
        x, y = data["x"], data["y"].copy()
    y[0] = 12
    labels = env.upload("broken", "2", evaluation=npz_bytes(x=x, y=y))

    failed = env.wait_job(bogus["id"], ("succeeded", "failed"))
    assert failed["state"] == "failed" and failed["error"].startswith(
        "ModelLoadError: could not load Keras model"
    )
    assert str(env.settings.artifact_dir) not in failed["error"]  # no server paths in what operators see
    failed2 = env.wait_job(labels["id"], ("succeeded", "failed"))
    assert failed2["state"] == "failed"
    assert failed2["error"] == "EvaluationDataError: evaluation labels must be in 0..9, found 0..12"
    assert not (Path(env.settings.artifact_dir or "") / "models/broken/2/converted").exists()

    auth = ["--server", env.url, "--token", env.tokens["operator"]]
    result = CliRunner().invoke(cli_app, ["model", "retry", str(labels["id"]), "--json", *auth])
    assert result.exit_code == 1 and "EvaluationDataError" in result.stderr
    retried = json.loads(result.stdout)
    assert retried["retry_of_id"] == labels["id"] and retried["id"] != labels["id"]
    assert env.job(labels["id"])["state"] == "failed"  # the old row is kept as it was
    with env.http("viewer") as c:
        versions = c.get("/api/v1/models/broken/versions").json()["items"]
    assert [(v["version"], v["status"]) for v in versions] == [("1", "failed"), ("2", "failed")]


def test_register_converted_version_copies_a_verified_directory(env: Env, tmp_path: Path) -> None:
    source = tmp_path / "chain-entry"
    shutil.copytree(env.extra["converted"], source)
    factory = env.app.state.session_factory
    root = Path(env.settings.artifact_dir or "")
    with factory() as s:
        row = service.register_converted_version(s, env.settings, "registered", "1.0.0", source, actor="demo")
        assert row.artifact_dir == "models/registered/1.0.0/converted" and row.upload_dir is None
        assert row.summary is not None and row.summary["name"] == "tiny"
    copied = root / "models/registered/1.0.0/converted"
    assert sorted(p.name for p in copied.rglob("*")) == sorted(p.name for p in source.rglob("*"))
    with env.http("viewer") as c:
        assert c.get("/api/v1/models/registered/versions/1.0.0").json()["status"] == "ready"

    before = store_files(root)
    with factory() as s, pytest.raises(VersionExists):
        service.register_converted_version(s, env.settings, "registered", "1.0.0", source)
    tampered = tmp_path / "tampered"
    shutil.copytree(source, tampered)
    blob = bytearray((tampered / "float32.tflite").read_bytes())
    blob[100] ^= 0xFF
    (tampered / "float32.tflite").write_bytes(bytes(blob))
    with factory() as s, pytest.raises(InvalidConvertedDir, match="does not match its size/sha256"):
        service.register_converted_version(s, env.settings, "registered", "2.0.0", tampered)
    (source / "golden.npz").unlink()
    with factory() as s, pytest.raises(InvalidConvertedDir, match=r"lacks golden\.npz"):
        service.register_converted_version(s, env.settings, "other", "1.0.0", source)
    with factory() as s, pytest.raises(InvalidConvertedDir, match="not a directory"):
        service.register_converted_version(s, env.settings, "other", "1.0.0", tmp_path / "missing")
    assert store_files(root) == before
    with factory() as s:
        assert s.query(ModelVersion).join(ModelVersion.model).filter_by(name="other").count() == 0
        assert s.query(ConversionJob).count() >= 1
