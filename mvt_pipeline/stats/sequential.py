"""Always-valid (sequential) confidence intervals and p-values for nightly looks.

Why: the pipeline recomputes every effect each night. A fixed-horizon 95% interval read on 14
nights excludes a true zero on *some* night far more often than 5% (``docs/validation.md``
measures it). A *confidence sequence* (CS) covers the true effect at every look
simultaneously with probability ``>= 1 - alpha``, so a team may stop whenever it excludes 0.

Method: the Gaussian-mixture *asymptotic* CS of Waudby-Smith, Arnold, Wu, Howard & Ramdas,
"Time-uniform central limit theory and asymptotic confidence sequences" (Annals of
Statistics 2024; arXiv:2103.06476, Theorem 2.2). For an estimator that behaves like a mean
of ``n`` i.i.d. terms with standard deviation ``sigma`` (so ``SE = sigma / sqrt(n)``)::

    half-width = sigma_hat * sqrt( 2 (n rho^2 + 1) / (n^2 rho^2) * log( sqrt(n rho^2 + 1) / alpha ) )
               = SE * sqrt( 2 (v + 1) / v * log( sqrt(v + 1) / alpha ) ),   v = n rho^2.

It is Robbins' normal-mixture boundary with a N(0, rho^-2) mixing distribution, made
asymptotic by plugging in the estimated variance. Any ``rho > 0`` gives a valid CS; ``rho``
only decides *when* it is tightest. The tuning (Howard, Ramdas, McAuliffe & Sekhon 2021,
"Time-uniform, nonparametric, nonasymptotic confidence sequences", sec. 3.5; also the choice
quoted by Waudby-Smith et al.) minimises the width at ``n = N*``::

    rho = sqrt( (-2 log alpha + log(-2 log alpha + 1)) / N* ).

Only ``v = n rho^2 = c(alpha) * n / N*`` enters, so ``n`` and ``N*`` just need the same unit
(e.g. units in the experiment so far, and planned units at the end). docs/architecture.md §5a: ``N*`` is the
*planned* sample size, fixed for the experiment's life; it must not move with ``n`` (a CS
re-tuned at each look is no longer time-uniform). At ``n = N*`` and ``alpha = 0.05`` the
multiplier is 3.04 instead of 1.96; it shrinks slowly as ``n`` grows past ``N*``.

Always-valid p-value: with ``rho`` fixed by the design ``alpha`` and ``N*``, the CS at level
``a`` excludes 0 iff ``a > sqrt(v + 1) * exp(-z^2 v / (2 (v + 1)))`` with ``z = est / SE``;
that threshold (capped at 1) is ``p``, the inverse of the mixture likelihood ratio (the mSPRT
p-value of Johari, Koomen, Pekelis & Walsh 2017). ``P(p_n <= a at some look) <= a``, so it
may be read every night; a caller may also keep its running minimum.

Validity is asymptotic (large ``n`` per look, like a z-interval) and needs the estimate's
sampling noise to accrue like a sum of independent units, which holds for the factorial
contrasts of cell means, CUPED and delta-method ratios with fixed allocation.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import stats

Method = Literal["asymptotic_cs", "fixed"]


def _check(alpha: float, method: str) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if method not in ("asymptotic_cs", "fixed"):
        raise ValueError(f"method must be 'asymptotic_cs' or 'fixed', got {method!r}")


def cs_rho(alpha: float, n_star) -> np.ndarray:
    """Mixture precision ``rho`` that makes the CS tightest at ``n = n_star`` (see module doc)."""
    n_star = np.asarray(n_star, dtype=float)
    if np.any(~(n_star > 0)):
        raise ValueError("n_star (planned sample size) must be positive")
    c = -2.0 * np.log(alpha) + np.log(-2.0 * np.log(alpha) + 1.0)
    return np.sqrt(c / n_star)


def _v(n, n_star, alpha: float) -> np.ndarray:
    n = np.asarray(n, dtype=float)
    if np.any(~(n > 0)):
        raise ValueError("n (units so far) must be positive")
    return n * cs_rho(alpha, n if n_star is None else n_star) ** 2


def cs_multiplier(n, n_star=None, alpha: float = 0.05) -> np.ndarray:
    """Half-width of the asymptotic CS in standard errors (1.96 would be the fixed z-interval)."""
    _check(alpha, "asymptotic_cs")
    v = _v(n, n_star, alpha)
    return np.sqrt(2.0 * (v + 1.0) / v * np.log(np.sqrt(v + 1.0) / alpha))


def _out(x):
    x = np.asarray(x, dtype=float)
    return float(x) if x.ndim == 0 else x


def sequential_ci(
    estimate, std_error, n, *, alpha: float = 0.05, n_star=None, method: Method = "asymptotic_cs"
):
    """``(low, high)`` of an always-valid CS (``method="asymptotic_cs"``) or a fixed z-interval.

    Vectorised: ``estimate``, ``std_error``, ``n`` and ``n_star`` broadcast (arrays or pandas
    Series; scalars give floats). ``n``: units behind the estimate so far; ``n_star``: the
    planned sample size in the same unit (default ``n``, which is right only for a single
    look — pass the plan for nightly reporting). ``method="fixed"`` returns
    ``estimate -/+ z_{1-alpha/2} SE`` and ignores ``n``/``n_star``.
    """
    _check(alpha, method)
    est = np.asarray(estimate, dtype=float)
    se = np.asarray(std_error, dtype=float)
    if np.any(se < 0):
        raise ValueError("std_error must be non-negative")
    if method == "fixed":
        half = stats.norm.ppf(1 - alpha / 2) * se
    else:
        half = cs_multiplier(n, n_star, alpha) * se
    return _out(est - half), _out(est + half)


def sequential_p_value(
    estimate, std_error, n, *, alpha: float = 0.05, n_star=None, method: Method = "asymptotic_cs"
):
    """Always-valid p-value: the smallest level at which the CS (``rho`` tuned at ``alpha``,
    ``n_star``) excludes 0; ``method="fixed"`` gives the ordinary two-sided z p-value."""
    _check(alpha, method)
    est = np.asarray(estimate, dtype=float)
    se = np.asarray(std_error, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, est / se, np.nan)
    if method == "fixed":
        return _out(2 * stats.norm.sf(np.abs(z)))
    v = _v(n, n_star, alpha)
    log_p = 0.5 * np.log1p(v) - z**2 * v / (2.0 * (v + 1.0))
    return _out(np.minimum(1.0, np.exp(np.minimum(log_p, 0.0))))


SEQUENTIAL_COLUMNS = ["seq_ci_low", "seq_ci_high", "seq_p_value"]


def add_sequential(effects, n, n_star, *, alpha: float = 0.05):
    """A copy of an effects frame (``estimate``, ``std_error``) with :data:`SEQUENTIAL_COLUMNS`.

    For the nightly tables: ``n`` = units in the experiment so far (scalar or per row),
    ``n_star`` = the planned total from the registry, fixed for the experiment's life. Using
    the experiment total for every row is valid: any ``n`` proportional to the true count over
    time only moves the tuning point (it is a fixed rescaling of ``rho``).
    """
    out = effects.copy()
    lo, hi = sequential_ci(out["estimate"].to_numpy(), out["std_error"].to_numpy(), n, alpha=alpha, n_star=n_star)
    out["seq_ci_low"], out["seq_ci_high"] = lo, hi
    out["seq_p_value"] = sequential_p_value(out["estimate"].to_numpy(), out["std_error"].to_numpy(), n, alpha=alpha, n_star=n_star)
    return out


def one_sided_p_value(
    estimate, std_error, n, *, alpha: float = 0.05, n_star=None, method: Method = "asymptotic_cs"
):
    """p-value of ``H0: effect <= 0`` against ``effect > 0`` (guardrail harm, non-inferiority).

    Fixed: ``1 - Phi(z)``. Always-valid: half the two-sided mixture p-value when the estimate is on
    the alternative's side, else ``1 -`` that half, the docs/architecture.md §5a convention that a
    one-sided test at ``alpha`` reads the two-sided confidence sequence at ``2 alpha`` (``rho``
    still tuned at the design ``alpha``). Shift ``estimate`` to test another boundary
    (``estimate - margin`` for ``H0: effect >= margin`` after a sign flip)."""
    est = np.asarray(estimate, dtype=float)
    se = np.asarray(std_error, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, est / se, np.nan)
    if method == "fixed":
        _check(alpha, method)
        return _out(stats.norm.sf(z))
    half = np.asarray(sequential_p_value(est, se, n, alpha=alpha, n_star=n_star, method=method)) / 2.0
    return _out(np.where(np.isnan(z), np.nan, np.where(z > 0, half, 1.0 - half)))


def one_sided_bound(
    estimate, std_error, n, *, alpha: float = 0.05, n_star=None, method: Method = "asymptotic_cs"
):
    """Upper ``1 - alpha`` bound of the effect, the bound :func:`one_sided_p_value` inverts: the
    effect is significantly below ``b`` iff ``b`` exceeds it. Fixed: ``est + z_{1-alpha} SE``;
    always-valid: ``est + m SE`` with ``m`` solving ``sqrt(v+1) exp(-m^2 v / (2 (v+1))) = 2 alpha``."""
    _check(alpha, method)
    est = np.asarray(estimate, dtype=float)
    se = np.asarray(std_error, dtype=float)
    if method == "fixed":
        return _out(est + stats.norm.ppf(1 - alpha) * se)
    v = _v(n, n_star, alpha)
    m = np.sqrt(np.maximum(2.0 * (v + 1.0) / v * np.log(np.sqrt(v + 1.0) / (2.0 * alpha)), 0.0))
    return _out(est + m * se)
