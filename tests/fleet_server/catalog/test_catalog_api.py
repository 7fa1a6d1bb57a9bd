"""/api/v1/models and /api/v1/jobs on SQLite and PostgreSQL: create, upload (202 + queued job), list,
get, retry, roles, and every refused upload leaving rows and the artifact store untouched."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from catalog_support import npz_bytes, store_files, zip_bytes
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fleet_api_support import assert_error
from sqlalchemy import update

from fleet_server.api import create_app
from fleet_server.db import ConversionJob, ModelVersion
from fleet_server.settings import Settings

Headers = Callable[[str], dict[str, str]]


def _read(files: dict[str, Path]) -> dict[str, bytes]:
    return {k: p.read_bytes() for k, p in files.items()}


@pytest.fixture(scope="session")
def good(tiny_files: dict[str, Path]) -> dict[str, bytes]:
    return _read(tiny_files)


@pytest.fixture
def upload(client: TestClient, as_role: Headers, good: dict[str, bytes]) -> Callable[..., Any]:
    def _upload(
        model_name: str = "tiny",
        version: str = "1.0.0",
        options: Any = None,
        role: str = "operator",
        omit: tuple[str, ...] = (),
        **override: bytes,
    ) -> Any:
        files = {k: (f"{k}.bin", v) for k, v in {**good, **override}.items() if k not in omit}
        data = {"version": version}
        if options is not None:
            data["options"] = options if isinstance(options, str) else json.dumps(options)
        return client.post(
            f"/api/v1/models/{model_name}/versions", data=data, files=files, headers=as_role(role)
        )

    return _upload


@pytest.fixture
def tiny_model(client: TestClient, as_role: Headers) -> dict[str, Any]:
    r = client.post(
        "/api/v1/models", json={"name": "tiny", "description": "test"}, headers=as_role("operator")
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


@pytest.fixture
def unchanged(app: FastAPI, snapshot: Callable[[], Any]) -> Iterator[Callable[[], None]]:
    """Call the yielded function to assert no row and no artifact-store file changed since the start."""
    root = Path(app.state.settings.artifact_dir)
    before = (snapshot(), store_files(root))

    def check() -> None:
        assert (snapshot(), store_files(root)) == before

    yield check


# --- models -------------------------------------------------------------------------------------------


def test_create_list_get_models(client: TestClient, as_role: Headers) -> None:
    for name in ("kws", "digits", "anomaly"):
        r = client.post("/api/v1/models", json={"name": name}, headers=as_role("operator"))
        assert r.status_code == 201, r.text
        assert r.json()["version_count"] == 0
    page = client.get("/api/v1/models", params={"limit": 2}, headers=as_role("viewer")).json()
    assert [m["name"] for m in page["items"]] == ["anomaly", "digits"]
    assert (page["total"], page["next_offset"]) == (3, 2)
    page2 = client.get("/api/v1/models", params={"limit": 2, "offset": 2}, headers=as_role("viewer")).json()
    assert [m["name"] for m in page2["items"]] == ["kws"] and page2["next_offset"] is None
    assert client.get("/api/v1/models/kws", headers=as_role("viewer")).json()["name"] == "kws"


def test_model_refusals(client: TestClient, as_role: Headers, tiny_model: Any, unchanged: Any) -> None:
    assert_error(
        client.post("/api/v1/models", json={"name": "tiny"}, headers=as_role("operator")),
        409,
        "already exists",
    )
    for bad in ("../x", ".hidden", "a/b", "", "x" * 65, "sp ace"):
        r = client.post("/api/v1/models", json={"name": bad}, headers=as_role("operator"))
        assert_error(r, 422)
    assert_error(client.post("/api/v1/models", json={"name": "v"}, headers=as_role("viewer")), 403, "viewer")
    assert_error(client.post("/api/v1/models", json={"name": "v"}), 401)
    assert_error(client.get("/api/v1/models/nope", headers=as_role("viewer")), 404, "no model named 'nope'")
    assert_error(client.get("/api/v1/models", params={"limit": 101}, headers=as_role("viewer")), 422, "limit")
    unchanged()


# --- upload -------------------------------------------------------------------------------------------


def test_upload_queues_a_job_and_stores_the_files(
    app: FastAPI, client: TestClient, as_role: Headers, upload: Any, tiny_model: Any, good: dict[str, bytes]
) -> None:
    options = {"task": {"class_names": [str(i) for i in range(10)]}, "profiles": ["esp32-s3", "pi-4"]}
    r = upload(options=options)
    assert r.status_code == 202, r.text
    body = r.json()
    job, version = body["job"], body["version"]
    assert (job["state"], job["progress"], job["attempts"], job["queue"]) == ("queued", 0.0, 0, "local")
    assert (job["model"], job["version"], job["created_by"]) == ("tiny", "1.0.0", "operator-token")
    assert (version["status"], version["artifact_dir"], version["summary"]) == ("queued", None, None)
    assert version["options"]["profiles"] == ["esp32-s3", "pi-4"]
    assert version["job"]["id"] == job["id"]

    upload_dir = Path(app.state.settings.artifact_dir) / "models/tiny/1.0.0/upload"
    assert (upload_dir / "model.keras").read_bytes() == good["model"]
    assert (upload_dir / "calibration.npz").read_bytes() == good["calibration"]
    assert (upload_dir / "evaluation.npz").read_bytes() == good["evaluation"]
    assert not list((upload_dir.parents[1]).glob(".staging-*"))

    got = client.get(f"/api/v1/jobs/{job['id']}", headers=as_role("viewer")).json()
    assert got["state"] == "queued" and got["report"] is None
    detail = client.get("/api/v1/models/tiny/versions/1.0.0", headers=as_role("viewer")).json()
    assert detail["status"] == "queued" and detail["artifacts"] == []
    listed = client.get("/api/v1/models/tiny/versions", headers=as_role("viewer")).json()
    assert [v["version"] for v in listed["items"]] == ["1.0.0"]
    assert client.get("/api/v1/models/tiny", headers=as_role("viewer")).json()["version_count"] == 1
    jobs = client.get("/api/v1/jobs", params={"state": "queued"}, headers=as_role("viewer")).json()
    assert [j["id"] for j in jobs["items"]] == [job["id"]]
    assert (
        client.get("/api/v1/jobs", params={"state": "failed"}, headers=as_role("viewer")).json()["total"] == 0
    )
    assert_error(
        client.get("/api/v1/models/tiny/versions/1.0.0/report", headers=as_role("viewer")),
        404,
        "no converted",
    )


def _bad_uploads(good: dict[str, bytes]) -> list[tuple[str, dict[str, Any], int, str]]:
    x = np.load(io.BytesIO(good["evaluation"]))["x"]
    y = np.load(io.BytesIO(good["evaluation"]))["y"]
    nan = x.copy()
    nan[3, 0, 0, 0] = np.nan
    return [
        ("not a zip", {"model": b"hello, not a model"}, 422, "not a zip archive"),
        ("zip without config", {"model": zip_bytes({"a.txt": b"x"})}, 422, "no config.json"),
        ("truncated zip", {"model": good["model"][: len(good["model"]) // 2]}, 422, "corrupted zip"),
        ("empty model", {"model": b""}, 422, "model file is empty"),
        (
            "calibration garbage",
            {"calibration": b"not numpy at all"},
            422,
            "calibration file is not a .npy/.npz",
        ),
        (
            "calibration pickled",
            {"calibration": npz_bytes(x=np.array([{"a": 1}], dtype=object))},
            422,
            "calibr",
        ),
        (
            "eval wrong keys",
            {"evaluation": npz_bytes(a=x, b=y)},
            422,
            "must be an .npz with arrays 'x' and 'y'",
        ),
        (
            "eval float labels",
            {"evaluation": npz_bytes(x=x, y=y.astype(np.float32))},
            422,
            "integer class ids",
        ),
        ("eval label count", {"evaluation": npz_bytes(x=x, y=y[:-1])}, 422, "to match 'x'"),
        ("eval negative label", {"evaluation": npz_bytes(x=x, y=y - 1)}, 422, "class ids >= 0"),
        ("eval NaN", {"evaluation": npz_bytes(x=nan, y=y)}, 422, "NaN or inf in 1 sample"),
        ("eval float64", {"evaluation": npz_bytes(x=x.astype(np.float64), y=y)}, 422, "float32"),
        ("cal/eval shapes", {"calibration": npz_bytes(x=x.reshape(-1, 64))}, 422, "both must match"),
        (
            "data vs model input",
            {
                "calibration": npz_bytes(x=x.reshape(-1, 64)),
                "evaluation": npz_bytes(x=x.reshape(-1, 64), y=y),
            },
            422,
            "the model input is (8, 8, 1)",
        ),
        ("empty calibration", {"calibration": npz_bytes(x=x[:0])}, 422, "empty (0 samples)"),
    ]


@pytest.mark.parametrize("case", range(15))
def test_bad_upload_is_refused_and_nothing_is_stored(
    case: int, upload: Any, tiny_model: Any, good: dict[str, bytes], unchanged: Any
) -> None:
    name, override, status, fragment = _bad_uploads(good)[case]
    error = assert_error(upload(**override), status, fragment)
    assert error["code"] == "invalid_upload", name
    unchanged()


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ("{not json", "options is not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ({"colour": "red"}, "colour"),
        ({"profiles": ["toaster"]}, "unknown hardware profiles"),
        ({"task": {"class_names": ["a", "b"], "positive_class_ids": [7]}}, "outside 0..1"),
        ({"variants": []}, "at least one variant"),
        ({"max_accuracy_drop_pp": -1}, "max_accuracy_drop_pp"),
        ({"task": {"class_names": ["a", "b"]}}, "the task names 2 classes"),  # labels go up to 9
    ],
)
def test_bad_options_are_refused(
    options: Any, fragment: str, upload: Any, tiny_model: Any, unchanged: Any
) -> None:
    assert_error(upload(options=options), 422, fragment)
    unchanged()


def test_upload_refusals_by_route(
    client: TestClient, upload: Any, tiny_model: Any, as_role: Headers, unchanged: Any
) -> None:
    assert_error(upload(model_name="nope"), 404, "no model named 'nope'")
    assert_error(upload(version="../1"), 422, "version")
    assert_error(upload(version=".1"), 422, "version")
    assert_error(upload(omit=("evaluation",)), 422, "evaluation")
    assert_error(upload(role="viewer"), 403)
    unchanged()
    assert upload().status_code == 202
    snap_files = store_files(Path(client.app.state.settings.artifact_dir))  # type: ignore[attr-defined]
    assert_error(upload(), 409, "already has a version '1.0.0'")
    assert store_files(Path(client.app.state.settings.artifact_dir)) == snap_files  # type: ignore[attr-defined]


def test_upload_over_the_size_limit_is_refused_while_arriving(
    settings: Settings, tokens: dict[str, str], good: dict[str, bytes]
) -> None:
    settings.model_upload_max_bytes = 4096
    small = create_app(settings)  # the same database as the other fixtures, a 4 KiB upload limit
    headers = {"Authorization": f"Bearer {tokens['operator']}"}
    root = Path(settings.artifact_dir or "")
    try:
        with TestClient(small, raise_server_exceptions=False) as client:
            assert client.post("/api/v1/models", json={"name": "tiny"}, headers=headers).status_code == 201
            before = store_files(root)
            # Content-Length declared: refused before the body is read.
            files = {k: (k, v) for k, v in good.items()}
            r = client.post(
                "/api/v1/models/tiny/versions", data={"version": "1"}, files=files, headers=headers
            )
            assert assert_error(r, 413, "exceeds the limit of 4096 bytes")["code"] == "payload_too_large"

            # No Content-Length (chunked): refused by the byte count as the body streams in.
            def chunks() -> Iterator[bytes]:
                yield b'--b\r\nContent-Disposition: form-data; name="version"\r\n\r\n2.0.0\r\n'
                yield b'--b\r\nContent-Disposition: form-data; name="model"; filename="m"\r\n\r\n'
                for _ in range(64):
                    yield good["model"][:1024]
                yield b"\r\n--b--\r\n"

            r = client.post(
                "/api/v1/models/tiny/versions",
                content=chunks(),
                headers={**headers, "content-type": "multipart/form-data; boundary=b"},
            )
            assert "content-length" not in {k.lower() for k in r.request.headers}
            assert_error(r, 413, "exceeds the limit of 4096 bytes")
            assert store_files(root) == before
            with small.state.session_factory() as s:
                assert s.query(ModelVersion).count() == 0
    finally:
        small.state.engine.dispose()


# --- jobs ---------------------------------------------------------------------------------------------


def _set_state(app: FastAPI, job_id: int, state: str, error: str | None = None) -> None:
    with app.state.session_factory() as s:
        s.execute(update(ConversionJob).where(ConversionJob.id == job_id).values(state=state, error=error))
        s.commit()


def test_retry_makes_a_new_job_only_for_the_latest_failed_one(
    app: FastAPI, client: TestClient, upload: Any, tiny_model: Any, as_role: Headers
) -> None:
    first = upload().json()["job"]
    assert_error(client.post(f"/api/v1/jobs/{first['id']}/retry", headers=as_role("operator")), 409, "queued")
    _set_state(app, first["id"], "failed", "EvaluationDataError: labels")
    assert_error(client.post(f"/api/v1/jobs/{first['id']}/retry", headers=as_role("viewer")), 403)
    r = client.post(f"/api/v1/jobs/{first['id']}/retry", headers=as_role("operator"))
    assert r.status_code == 202, r.text
    second = r.json()
    assert (second["state"], second["retry_of_id"], second["attempts"]) == ("queued", first["id"], 0)
    old = client.get(f"/api/v1/jobs/{first['id']}", headers=as_role("viewer")).json()
    assert (old["state"], old["error"]) == ("failed", "EvaluationDataError: labels")  # kept as it was
    assert_error(
        client.post(f"/api/v1/jobs/{first['id']}/retry", headers=as_role("operator")), 409, "already retried"
    )
    detail = client.get("/api/v1/models/tiny/versions/1.0.0", headers=as_role("viewer")).json()
    assert detail["job"]["id"] == second["id"] and detail["status"] == "queued"
    other = upload(version="1.1.0").json()["job"]
    listed = client.get("/api/v1/models/tiny/versions", headers=as_role("viewer")).json()["items"]
    assert [(v["version"], v["job"]["id"]) for v in listed] == [
        ("1.0.0", second["id"]),
        ("1.1.0", other["id"]),
    ]
    assert_error(
        client.post("/api/v1/jobs/999999/retry", headers=as_role("operator")), 404, "no conversion job"
    )
    assert_error(client.get("/api/v1/jobs/999999", headers=as_role("viewer")), 404)
    assert_error(client.get("/api/v1/jobs/0", headers=as_role("viewer")), 422)


def test_device_credentials_cannot_use_catalog_routes(
    client: TestClient, provision: Any, upload: Any, tiny_model: Any
) -> None:
    from fleet_api_support import basic

    cred = provision("dev-1")["credential"]
    headers = basic(cred["username"], cred["password"])
    assert_error(client.get("/api/v1/models", headers=headers), 403, "device credentials")
    assert_error(client.post("/api/v1/models", json={"name": "x"}, headers=headers), 403)


def test_calibration_may_be_a_plain_npy(upload: Any, tiny_model: Any, good: dict[str, bytes]) -> None:
    x = np.load(io.BytesIO(good["calibration"]))["x"]
    buf = io.BytesIO()
    np.save(buf, x)
    r = upload(calibration=buf.getvalue())
    assert r.status_code == 202, r.text
