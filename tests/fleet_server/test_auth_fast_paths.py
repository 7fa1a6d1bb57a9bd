"""The per-request auth shortcuts stay correct: PBKDF2 results reused only for the same stored hash and
secret, token last-use written at most once a minute."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fleet_api_support import basic
from sqlalchemy import select

from fleet_server import auth
from fleet_server.db import ApiToken


@pytest.fixture
def kdf_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = auth.verify_device_secret

    def counting(secret: str, stored: str) -> bool:
        calls.append(stored)
        return real(secret, stored)

    monkeypatch.setattr(auth, "verify_device_secret", counting)
    return calls


def test_device_kdf_runs_once_per_credential_and_never_lets_an_old_one_in(
    client: TestClient,
    as_role: Callable[[str], dict[str, str]],
    provision: Callable[..., dict[str, Any]],
    kdf_calls: list[str],
) -> None:
    secret = provision("fast-1")["credential"]["password"]
    for _ in range(5):
        assert client.get("/api/v1/device/self", headers=basic("fast-1", secret)).status_code == 200
    assert len(kdf_calls) == 1  # the first request paid for PBKDF2, the next four did not

    wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    for _ in range(2):  # failures are never cached: each one pays the KDF
        assert client.get("/api/v1/device/self", headers=basic("fast-1", wrong)).status_code == 401
    assert len(kdf_calls) == 3

    new = client.post("/api/v1/devices/fast-1/credential", headers=as_role("operator")).json()["password"]
    assert client.get("/api/v1/device/self", headers=basic("fast-1", secret)).status_code == 401
    assert client.get("/api/v1/device/self", headers=basic("fast-1", new)).status_code == 200

    client.delete("/api/v1/devices/fast-1", headers=as_role("operator"))
    assert client.get("/api/v1/device/self", headers=basic("fast-1", new)).status_code == 401


def test_same_secret_on_another_device_is_not_taken_from_the_cache(
    client: TestClient, provision: Callable[..., dict[str, Any]]
) -> None:
    a = provision("fast-a")["credential"]["password"]
    provision("fast-b")
    assert client.get("/api/v1/device/self", headers=basic("fast-a", a)).status_code == 200
    assert client.get("/api/v1/device/self", headers=basic("fast-b", a)).status_code == 401


def test_token_last_use_is_recorded_once_a_minute(
    app: FastAPI, client: TestClient, as_role: Callable[[str], dict[str, str]]
) -> None:
    def last_used() -> Any:
        with app.state.session_factory() as s:
            return s.scalar(select(ApiToken.last_used_at).where(ApiToken.name == "viewer-token"))

    assert last_used() is None
    assert client.get("/api/v1/devices", headers=as_role("viewer")).status_code == 200
    first = last_used()
    assert first is not None
    for _ in range(3):
        client.get("/api/v1/devices", headers=as_role("viewer"))
    assert last_used() == first  # not rewritten within the minute
