"""Retraining events reach a real local HTTP receiver; an unreachable one leaves them pending, never lost."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

from drift_support import (
    NOW,
    Fleet,
    Receiver,
    free_port_url,
    make_baseline,
    provision_devices,
    register_release,
)
from pydantic import SecretStr
from sqlalchemy import select

from fleet_server.db import RetrainingEvent
from fleet_server.drift import deliver_pending, evaluate_all
from fleet_server.drift.webhook import signature
from fleet_server.settings import Settings

BASELINE = make_baseline()


def _drifted(session_factory, settings: Settings) -> None:
    with session_factory() as s:
        register_release(s, settings.artifact_dir, BASELINE)
        provision_devices(s, ["mcu-0", "mcu-1"])
        fleet = Fleet(BASELINE)
        fleet.add(["mcu-0", "mcu-1"], shift=0.6, count=8)
        fleet.store(s)
        s.commit()


def _events(session_factory) -> dict[str, RetrainingEvent]:
    with session_factory() as s:
        return {e.cohort: e for e in s.scalars(select(RetrainingEvent))}


def test_trigger_is_posted_with_its_evidence(session_factory, settings: Settings) -> None:
    _drifted(session_factory, settings)
    with Receiver() as receiver:
        live = settings.model_copy(update={"retraining_webhook_url": receiver.url})
        with session_factory() as s:
            summary = evaluate_all(s, live, NOW)
        assert summary.deliveries == {"delivered": 2, "failed": 0, "pending_no_url": 0}
        events = _events(session_factory)
        assert set(events) == {"all", "hw:esp32-s3"}
        assert all(
            e.delivery_state == "delivered" and e.delivered_to == receiver.url for e in events.values()
        )
        bodies = {b["cohort"]: b for b in receiver.received}
        body = bodies["hw:esp32-s3"]
        assert (
            body["type"] == "tinyfleet.retraining_trigger" and body["model"] == "kws" and body["version"] == 3
        )
        assert body["event_id"] == events["hw:esp32-s3"].event_uid
        assert any("input drift" in r for r in body["reasons"])
        assert max(f["psi"] for f in body["evidence"]["drift"]) > 0.2
        assert {h["X-TinyFleet-Event-Id"] for h in receiver.headers} == {e.event_uid for e in events.values()}
        # The condition persists: the episode is refreshed, nothing is posted again.
        with session_factory() as s:
            evaluate_all(s, live, NOW + dt.timedelta(minutes=5))
        assert len(receiver.received) == 2


def test_unreachable_receiver_keeps_event_pending_then_restart_delivers(
    session_factory, settings: Settings
) -> None:
    _drifted(session_factory, settings)
    dead = settings.model_copy(
        update={
            "retraining_webhook_url": free_port_url(),
            "retraining_webhook_attempts": 2,
            "retraining_webhook_backoff_s": 0,
        }
    )
    with session_factory() as s:
        summary = evaluate_all(s, dead, NOW)
    assert summary.deliveries == {"delivered": 0, "failed": 2, "pending_no_url": 0}
    for e in _events(session_factory).values():
        assert e.delivery_state == "pending" and e.attempts == 2 and e.delivered_at is None
        assert "ConnectError" in e.last_error
        assert e.next_attempt_at > NOW  # backed off
    # A run before the backoff has passed does not try again.
    with session_factory() as s:
        assert deliver_pending(s, dead, NOW) == {"delivered": 0, "failed": 0, "pending_no_url": 0}
    # "Restart": a fresh session with a receiver that now answers, an hour later.
    with Receiver() as receiver:
        live = settings.model_copy(update={"retraining_webhook_url": receiver.url})
        with session_factory() as s:
            assert deliver_pending(s, live, NOW + dt.timedelta(hours=1))["delivered"] == 2
        assert sorted(b["attempt"] for b in receiver.received) == [3, 3]
    for e in _events(session_factory).values():
        assert e.delivery_state == "delivered" and e.attempts == 3 and e.last_error is None


def test_receiver_error_status_is_retried_and_backoff_grows(session_factory, settings: Settings) -> None:
    _drifted(session_factory, settings)
    with Receiver(status=503) as receiver:
        failing = settings.model_copy(
            update={
                "retraining_webhook_url": receiver.url,
                "retraining_webhook_attempts": 1,
                "retraining_webhook_backoff_s": 0,
            }
        )
        with session_factory() as s:
            evaluate_all(s, failing, NOW)
        first = {k: e.next_attempt_at for k, e in _events(session_factory).items()}
        with session_factory() as s:
            deliver_pending(s, failing, NOW + dt.timedelta(days=1))
        events = _events(session_factory)
        assert all("HTTP 503" in e.last_error and e.attempts == 2 for e in events.values())
        gap_1 = {k: first[k] - NOW for k in first}
        gap_2 = {k: e.next_attempt_at - (NOW + dt.timedelta(days=1)) for k, e in events.items()}
        assert all(gap_2[k] > gap_1[k] for k in first)  # exponential backoff
        assert len(receiver.received) == 4


def test_without_url_events_wait(session_factory, settings: Settings) -> None:
    _drifted(session_factory, settings)
    with session_factory() as s:
        summary = evaluate_all(s, settings, NOW)
    assert summary.deliveries == {"delivered": 0, "failed": 0, "pending_no_url": 2}
    assert all(e.delivery_state == "pending" and e.attempts == 0 for e in _events(session_factory).values())


def test_signed_posts_verify_with_the_shared_secret(session_factory, settings: Settings) -> None:
    _drifted(session_factory, settings)
    with Receiver() as receiver:
        live = settings.model_copy(
            update={"retraining_webhook_url": receiver.url, "retraining_webhook_secret": SecretStr("s3cret")}
        )
        with session_factory() as s:
            evaluate_all(s, live, NOW)
        assert len(receiver.raw) == 2
        for body, headers in zip(receiver.raw, receiver.headers, strict=True):
            expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
            assert headers["X-TinyFleet-Signature"] == expected
            assert headers["X-TinyFleet-Signature"] != signature("other", body)
