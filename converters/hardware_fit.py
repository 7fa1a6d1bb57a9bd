"""Which variants fit which hardware class, and which one each class should run by default.

Rules: flash = model bytes <= model_flash_budget_bytes; RAM <= model_ram_budget_bytes, where RAM is
the measured TFLM arena + input/output buffers on TFLM classes and the variant's non-constant tensor
bytes on LiteRT classes; the runtime must support the variant (MCU classes run only full_int8 on
TFLM). The default is the first of the profile's preferred_variants that fits and was accepted.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel

from converters.errors import NoHardwareFitError
from converters.report import HardwareFit, VariantFit
from firmware_stubs.hardware_profiles import PROFILES, HardwareProfile


class VariantFootprint(BaseModel):
    variant: str
    flash_bytes: int
    litert_ram_bytes: int
    tflm_ram_bytes: int | None  # arena + I/O; None when TFLM cannot run it (not full_int8, or unsupported)
    accepted: bool


def fit_profile(profile: HardwareProfile, footprints: list[VariantFootprint]) -> HardwareFit:
    variants: dict[str, VariantFit] = {}
    for fp in footprints:
        ram = fp.tflm_ram_bytes if profile.runtime == "tflm" else fp.litert_ram_bytes
        reasons = []
        if fp.variant not in profile.supported_variants:
            reasons.append(
                f"{profile.runtime} on {profile.name} runs only {', '.join(profile.supported_variants)}"
            )
        elif ram is None:
            reasons.append("the TFLite Micro interpreter cannot run this model")
        if fp.flash_bytes > profile.model_flash_budget_bytes:
            reasons.append(f"flash {fp.flash_bytes} B > budget {profile.model_flash_budget_bytes} B")
        if ram is not None and ram > profile.model_ram_budget_bytes:
            reasons.append(f"RAM {ram} B > budget {profile.model_ram_budget_bytes} B")
        variants[fp.variant] = VariantFit(
            fits=not reasons,
            flash_bytes=fp.flash_bytes,
            ram_bytes=ram if fp.variant in profile.supported_variants else None,
            reason="; ".join(reasons) or None,
        )
    accepted = {fp.variant for fp in footprints if fp.accepted}
    fitting = [v for v, f in variants.items() if f.fits]
    default = next((v for v in profile.preferred_variants if v in fitting and v in accepted), None)
    default_reason = None
    if default is None:
        default_reason = (
            "no variant fits" if not fitting else f"fitting variants {fitting} were rejected by validation"
        )
    return HardwareFit(
        profile=profile.name,
        runtime=profile.runtime,
        model_flash_budget_bytes=profile.model_flash_budget_bytes,
        model_ram_budget_bytes=profile.model_ram_budget_bytes,
        variants=variants,
        fitting_variants=fitting,
        default_variant=default,
        default_reason=default_reason,
    )


def fit_all(
    footprints: list[VariantFootprint], profile_names: Iterable[str] | None = None
) -> dict[str, HardwareFit]:
    """Fit per profile; NoHardwareFitError when no variant fits any of the profiles checked."""
    names = list(profile_names) if profile_names is not None else list(PROFILES)
    fits = {name: fit_profile(PROFILES[name], footprints) for name in names}
    if not any(f.fitting_variants for f in fits.values()):
        sizes = ", ".join(
            f"{fp.variant}: flash {fp.flash_bytes} B, RAM {fp.litert_ram_bytes} B (LiteRT)"
            + (f" / {fp.tflm_ram_bytes} B (TFLM arena + I/O)" if fp.tflm_ram_bytes is not None else "")
            for fp in footprints
        )
        budgets = ", ".join(
            f"{n}: flash {PROFILES[n].model_flash_budget_bytes} B, RAM {PROFILES[n].model_ram_budget_bytes} B"
            for n in names
        )
        raise NoHardwareFitError(
            f"the model fits none of the hardware classes checked. Sizes: {sizes}. Budgets: {budgets}"
        )
    return fits
