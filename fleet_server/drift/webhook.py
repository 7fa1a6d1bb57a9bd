"""Deliver retraining-trigger events to the operator's webhook: HTTP POST JSON, retries with backoff.

``retraining_events`` is an outbox: rows are ``pending`` until the receiver answers 2xx. A delivery run
(``deliver_pending``)

1. *claims* the due rows (``next_attempt_at <= now``) in a short transaction, pushing their
   ``next_attempt_at`` past the run's worst-case duration (a lease: another server process running the
   evaluator at the same time skips them; PostgreSQL also uses ``FOR UPDATE SKIP LOCKED``);
2. POSTs each one up to ``retraining_webhook_attempts`` times, sleeping ``backoff_s * 2**k`` between;
3. stores the outcome: ``delivered`` with the time and URL, or still ``pending`` with the error, the
   attempt count and the next try at ``now + min(max_backoff, backoff * 2**attempts)``.

Nothing is ever dropped: an unreachable receiver only pushes the next try further out (capped), and a
server restart picks up whatever is still pending. Delivery is at-least-once (a crash between the
receiver's 2xx and the commit repeats it): the body and the ``X-TinyFleet-Event-Id`` header carry the
event's uid so a receiver can drop duplicates. With ``TINYFLEET_RETRAINING_WEBHOOK_SECRET`` set, each
POST carries ``X-TinyFleet-Signature: sha256=<hex HMAC-SHA256 of the body>`` so the receiver can check
that it comes from this server.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleet_server.db.drift import RetrainingEvent
from fleet_server.settings import Settings

EVENT_TYPE = "tinyfleet.retraining_trigger"
USER_AGENT = "tinyfleet-retraining-webhook/1"
MAX_BATCH = 100  # events claimed per run; the rest wait for the next run


def payload(event: RetrainingEvent) -> dict[str, Any]:
    return {
        "type": EVENT_TYPE,
        "event_id": event.event_uid,
        "model": event.model_name,
        "version": event.model_version,
        "cohort": event.cohort,
        "reasons": list(event.reasons),
        "evidence": event.evidence,
        "created_at": event.created_at.isoformat(),
        "last_seen_at": event.last_seen_at.isoformat(),
        "count": event.count,
        "attempt": event.attempts + 1,
    }


def _next_backoff(settings: Settings, attempts: int) -> float:
    base = max(settings.retraining_webhook_backoff_s, 1.0)
    return min(settings.retraining_webhook_max_backoff_s, base * 2 ** min(attempts, 30))


def signature(secret: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of the exact body bytes with the shared secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _post(settings: Settings, url: str, body: dict[str, Any], event_uid: str) -> str | None:
    """One POST; None on 2xx, else the error text."""
    import httpx

    content = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "X-TinyFleet-Event-Id": event_uid,
        "User-Agent": USER_AGENT,
    }
    if settings.retraining_webhook_secret is not None:
        headers["X-TinyFleet-Signature"] = signature(
            settings.retraining_webhook_secret.get_secret_value(), content
        )
    try:
        response = httpx.post(
            url,
            content=content,
            timeout=settings.retraining_webhook_timeout_s,
            headers=headers,
            follow_redirects=False,
        )
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:1000]
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}: {response.text[:200]}"


def _claim(session: Session, settings: Settings, now: dt.datetime) -> list[int]:
    # Worst case of one event's tries (timeouts + in-run backoff) times the batch, plus slack.
    per_event = settings.retraining_webhook_attempts * settings.retraining_webhook_timeout_s + (
        settings.retraining_webhook_backoff_s * 2**settings.retraining_webhook_attempts
    )
    lease = per_event * MAX_BATCH + 60.0
    stmt = (
        select(RetrainingEvent)
        .where(RetrainingEvent.delivery_state == "pending", RetrainingEvent.next_attempt_at <= now)
        .order_by(RetrainingEvent.next_attempt_at, RetrainingEvent.id)
        .limit(MAX_BATCH)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    rows = list(session.scalars(stmt))
    for row in rows:
        row.next_attempt_at = now + dt.timedelta(seconds=lease)
    ids = [row.id for row in rows]
    session.commit()
    return ids


def deliver_pending(
    session: Session,
    settings: Settings,
    now: dt.datetime,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, int]:
    """Deliver due pending events; returns counts ``{"delivered", "failed", "pending_no_url"}``."""
    url = settings.retraining_webhook_url
    if not url:
        pending = session.scalars(
            select(RetrainingEvent.id).where(RetrainingEvent.delivery_state == "pending")
        ).all()
        return {"delivered": 0, "failed": 0, "pending_no_url": len(pending)}
    delivered = failed = 0
    for event_id in _claim(session, settings, now):
        event = session.get(RetrainingEvent, event_id)
        if event is None or event.delivery_state != "pending":
            continue
        body, uid, before = payload(event), event.event_uid, event.attempts
        session.commit()  # no transaction stays open across the HTTP calls and backoff sleeps
        error: str | None = None
        tries = 0
        for attempt in range(settings.retraining_webhook_attempts):
            if attempt:
                sleep(settings.retraining_webhook_backoff_s * 2 ** (attempt - 1))
            body["attempt"] = before + attempt + 1
            error = _post(settings, url, body, uid)
            tries += 1
            if error is None:
                break
        event = session.get(RetrainingEvent, event_id)
        assert event is not None  # events are never deleted
        event.attempts = before + tries
        event.last_attempt_at = now
        if error is None:
            event.delivery_state = "delivered"
            event.delivered_at = now
            event.delivered_to = url[:512]
            event.last_error = None
            delivered += 1
        else:
            event.last_error = error[:1000]
            event.next_attempt_at = now + dt.timedelta(seconds=_next_backoff(settings, event.attempts))
            failed += 1
        session.commit()  # one event at a time: a crash later does not undo this outcome
    return {"delivered": delivered, "failed": failed, "pending_no_url": 0}
