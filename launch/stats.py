"""Statistics of final scores: plain functions of per-member score arrays, no I/O.

A *final score* is one number per member (launch/results.py: the mean of its last
10% of evaluations). Over the members of one grid point or study cell:

  mean_ci95       mean with a Student-t 95% interval, mean +- t_{0.975, n-1} * s / sqrt(n)
                  (the paper's error bars)
  iqm             interquartile mean: the mean of the middle 50% of scores, i.e.
                  scipy.stats.trim_mean(x, 0.25), which drops floor(n/4) scores from each end
                  (rliable's IQM; robust to a few outlying seeds, less noisy than the median)
  iqm_ci95        95% stratified percentile-bootstrap interval of the IQM: each stratum (a
                  task, e.g. one cell) is resampled on its own with replacement, then the IQM of
                  all resampled scores is taken (rliable's stratified bootstrap)
  probability_of_improvement
                  P(X > Y) for a member X of one agent and Y of another:
                  (1 / (n m)) sum_i sum_j [ 1(x_i > y_j) + 0.5 * 1(x_i == y_j) ],
                  the Mann-Whitney U statistic over n m (rliable's definition)
  probability_of_improvement_ci95
                  its 95% percentile-bootstrap interval, X and Y resampled independently

Of a learning curve (a frozen-model study):

  steps_to_threshold
                  the first evaluation's env steps at which a member's normalised score
                  (score - random) / (optimal - random) reaches the threshold (0.95: 95% of
                  the way from random to optimal behaviour); inf when it never does within the
                  budget (censored: slower than every member that got there, tied with the
                  others that did not, which P(X > Y) of the negated steps counts exactly)

Of a fraction (k of n seeds optimal in a cell, mbgen offline):

  wilson_ci95     the Wilson score interval, with p = k/n and z = z_{0.975}:
                  (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
                  (unlike p -+ z sqrt(p(1-p)/n) it stays inside [0, 1] and is not empty at k = 0 or n)

Bootstraps use scipy.stats.bootstrap with a fixed seed, so a report is reproducible.

Small samples. An interval needs members to vary between: the Student-t interval of the mean
needs 2 members, every bootstrap interval (IQM, P(X > Y), a learning curve's band) at least
BOOTSTRAP_MIN_MEMBERS in each group, since a percentile bootstrap of 2-4 values resamples a
handful of distinct means and covers far less than 95%. With fewer there is no interval (None,
and TOO_FEW where it is shown), never a zero-width one. Intervals are cut to the range the
score can take (clip_interval), which the Student-t interval of 2-4 members often leaves.
An interval over enough identical values collapses to that value: every resample is the same.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

RESAMPLES = 2000  # bootstrap resamples of every interval
BOOTSTRAP_MIN_MEMBERS = 5  # fewer members in a group: no bootstrap interval (the module docstring)
TOO_FEW = "too few seeds for an interval"  # what a report says where an interval would be


def t975(df: int) -> float:
    """The two-sided 95% Student-t quantile t_{0.975, df}."""
    return float(sps.t.ppf(0.975, df))


def mean_ci95(values) -> tuple[float, float | None, float | None]:
    """(mean, low, high); a single value has no interval: (mean, None, None)."""
    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean()) if v.size else float("nan")
    if v.size < 2:
        return mean, None, None
    half = t975(v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return mean, mean - half, mean + half


def wilson_ci95(successes: int, n: int) -> tuple[float, float]:
    """(low, high): the Wilson score 95% interval of the fraction successes / n (formula above)."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"wilson_ci95 needs 0 <= successes <= n and n >= 1, got {successes} of {n}")
    z = float(sps.norm.ppf(0.975))
    p = successes / n
    scale = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / scale
    half = z / scale * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def clip_interval(low, high, bounds: tuple[float, float] | None) -> tuple:
    """An interval cut to the range the score can take (bounds None: left as it is; no interval,
    None: stays None)."""
    if bounds is None or low is None or high is None:
        return low, high
    return max(low, bounds[0]), min(high, bounds[1])


