"""Hypothesis strategies for every telemetry message type (imported by the telemetry tests)."""

from __future__ import annotations

import string
from typing import Any

from hypothesis import strategies as st

from telemetry.schemas import (
    FALLBACK_REASONS,
    OTA_STATES,
    U16_MAX,
    U32_MAX,
    VARIANTS,
    ArtifactRef,
    DeltaRef,
    ErrorEvent,
    FallbackSwitched,
    MetricsWindow,
    ModelRef,
    OtaStateChanged,
    OtaStatus,
    Ping,
    Rollback,
    SetFallbackPolicy,
    SetShadowMode,
    ShadowFigures,
    Status,
    UpdateAvailable,
)
from telemetry.topics import DEVICE_ID_PATTERN

device_ids = st.from_regex(DEVICE_ID_PATTERN, fullmatch=True)
model_names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.+\-]{0,23}\Z")
names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.+\-]{0,31}\Z")
idents = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}\Z")
texts = st.text(max_size=256)
u8 = st.integers(0, 255)
u16 = st.integers(0, U16_MAX)
u32 = st.integers(0, U32_MAX)
fractions = st.floats(0.0, 1.0)
percents = st.floats(0.0, 100.0)
levels = st.integers(0, 15)
urls = st.builds(
    lambda scheme, rest: f"{scheme}://{rest}",
    st.sampled_from(["http", "https"]),
    st.text(string.ascii_letters + string.digits + "-._~/?=&%:", min_size=1, max_size=200),
)
sha256s = st.text("0123456789abcdef", min_size=64, max_size=64)
model_refs = st.builds(ModelRef, name=model_names, version=u32, variant=st.sampled_from(VARIANTS))
ota_states = st.sampled_from(OTA_STATES)


@st.composite
def shadow_figures(draw: Any, max_samples: int = U32_MAX) -> ShadowFigures:
    samples = draw(st.integers(0, max_samples))
    p50 = draw(u32)
    return ShadowFigures(
        candidate_version=draw(u32),
        samples=samples,
        agreements=draw(st.integers(0, samples)),
        candidate_positives=draw(st.integers(0, samples)),
        candidate_false_positives=draw(u32),
        candidate_latency_p50_us=p50,
        candidate_latency_p95_us=draw(st.integers(p50, U32_MAX)),
    )


@st.composite
def metrics_windows(
    draw: Any, hist_count_max: int = 2**27, max_input_bins: int = 16, max_output_bins: int = 16
) -> MetricsWindow:
    """Any valid window; ``hist_count_max`` bounds each histogram bin (and nonfinite_inputs)."""
    input_hist = draw(st.lists(st.integers(0, hist_count_max), max_size=max_input_bins))
    output_hist = draw(st.lists(st.integers(0, hist_count_max), max_size=max_output_bins))
    nonfinite = draw(st.integers(0, hist_count_max))
    shadow = draw(st.none() | shadow_figures(max_samples=hist_count_max))
    floor = max(sum(input_hist) + nonfinite, sum(output_hist), shadow.samples if shadow else 0)
    inferences = draw(st.integers(floor, U32_MAX))
    p50 = draw(u32)
    p95 = draw(st.integers(p50, U32_MAX))
    return MetricsWindow(
        device_id=draw(device_ids),
        seq=draw(u32),
        window_start_s=draw(u32),
        window_len_s=draw(st.integers(1, U16_MAX)),
        duty_cycle=draw(fractions),
        battery_pct=draw(st.none() | percents),
        battery_mv=draw(st.none() | u16),
        charging=draw(st.booleans()),
        est_battery_life_min=draw(st.none() | u32),
        inferences=inferences,
        positives=draw(st.integers(0, inferences)),
        false_positives=draw(u32),
        latency_p50_us=p50,
        latency_p95_us=p95,
        latency_max_us=draw(st.integers(p95, U32_MAX)),
        model=draw(model_refs),
        fallback_level=draw(levels),
        input_feature=draw(u8),
        input_hist=input_hist,
        output_hist=output_hist,
        nonfinite_inputs=nonfinite,
        shadow=shadow,
    )


