"""Which older releases a new release needs deltas from: the versions still in the field.

"In the field" = releases of the same model whose version devices currently report running
(``Device.current_model`` / ``current_version``, written by the ingest worker), plus the release being
replaced (the newest active one), restricted to releases for at least one of the new release's hardware
classes (a device only ever receives releases for its own class). Withdrawn releases count: devices may
still run them. Newest first, at most ``limit`` (each delta costs a bsdiff run at creation).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleet_server.db import Device, Release


def _for_classes(release: Release, hardware_classes: set[str]) -> bool:
    return bool(hardware_classes.intersection(release.hardware_classes or ()))


def releases_in_field(
    session: Session, model_name: str, hardware_classes: list[str], *, limit: int
) -> list[Release]:
    classes = set(hardware_classes)
    running = set(
        session.scalars(
            select(Device.current_version)
            .where(Device.current_model == model_name, Device.current_version.is_not(None))
            .distinct()
        )
    )
    candidates = [
        r
        for r in session.scalars(
            select(Release).where(Release.model_name == model_name).order_by(Release.counter.desc())
        )
        if _for_classes(r, classes)
    ]
    chosen: dict[int, Release] = {r.counter: r for r in candidates if r.version in running}
    replaced = next((r for r in candidates if r.state == "active"), None)
    if replaced is not None:
        chosen[replaced.counter] = replaced
    return [chosen[c] for c in sorted(chosen, reverse=True)][:limit]