def bootstrap_ci(samples: np.ndarray, seed: int = 0, resamples: int = RESAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap 95% interval of the mean over axis 0 of `samples` [N, ...] (members x
    evaluation points), per remaining index (scipy.stats.bootstrap). A column whose values are all
    equal has the interval [value, value]. The interval never leaves [min, max] of its column.
    Fewer than BOOTSTRAP_MIN_MEMBERS rows: no interval (NaN everywhere, which a plot leaves blank)."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.shape[0] < BOOTSTRAP_MIN_MEMBERS:
        nan = np.full(samples.shape[1:], np.nan)
        return nan, nan.copy()
    low, high = samples.mean(axis=0).copy(), samples.mean(axis=0).copy()
    varied = samples.max(axis=0) > samples.min(axis=0)
    if varied.any():
        result = sps.bootstrap(
            (samples[:, varied],),
            np.mean,
            axis=0,
            vectorized=True,
            n_resamples=resamples,
            batch=max(1, 2_000_000 // max(samples.size, 1)),  # bounded memory for long curves
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
        low[varied], high[varied] = result.confidence_interval.low, result.confidence_interval.high
    return low, high


def iqm(values, axis: int = -1) -> np.ndarray | float:
    """Interquartile mean: scipy.stats.trim_mean(values, 0.25) along `axis`."""
    out = sps.trim_mean(np.asarray(values, dtype=np.float64), 0.25, axis=axis)
    return float(out) if np.ndim(out) == 0 else out


def _percentile_bootstrap(samples: tuple[np.ndarray, ...], statistic, seed: int, resamples: int):
    """scipy's percentile bootstrap of `statistic(*samples, axis=-1)`, each sample resampled on its own."""
    result = sps.bootstrap(
        samples,
        statistic,
        n_resamples=resamples,
        vectorized=True,
        paired=False,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def iqm_ci95(strata, seed: int = 0, resamples: int = RESAMPLES) -> tuple[float | None, float | None]:
    """Stratified-bootstrap 95% interval of the IQM of all scores in `strata` (a list of per-task
    score arrays, or one array for one task); (None, None) with fewer than BOOTSTRAP_MIN_MEMBERS
    scores, or no stratum of two to resample."""
    strata = [np.asarray(s, dtype=np.float64).ravel() for s in _as_strata(strata)]
    pooled = np.concatenate(strata)
    if pooled.size < BOOTSTRAP_MIN_MEMBERS or all(s.size < 2 for s in strata):
        return None, None
    if pooled.max() == pooled.min():
        value = iqm(pooled)
        return value, value
    # A stratum of one score cannot be resampled by scipy (and has only one resample anyway).
    fixed = [s for s in strata if s.size < 2]
    varied = [s for s in strata if s.size >= 2]

    def statistic(*resampled, axis=-1):
        batch = resampled[0].shape[:-1]
        extra = [np.broadcast_to(s, batch + s.shape) for s in fixed]
        return iqm(np.concatenate(list(resampled) + extra, axis=-1), axis=-1)

    return _percentile_bootstrap(tuple(varied), statistic, seed, resamples)


def _as_strata(strata) -> list:
    if isinstance(strata, np.ndarray) or (strata and np.isscalar(strata[0])):
        return [strata]
    return list(strata)


def probability_of_improvement(x, y, axis: int = -1) -> np.ndarray | float:
    """P(X > Y) with ties counted one half: the Mann-Whitney U statistic of x against y over n m."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x, y = np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)
    greater = (x[..., :, None] > y[..., None, :]).mean(axis=(-2, -1))
    ties = (x[..., :, None] == y[..., None, :]).mean(axis=(-2, -1))
    out = greater + 0.5 * ties
    return float(out) if np.ndim(out) == 0 else out


def probability_of_improvement_ci95(
    x, y, seed: int = 0, resamples: int = RESAMPLES
) -> tuple[float | None, float | None]:
    """95% percentile-bootstrap interval of P(X > Y), x and y resampled independently; (None, None)
    when either group has fewer than BOOTSTRAP_MIN_MEMBERS members."""
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if min(x.size, y.size) < BOOTSTRAP_MIN_MEMBERS:
        return None, None
    if np.concatenate([x, y]).max() == np.concatenate([x, y]).min():
        value = probability_of_improvement(x, y)
        return value, value
    return _percentile_bootstrap((x, y), probability_of_improvement, seed, resamples)


def steps_to_threshold(env_steps, scores, random: float, optimal: float, threshold: float = 0.95) -> float:
    """First of `env_steps` (ascending) whose score is at least random + threshold (optimal - random);
    inf if none (see the module docstring)."""
    target = random + threshold * (optimal - random)
    for steps, score in zip(env_steps, scores):
        if score >= target:
            return float(steps)
    return math.inf


def score_summary(per_member, bounds: tuple[float, float] | None = None, seed: int = 0) -> dict:
    """A cell's or point's final performance: {"mean", "ci95", "iqm", "iqm_ci95", "per_member"}, both
    intervals cut to `bounds` (the range the score can take), [None, None] where the members are
    too few for one (the module docstring). Empty input: every figure None."""
    values = [float(v) for v in per_member]
    if not values:
        return {"mean": None, "ci95": [None, None], "iqm": None, "iqm_ci95": [None, None], "per_member": []}
    mean, lo, hi = mean_ci95(values)
    iqm_lo, iqm_hi = iqm_ci95([values], seed=seed)
    return {
        "mean": mean,
        "ci95": list(clip_interval(lo, hi, bounds)),
        "iqm": iqm(values),
        "iqm_ci95": list(clip_interval(iqm_lo, iqm_hi, bounds)),
        "per_member": values,
    }


def too_few(n: int, bootstrap: bool = True) -> bool:
    """Whether n members are too few for an interval (a bootstrap's, or with `bootstrap` False the
    Student-t interval of the mean)."""
    return n < (BOOTSTRAP_MIN_MEMBERS if bootstrap else 2)


def ci_text(low, high, fmt: str = ".4f", sep: str = " .. ") -> str:
    """'95% CI 0.3808 .. 0.4073', or TOO_FEW where there is no interval."""
    if low is None or high is None:
        return TOO_FEW
    return f"95% CI {low:{fmt}}{sep}{high:{fmt}}"