statuses = st.builds(
    Status,
    device_id=device_ids,
    ts=u32,
    uptime_s=u32,
    hardware_class=names,
    agent_version=names,
    model=st.none() | model_refs,
    active_slot=st.sampled_from([None, "a", "b"]),
    fallback_level=levels,
    shadow_enabled=st.booleans(),
    battery_pct=st.none() | percents,
    charging=st.booleans(),
    rss_kb=st.none() | u32,
    reply_to=st.none() | idents,
    online=st.booleans(),
    buffer_pending=st.none() | u32,
    buffer_dropped=st.none() | u32,
    cmd_rejected=st.none() | u32,
)


@st.composite
def fallback_switches(draw: Any) -> FallbackSwitched:
    a = draw(levels)
    b = draw(levels.filter(lambda x: x != a))
    return FallbackSwitched(
        device_id=draw(device_ids),
        ts=draw(u32),
        from_level=a,
        to_level=b,
        reason=draw(st.sampled_from(FALLBACK_REASONS)),
        detail=draw(st.none() | texts),
        model=draw(st.none() | model_refs),
    )


ota_changes = st.builds(
    OtaStateChanged,
    device_id=device_ids,
    ts=u32,
    release_id=idents,
    from_state=ota_states,
    to_state=ota_states,
    reason=st.none() | texts,
    cmd_id=st.none() | idents,
)
error_events = st.builds(
    ErrorEvent, device_id=device_ids, ts=u32, component=names, code=names, message=texts, fatal=st.booleans()
)


@st.composite
def ota_statuses(draw: Any) -> OtaStatus:
    total = draw(u32)
    return OtaStatus(
        device_id=draw(device_ids),
        ts=draw(u32),
        release_id=draw(idents),
        target_version=draw(u32),
        from_version=draw(st.none() | u32),
        state=draw(ota_states),
        via_delta=draw(st.booleans()),
        bytes_done=draw(st.integers(0, total)),
        bytes_total=total,
        attempt=draw(st.integers(1, 255)),
        error=draw(st.none() | texts),
        cmd_id=draw(st.none() | idents),
    )


artifact_refs = st.builds(ArtifactRef, url=urls, sha256=sha256s, size_bytes=st.integers(1, U32_MAX))
delta_refs = st.builds(
    DeltaRef, url=urls, sha256=sha256s, size_bytes=st.integers(1, U32_MAX), from_version=u32
)
updates = st.builds(
    UpdateAvailable,
    device_id=device_ids,
    cmd_id=idents,
    ts=u32,
    release_id=idents,
    model_name=model_names,
    target_version=u32,
    hardware_class=names,
    manifest=artifact_refs,
    artifact=artifact_refs,
    delta=st.none() | delta_refs,
    report=st.none() | artifact_refs,
    golden=st.none() | artifact_refs,
)
rollbacks = st.builds(
    Rollback,
    device_id=device_ids,
    cmd_id=idents,
    ts=u32,
    release_id=st.none() | idents,
    to_version=st.none() | u32,
    reason=texts,
)
shadow_cmds = st.builds(
    SetShadowMode,
    device_id=device_ids,
    cmd_id=idents,
    ts=u32,
    enabled=st.just(False),
    sample_fraction=fractions,
    candidate_version=st.none() | u32,
) | st.builds(
    SetShadowMode,
    device_id=device_ids,
    cmd_id=idents,
    ts=u32,
    enabled=st.just(True),
    sample_fraction=st.floats(0.0001, 1.0),
    candidate_version=st.none() | u32,
)
policies = st.builds(
    SetFallbackPolicy,
    device_id=device_ids,
    cmd_id=idents,
    ts=u32,
    chain=st.lists(
        st.sampled_from(["primary", "previous", "smaller_variant", "rule"]), min_size=1, max_size=4
    ),
    max_latency_us=st.none() | u32,
    max_consecutive_errors=st.integers(1, 1000),
    min_battery_pct=st.none() | percents,
    recover_after_s=st.integers(0, 86_400),
)
pings = st.builds(Ping, device_id=device_ids, cmd_id=idents, ts=u32)

any_message = st.one_of(
    metrics_windows(),
    statuses,
    fallback_switches(),
    ota_changes,
    error_events,
    ota_statuses(),
    updates,
    rollbacks,
    shadow_cmds,
    policies,
    pings,
)
