"""Shadow mode on a device budget: a candidate model runs beside the active one on a share of inputs.

Only the active model's decision is acted on. The candidate runs on an exact share of samples
(a deterministic credit counter, not a coin: over n samples it runs floor(n x fraction) or one more
times), so the extra energy is bounded by ``fraction x candidate invoke time``. With
``energy_budget_fraction`` the share is also capped so that the candidate's extra active time stays
under that fraction of the active model's: fraction <= budget x active_time / candidate_time, from the
running mean invoke times.

False positives of the candidate: feedback only exists for samples the device acted on (active
positive). A candidate positive on such a sample that feedback marks false is a candidate false
positive; candidate positives where the active model was negative cannot be judged on the device
(they are counted as would-be positives only). docs/device-agent.md discusses the bias.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from device_agent.model_manager import LoadedModel, TaskRule

# How many acted-on samples we remember the candidate's decision for, waiting for feedback.
FEEDBACK_MEMORY = 10_000


@dataclass(frozen=True)
class ShadowOutcome:
    sample_index: int
    candidate_positive: bool
    agreed: bool
    candidate_score: float
    invoke_ns: int


@dataclass
class ShadowTotals:
    samples: int = 0
    agreements: int = 0
    candidate_positives: int = 0
    candidate_false_positives: int = 0
    candidate_invoke_ns: int = 0
    energy_mah: float = 0.0
    skipped_for_budget: int = 0


class ShadowRunner:
    def __init__(
        self,
        candidate: LoadedModel,
        rule: TaskRule,
        *,
        sample_fraction: float,
        candidate_version: int,
        energy_budget_fraction: float | None = None,
    ) -> None:
        if not 0.0 < sample_fraction <= 1.0:
            raise ValueError(f"sample_fraction must be in (0, 1], got {sample_fraction}")
        if energy_budget_fraction is not None and energy_budget_fraction <= 0:
            raise ValueError(f"energy_budget_fraction must be > 0, got {energy_budget_fraction}")
        self.candidate = candidate
        self.rule = rule
        self.sample_fraction = sample_fraction
        self.candidate_version = candidate_version
        self.energy_budget_fraction = energy_budget_fraction
        self.totals = ShadowTotals()
        self._credit = 0.0
        self._active_ns = 0
        self._active_n = 0
        self._acted: OrderedDict[int, bool] = OrderedDict()  # acted-on sample -> candidate positive

    @property
    def effective_fraction(self) -> float:
        f = self.sample_fraction
        if self.energy_budget_fraction is not None and self._active_n and self.totals.samples:
            active_mean = self._active_ns / self._active_n
            cand_mean = self.totals.candidate_invoke_ns / self.totals.samples
            if cand_mean > 0:
                f = min(f, self.energy_budget_fraction * active_mean / cand_mean)
        return f

    def observe_active(self, invoke_ns: int) -> None:
        self._active_ns += int(invoke_ns)
        self._active_n += 1

    def _selected(self) -> bool:
        fraction = self.effective_fraction
        self._credit += fraction
        if self._credit >= 1.0 - 1e-12:
            self._credit -= 1.0
            return True
        if fraction < self.sample_fraction:
            self.totals.skipped_for_budget += 1
        return False

    def run(self, sample_index: int, x: np.ndarray, active_positive: bool) -> ShadowOutcome | None:
        """Run the candidate on this sample if it is in the share; never raises for a candidate failure
        beyond :class:`device_agent.runtime.base.InvokeError`, which the caller logs and counts."""
        if not self._selected():
            return None
        inv = self.candidate.invoke(x)
        score = self.rule.positive_score(inv.scores)
        positive = score >= self.rule.score_threshold
        t = self.totals
        t.samples += 1
        t.agreements += positive == active_positive
        t.candidate_positives += positive
        t.candidate_invoke_ns += inv.invoke_ns
        if active_positive:
            self._acted[sample_index] = positive
            if len(self._acted) > FEEDBACK_MEMORY:
                self._acted.popitem(last=False)
        return ShadowOutcome(sample_index, positive, positive == active_positive, score, inv.invoke_ns)

    def on_false_positive(self, sample_index: int) -> bool:
        """Feedback: the device's action on ``sample_index`` was a false positive. True when the
        candidate had also said positive there (a candidate false positive)."""
        was_positive = self._acted.pop(sample_index, None)
        if was_positive:
            self.totals.candidate_false_positives += 1
            return True
        return False

    def add_energy(self, mah: float) -> None:
        self.totals.energy_mah += mah
