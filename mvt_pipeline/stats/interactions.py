"""Interaction overload: empirical-Bayes shrinkage of interaction terms and Lenth's PSE.

Why: a 2^5 factorial has 26 interactions; most are near zero, and the few largest raw estimates
are inflated by selection (the winner's curse). Shrinking them towards 0 with a prior fitted to
all of them lowers the total squared error when most are null, and a "limited translation"
bound keeps a large true interaction from being pulled inside its own noise.

Shrinkage (normal-normal empirical Bayes, prior mean 0: an interaction is a departure from
additivity, so none is the default): for the ``k`` interaction estimates ``b_j`` with SEs
``s_j`` of one metric, ``tau^2 = max(0, mean(b_j^2 - s_j^2))`` (method of moments) and the
posterior mean is ``(1 - B_j) b_j`` with ``B_j = s_j^2 / (s_j^2 + tau^2)``. Following Efron &
Morris (1972, "Limiting the risk of Bayes and empirical Bayes estimators") the move is capped at
``LIMITED_TRANSLATION = 1`` SE, so a shrunk estimate never leaves the raw 95 % interval
(1 < 1.96). Fewer than ``MIN_TERMS`` = 3 estimates are not shrunk (the James-Stein condition:
no risk gain below 3). Validated by simulation (mvt_pipeline_tests/stats/test_interactions.py;
docs/validation.md).

Lenth (1989, "Quick and easy analysis of unreplicated factorials", Technometrics 31): for
``m`` effect contrasts of an unreplicated (fractional) factorial, ``s0 = 1.5 median|c|``,
``PSE = 1.5 median{|c_j| : |c_j| < 2.5 s0}``, margin of error ``ME = t_{0.975, m/3} PSE`` and
simultaneous margin ``SME = t_{gamma, m/3} PSE`` with ``gamma = (1 + 0.95^{1/m}) / 2``. It needs
no within-cell variance, so it screens designs with one observation per run, or checks a
replicated one against a variance model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

LIMITED_TRANSLATION = 1.0  # max move of a shrunk estimate, in its own SEs (Efron & Morris)
MIN_TERMS = 3


def shrink_interactions(estimate, std_error) -> tuple[np.ndarray, np.ndarray, float]:
    """Shrunk estimates, shrinkage factors ``1 - B_j`` (1 = not shrunk) and ``tau^2``.

    Non-finite estimates or SEs (a row not analysed) pass through unshrunk and do not enter the
    prior. See the module docstring for the method.
    """
    b = np.asarray(estimate, dtype=float)
    s = np.asarray(std_error, dtype=float)
    ok = np.isfinite(b) & np.isfinite(s) & (s > 0)
    out, factor = b.copy(), np.ones_like(b)
    if ok.sum() < MIN_TERMS:
        return out, factor, float("nan")
    tau2 = max(0.0, float(np.mean(b[ok] ** 2 - s[ok] ** 2)))
    f = tau2 / (tau2 + s[ok] ** 2)
    moved = np.clip((1.0 - f) * b[ok], -LIMITED_TRANSLATION * s[ok], LIMITED_TRANSLATION * s[ok])
    out[ok] = b[ok] - moved
    with np.errstate(invalid="ignore", divide="ignore"):
        factor[ok] = np.where(b[ok] != 0, out[ok] / b[ok], 1.0)
    return out, factor, tau2


def add_shrinkage(effects: pd.DataFrame) -> pd.DataFrame:
    """``shrunk_estimate`` and ``shrink_factor`` for the interaction rows (term with ``:``) of one
    metric's effects; main effects and other rows get NaN. Rows whose ``status`` is not ``ok``
    are left out of the prior."""
    eff = effects.copy()
    eff["shrunk_estimate"] = np.nan
    eff["shrink_factor"] = np.nan
    terms = eff["term"].astype("string").fillna("")
    mask = terms.str.contains(":", regex=False).to_numpy()
    if "status" in eff:
        mask &= (eff["status"].fillna("ok") == "ok").to_numpy()
    if mask.any():
        shrunk, factor, _ = shrink_interactions(eff.loc[mask, "estimate"], eff.loc[mask, "std_error"])
        eff.loc[mask, "shrunk_estimate"] = shrunk
        eff.loc[mask, "shrink_factor"] = factor
    return eff


@dataclass(frozen=True)
class Lenth:
    """Lenth's pseudo standard error and margins for ``m`` contrasts (module docstring)."""

    pse: float
    df: float
    me: float
    sme: float
    m: int

    def active(self, contrasts, simultaneous: bool = False) -> np.ndarray:
        """Contrasts beyond the (simultaneous) margin of error."""
        return np.abs(np.asarray(contrasts, dtype=float)) > (self.sme if simultaneous else self.me)


def lenth(contrasts, alpha: float = 0.05) -> Lenth:
    """Lenth's PSE, ME and SME for the effect contrasts of an unreplicated factorial."""
    c = np.abs(np.asarray(contrasts, dtype=float))
    if c.ndim != 1 or len(c) < 3 or not np.isfinite(c).all():
        raise ValueError("lenth needs at least 3 finite effect contrasts")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    m = len(c)
    s0 = 1.5 * float(np.median(c))
    trimmed = c[c < 2.5 * s0]
    pse = 1.5 * float(np.median(trimmed)) if len(trimmed) else 0.0
    df = m / 3.0
    gamma = (1.0 + (1.0 - alpha) ** (1.0 / m)) / 2.0
    return Lenth(pse=pse, df=df, me=float(stats.t.ppf(1 - alpha / 2, df)) * pse,
                 sme=float(stats.t.ppf(gamma, df)) * pse, m=m)
