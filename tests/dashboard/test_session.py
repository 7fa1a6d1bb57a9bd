"""Session cookies: signed, expiring, refused when altered; the signing secret is generated once."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from fleet_server.dashboard.session import (
    SECRET_FILE,
    DashboardSession,
    csrf_ok,
    decode_cookie,
    encode_cookie,
    load_or_create_secret,
)
from fleet_server.settings import Settings

SECRET = b"s" * 32
SESSION = DashboardSession(token_id=7, token_hash="ab" * 32, csrf="c" * 32, expires_at=2_000_000_000)


def test_round_trip() -> None:
    cookie = encode_cookie(SESSION, SECRET)
    assert decode_cookie(cookie, SECRET, now=1_900_000_000) == SESSION


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c[:-2] + ("AA" if c[-2:] != "AA" else "BB"),  # signature altered
        lambda c: ("f" if c[0] != "f" else "g") + c[1:],  # payload altered
        lambda c: c.replace(".", ""),  # no signature
        lambda c: c + "." + c,
        lambda c: "",
        lambda c: "x" * 5000,
        lambda c: "not base64!." + c.split(".")[1],
    ],
)
def test_altered_cookies_are_refused(mutate) -> None:  # type: ignore[no-untyped-def]
    assert decode_cookie(mutate(encode_cookie(SESSION, SECRET)), SECRET, now=1_900_000_000) is None


def test_expired_or_other_secret_is_refused() -> None:
    cookie = encode_cookie(SESSION, SECRET)
    assert decode_cookie(cookie, SECRET, now=SESSION.expires_at) is None
    assert decode_cookie(cookie, b"t" * 32, now=1_900_000_000) is None


def test_csrf_check() -> None:
    assert csrf_ok(SESSION, SESSION.csrf)
    assert not csrf_ok(SESSION, None) and not csrf_ok(SESSION, "") and not csrf_ok(SESSION, "c" * 31)


def test_secret_generated_once_with_owner_only_mode(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d")
    first = load_or_create_secret(settings)
    assert len(first) >= 32
    path = tmp_path / "d" / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(Settings(data_dir=tmp_path / "d")) == first


def test_configured_secret_wins_and_must_be_long_enough(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, dashboard_secret=SecretStr("x" * 20))
    assert load_or_create_secret(settings) == b"x" * 20
    assert not (tmp_path / SECRET_FILE).exists()
    with pytest.raises(ValueError, match="at least 16"):
        load_or_create_secret(Settings(data_dir=tmp_path, dashboard_secret=SecretStr("short")))
