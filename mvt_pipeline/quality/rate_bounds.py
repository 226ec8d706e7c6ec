"""One-sided confidence bounds of a binomial rate, and the rule every rate gate applies with them.

A rate gate (event loss, variant flips, quarantined lines, duplicates, bots) fails only when

- the sample is large enough to judge: at least `min_sample` trials (`Thresholds.min_sample`), and
- the *lower* one-sided bound of the rate, at `confidence` (`Thresholds.confidence`), exceeds the
  threshold: we are at least that confident the true rate is above it.

3 lost of 287 (1.05 %) against 1 % is then "too few events to judge"; 300 of 10,300 fails; 11 of
1,011 (1.09 %, lower bound 0.6 %) passes. A sample below the minimum is reported as such, never
passed without a word. The bound assumes independent trials: losses that come in bursts (a device
dropping a run of events) make the true uncertainty larger than the binomial bound says.

Pure functions (scipy for the Beta quantile), no Dagster imports; tested against scipy's
`binomtest(...).proportion_ci` and statsmodels' `proportion_confint`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

from scipy.special import betaincinv

Method = Literal["exact", "wilson"]
FAIL, PASS, TOO_FEW = "fail", "pass", "too few events to judge"


def _check(k: int, n: int, confidence: float) -> None:
    if not (0.5 <= confidence < 1):
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")


def _wilson(k: int, n: int, z: float, sign: float) -> float:
    p = k / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, max(0.0, (centre + sign * half) / (1 + z * z / n)))


def lower_bound(k: int, n: int, confidence: float = 0.95, method: Method = "exact") -> float:
    """Lower one-sided `confidence` bound of the rate k / n (0 when n = 0 or k = 0).

    "exact": Clopper-Pearson, the `1 - confidence` quantile of Beta(k, n - k + 1), which covers the
    true rate with probability at least `confidence`; "wilson": the Wilson score bound (closer to
    nominal on average, can under-cover). Equal to the lower end of the *two-sided* interval at
    level 2 * confidence - 1 (95 % one-sided = the low end of a 90 % interval).
    """
    k, n = int(k), int(n)
    _check(k, n, confidence)
    if n == 0 or k == 0:
        return 0.0
    if method == "exact":
        return float(betaincinv(k, n - k + 1, 1 - confidence))
    if method == "wilson":
        return _wilson(k, n, NormalDist().inv_cdf(confidence), -1.0)
    raise ValueError(f"method must be 'exact' or 'wilson', got {method!r}")


def upper_bound(k: int, n: int, confidence: float = 0.95, method: Method = "exact") -> float:
    """Upper one-sided `confidence` bound of k / n (1 when n = 0 or k = n); mirror of `lower_bound`."""
    k, n = int(k), int(n)
    _check(k, n, confidence)
    return 1.0 - lower_bound(n - k, n, confidence, method)


@dataclass(frozen=True)
class RateVerdict:
    """A rate judged against a threshold: the count, the rate, its lower bound and the outcome."""

    k: int
    n: int
    rate: float | None
    lower: float | None  # None when the sample is below the minimum (not judged)
    threshold: float
    verdict: str  # FAIL / PASS / TOO_FEW

    @property
    def failed(self) -> bool:
        return self.verdict == FAIL

    def as_dict(self, count_name: str = "n", hit_name: str = "k") -> dict:
        return {hit_name: self.k, count_name: self.n, "rate": self.rate, "lower_bound": self.lower,
                "threshold": self.threshold, "verdict": self.verdict}


def judge_rate(k, n, threshold: float, *, min_sample: int, confidence: float = 0.95,
               method: Method = "exact") -> RateVerdict:
    """FAIL when n >= min_sample and the lower bound of k / n exceeds `threshold`; TOO_FEW when
    n < min_sample (whatever the rate); PASS otherwise. NaN / None counts are treated as 0."""
    k = 0 if k is None or (isinstance(k, float) and math.isnan(k)) else int(k)
    n = 0 if n is None or (isinstance(n, float) and math.isnan(n)) else int(n)
    rate = k / n if n else None
    if n < min_sample or n == 0:
        return RateVerdict(k, n, rate, None, threshold, TOO_FEW)
    low = lower_bound(k, n, confidence, method)
    return RateVerdict(k, n, rate, low, threshold, FAIL if low > threshold else PASS)


def graded(k, n, warn: float | None, error: float | None, *, min_sample: int, confidence: float = 0.95,
           method: Method = "exact") -> tuple[str, RateVerdict]:
    """("OK" / "WARN" / "ERROR", the verdict against the highest threshold crossed, else the lowest).

    The same bound is compared with both thresholds: ERROR when it exceeds `error`, WARN when it
    exceeds `warn`; a sample below the minimum is OK with verdict TOO_FEW."""
    levels = [(lvl, th) for lvl, th in (("ERROR", error), ("WARN", warn)) if th is not None]
    verdicts = [(lvl, judge_rate(k, n, th, min_sample=min_sample, confidence=confidence, method=method))
                for lvl, th in levels]
    for lvl, v in verdicts:
        if v.failed:
            return lvl, v
    return "OK", verdicts[-1][1]
