"""Device downloads of release files: Basic auth, per-class visibility, Range / If-Range, bad input."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fleet_api_support import assert_error
from release_test_support import PI, basic_header, release_body

from fleet_server.api.routes.artifacts import RangeError, parse_range
from fleet_server.releases.keystore import Keystore
from fleet_server.settings import Settings

URL = "/api/v1/device/releases"


@pytest.fixture
def published(
    client: TestClient, as_role, keystore: Keystore, digits: dict[str, Path], provision
) -> dict[str, Any]:
    """Releases 1 and 2 (with a delta from 1) for the Pi class; a Pi device and an ESP32 device."""
    r1 = client.post("/api/v1/releases", json=release_body("1.0.1"), headers=as_role("operator")).json()
    r2 = client.post("/api/v1/releases", json=release_body("1.0.2"), headers=as_role("operator")).json()
    pi = provision("dev-dl-pi", PI)["credential"]
    esp = provision("dev-dl-esp", "esp32-s3")["credential"]
    return {
        "r1": r1,
        "r2": r2,
        "pi": basic_header("dev-dl-pi", pi["password"]),
        "esp": basic_header("dev-dl-esp", esp["password"]),
        "v1": (digits["1.0.1"] / "float32.tflite").read_bytes(),
        "v2": (digits["1.0.2"] / "float32.tflite").read_bytes(),
    }


def test_every_listed_file_downloads_with_its_hash(client: TestClient, published: dict[str, Any]) -> None:
    r2 = published["r2"]
    for f in r2["files"]:
        r = client.get(f["download_path"], headers=published["pi"])
        assert r.status_code == 200, (f["name"], r.text)
        assert hashlib.sha256(r.content).hexdigest() == f["sha256"] and len(r.content) == f["length"]
        assert r.headers["etag"] == f'"{f["sha256"]}"' and r.headers["accept-ranges"] == "bytes"
    artifact = client.get(f"{URL}/{r2['id']}/artifact", headers=published["pi"])
    assert artifact.content == published["v2"]
    manifest = client.get(f"{URL}/{r2['id']}/manifest", headers=published["pi"])
    assert manifest.headers["content-type"].startswith("application/json")


def test_ranges(client: TestClient, published: dict[str, Any]) -> None:
    url, pi, data = f"{URL}/{published['r2']['id']}/artifact", published["pi"], published["v2"]
    total = len(data)
    cases = {
        "bytes=100-": (100, total - 1),
        "bytes=0-0": (0, 0),
        "bytes=10-19": (10, 19),
        "bytes=-50": (total - 50, total - 1),
        f"bytes=5-{total + 1000}": (5, total - 1),  # a last byte past the end is clipped
        f"bytes=-{total * 2}": (0, total - 1),
    }
    for header, (first, last) in cases.items():
        r = client.get(url, headers={**pi, "Range": header})
        assert r.status_code == 206, (header, r.text)
        assert r.headers["content-range"] == f"bytes {first}-{last}/{total}"
        assert r.content == data[first : last + 1] and int(r.headers["content-length"]) == last - first + 1
    # If-Range with the current ETag keeps the range; another one gets the whole (changed) file.
    etag = f'"{hashlib.sha256(data).hexdigest()}"'
    assert client.get(url, headers={**pi, "Range": "bytes=10-", "If-Range": etag}).status_code == 206
    r = client.get(url, headers={**pi, "Range": "bytes=10-", "If-Range": '"' + "0" * 64 + '"'})
    assert r.status_code == 200 and r.content == data


BAD_RANGES = [
    ("bytes=999999999-", 416, "not satisfiable"),
    ("bytes=-0", 416, "not satisfiable"),
    ("bytes=20-10", 400, "last byte before first"),
    ("bytes=0-1,5-6", 400, "single byte range"),
    ("items=0-10", 400, "bytes="),
    ("bytes=abc-", 400, "malformed"),
    ("bytes=-", 400, "malformed"),
    ("bytes=1e3-", 400, "malformed"),
    ("bytes=" + "9" * 30 + "-", 400, "malformed"),
]


def test_bad_ranges(client: TestClient, published: dict[str, Any]) -> None:
    url = f"{URL}/{published['r2']['id']}/artifact"
    for header, status, fragment in BAD_RANGES:
        r = client.get(url, headers={**published["pi"], "Range": header})
        assert_error(r, status, fragment)
        if status == 416:
            assert r.headers["content-range"] == f"bytes */{len(published['v2'])}"


def test_parse_range_edges() -> None:
    assert parse_range("bytes=0-", 1) == (0, 0)
    assert parse_range("bytes=3-4", 10) == (3, 4)
    with pytest.raises(RangeError):
        parse_range("bytes=0-", 0)


def test_visibility_auth_and_paths(
    client: TestClient, published: dict[str, Any], as_role, settings: Settings
) -> None:
    r2 = published["r2"]
    unknown = client.get(f"{URL}/digits-99/artifact", headers=published["pi"])
    other_class = client.get(f"{URL}/{r2['id']}/artifact", headers=published["esp"])
    # A release for another hardware class is indistinguishable from one that does not exist.
    assert_error(unknown, 404)
    assert_error(other_class, 404)
    assert unknown.json() == other_class.json()
    assert_error(client.get(f"{URL}/{r2['id']}/artifact", headers=basic_header("dev-dl-pi", "wrong")), 401)
    assert_error(client.get(f"{URL}/{r2['id']}/artifact", headers=basic_header("ghost", "x")), 401)
    assert_error(client.get(f"{URL}/{r2['id']}/artifact"), 401)
    assert_error(client.get(f"{URL}/{r2['id']}/artifact", headers=as_role("admin")), 403)
    bad_names = [
        "model.tflite",
        "patch-" + "0" * 64,  # no such delta
        "patch-../../keys",
        "..",
        "%2e%2e%2f%2e%2e%2fkeys.json",
        "..%2F..%2Fkeys%2Fkeys.json",
        "manifest%00",
        "MANIFEST",
        "files.json",
    ]
    for name in bad_names:
        r = client.get(f"{URL}/{r2['id']}/{name}", headers=published["pi"])
        assert r.status_code == 404, (name, r.status_code, r.text)
        assert r.json()["error"]["code"] == "not_found"
    for release_id in ("..", "..%2F..%2Fkeys", "digits-2%2F..", "x" * 65):
        r = client.get(f"{URL}/{release_id}/manifest", headers=published["pi"])
        assert r.status_code in (404, 422), (release_id, r.status_code)
        assert set(r.json()) == {"error"}


def test_withdrawn_release_is_gone_for_devices(
    client: TestClient, published: dict[str, Any], as_role
) -> None:
    r1 = published["r1"]
    assert client.get(f"{URL}/{r1['id']}/manifest", headers=published["pi"]).status_code == 200
    assert client.post(f"/api/v1/releases/{r1['id']}/withdraw", headers=as_role("admin")).status_code == 200
    assert_error(client.get(f"{URL}/{r1['id']}/manifest", headers=published["pi"]), 404)


def test_a_file_missing_from_the_store_is_a_server_error_not_a_crash(
    client: TestClient, published: dict[str, Any], settings: Settings
) -> None:
    r2 = published["r2"]
    (settings.artifact_dir / "releases" / r2["id"] / "float32.tflite").unlink()
    error = assert_error(client.get(f"{URL}/{r2['id']}/artifact", headers=published["pi"]), 500, "missing")
    assert error["code"] == "artifact_store_error"
