"""Statistics of final scores (launch/stats.py) against hand-worked values."""

import numpy as np
import pytest
from mbgen.launch.stats import (
    BOOTSTRAP_MIN_MEMBERS,
    TOO_FEW,
    bootstrap_ci,
    ci_text,
    clip_interval,
    iqm,
    iqm_ci95,
    mean_ci95,
    probability_of_improvement,
    probability_of_improvement_ci95,
    score_summary,
    t975,
    wilson_ci95,
)


def test_t_quantiles_match_the_printed_table():
    assert t975(1) == pytest.approx(12.706, abs=1e-3)
    assert t975(4) == pytest.approx(2.776, abs=1e-3)
    assert t975(29) == pytest.approx(2.045, abs=1e-3)


def test_mean_ci95_by_hand():
    # mean 2, sample sd 1, n = 3: half-width t_{0.975,2} * 1 / sqrt(3) = 4.303 / 1.732 = 2.484
    mean, lo, hi = mean_ci95([1.0, 2.0, 3.0])
    assert mean == 2.0 and lo == pytest.approx(2 - 2.4843, abs=1e-3) and hi == pytest.approx(2 + 2.4843, abs=1e-3)
    assert mean_ci95([5.0]) == (5.0, None, None)  # one member: no interval, not a zero-width one


def test_wilson_interval_by_hand():
    # 5 of 10: centre 0.5; half = 1.96 / 1.38415 * sqrt(0.025 + 3.8415 / 400) = 0.26340
    assert wilson_ci95(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    # 0 of 30: low is exactly 0, high = 2 (z^2 / 60) / (1 + z^2 / 30) = 0.11352
    low, high = wilson_ci95(0, 30)
    assert low == 0.0 and high == pytest.approx(0.11352, abs=1e-5)
    assert wilson_ci95(30, 30) == pytest.approx((1 - high, 1.0), abs=1e-12)  # symmetric in k <-> n - k
    with pytest.raises(ValueError, match="0 <= successes <= n"):
        wilson_ci95(4, 3)


def test_iqm_drops_a_quarter_from_each_end():
    assert iqm([1, 2, 3, 4, 5, 6, 7, 8]) == 4.5  # mean of 3, 4, 5, 6
    assert iqm([0, 0, 0, 100]) == 0.0  # floor(4/4) = 1 dropped each end: mean of 0, 0
    assert iqm([1, 2, 30]) == pytest.approx(11.0)  # floor(3/4) = 0 dropped: the plain mean
    assert iqm([1, 2, 3, 4, 1000]) == 3.0  # floor(5/4) = 1 dropped: mean of 2, 3, 4
    assert np.allclose(iqm(np.array([[1, 2, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 1, 1, 1, 1]])), [4.5, 0.5])


def test_probability_of_improvement_by_hand():
    # x = [1, 3] against y = [2, 2]: pairs (1,2) (1,2) lose, (3,2) (3,2) win: 2/4
    assert probability_of_improvement([1, 3], [2, 2]) == 0.5
    # ties count one half: x = [2], y = [2, 1]: 0.5 + 1 over 2 pairs = 0.75
    assert probability_of_improvement([2], [2, 1]) == 0.75
    assert probability_of_improvement([5, 6, 7], [1, 2]) == 1.0
    assert probability_of_improvement([1, 2], [5, 6, 7]) == 0.0
    # symmetric: P(X > Y) + P(Y > X) = 1
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=7), rng.normal(size=5)
    assert probability_of_improvement(x, y) + probability_of_improvement(y, x) == pytest.approx(1.0)


def test_bootstrap_intervals_hold_the_estimate_and_are_reproducible():
    rng = np.random.default_rng(1)
    x = rng.normal(1.0, 1.0, 30)
    lo, hi = iqm_ci95(x)
    assert lo < iqm(x) < hi and hi - lo < 1.5
    assert iqm_ci95(x) == (lo, hi)  # fixed seed: the same interval
    y = rng.normal(0.0, 1.0, 30)
    p = probability_of_improvement(x, y)
    p_lo, p_hi = probability_of_improvement_ci95(x, y)
    assert 0 <= p_lo < p < p_hi <= 1 and p > 0.6


def test_degenerate_intervals_collapse():
    assert iqm_ci95([0.4] * 5) == pytest.approx((0.4, 0.4))  # every resample is the same
    assert probability_of_improvement_ci95([1.0] * 5, [1.0] * 5) == (0.5, 0.5)
    # every x beats every y: P = 1 in every resample
    assert probability_of_improvement_ci95([2.0, 3, 4, 5, 6], [0.0, 0.5, 1, 1.5, 1.9]) == (1.0, 1.0)


def test_too_few_members_have_no_interval_never_a_zero_width_one():
    assert BOOTSTRAP_MIN_MEMBERS == 5
    # P(X > Y) on groups of 1 is 0, 0.5 or 1 with nothing to resample: no interval
    assert probability_of_improvement([1.0], [0.0]) == 1.0
    assert probability_of_improvement_ci95([1.0], [0.0]) == (None, None)
    assert probability_of_improvement_ci95([1.0], [0.0, 2.0]) == (None, None)
    assert probability_of_improvement_ci95([1.0, 2, 3, 4], [0.0, 1, 2, 3, 4]) == (None, None)  # 4 < 5
    lo, hi = probability_of_improvement_ci95([1.0, 2, 3, 4, 5], [0.5, 1.5, 2.5, 3.5, 4.5])
    assert 0.0 <= lo < 0.6 < hi <= 1.0  # P = 15/25 = 0.6, now with an interval
    # the IQM's bootstrap: 4 scores are too few, 5 are enough; 5 strata of 1 have nothing to resample
    assert iqm_ci95([0.1, 0.2, 0.3, 0.4]) == (None, None)
    lo, hi = iqm_ci95([0.1, 0.2, 0.3, 0.4, 0.5])
    assert 0.1 <= lo <= 0.3 <= hi <= 0.5
    assert iqm_ci95([[0.1], [0.2], [0.3], [0.4], [0.5]]) == (None, None)
    # a learning curve's band: 4 members, none (NaN, drawn as nothing); 5, one inside the data
    low, high = bootstrap_ci(np.array([[0.0, 1.0]] * 2 + [[1.0, 0.0]] * 2))
    assert np.isnan(low).all() and np.isnan(high).all()
    low, high = bootstrap_ci(np.array([[0.0], [0.0], [1.0], [1.0], [1.0]]))
    assert 0.0 <= low[0] < 0.6 < high[0] <= 1.0
    assert clip_interval(None, None, (0.0, 1.0)) == (None, None)
    assert ci_text(None, None) == TOO_FEW == "too few seeds for an interval"
    assert ci_text(0.38081, 0.40729) == "95% CI 0.3808 .. 0.4073"


def test_a_few_members_interval_is_cut_to_the_score_range_by_hand():
    # scores 0.0 and 1.0 on a [0, 1] scale: mean 0.5, s = sqrt(0.5), half-width 12.706 * s / sqrt(2)
    # = 6.353: the Student-t interval [-5.85, 6.85] is cut to [0, 1]; the IQM of 2 is their mean
    mean, lo, hi = mean_ci95([0.0, 1.0])
    assert (lo, hi) == pytest.approx((0.5 - 6.3531, 0.5 + 6.3531), abs=1e-3)
    s = score_summary([0.0, 1.0], bounds=(0.0, 1.0))
    assert s["mean"] == 0.5 and s["ci95"] == [0.0, 1.0]
    assert s["iqm"] == 0.5 and s["iqm_ci95"] == [None, None]  # 2 members: too few for the bootstrap
    one = score_summary([0.3], bounds=(0.0, 1.0))
    assert one["mean"] == 0.3 and one["ci95"] == [None, None] and one["iqm_ci95"] == [None, None]


def test_stratified_bootstrap_resamples_within_strata():
    # Two strata whose scores never mix: every resample keeps 3 zeros and 3 tens, so the IQM
    # of 6 (drop 1 at each end: 0, 0, 10, 10) is always 5; an unstratified bootstrap would vary.
    lo, hi = iqm_ci95([[0.0, 0.0, 0.0], [10.0, 10.0, 10.0]])
    assert lo == hi == 5.0
    # a one-score stratum is kept as it is
    lo, hi = iqm_ci95([[7.0], [0.0, 1.0, 2.0, 3.0]])
    assert 0.0 <= lo <= hi <= 7.0


def test_score_summary_cuts_intervals_to_the_score_range():
    s = score_summary([0.0, 0.4, 0.41], bounds=(0.0, 0.41))
    assert s["mean"] == pytest.approx(0.27) and s["ci95"][0] == 0.0 and s["ci95"][1] == 0.41
    assert s["per_member"] == [0.0, 0.4, 0.41] and s["iqm_ci95"] == [None, None]  # 3 < 5 members
    s = score_summary([0.0, 0.4, 0.41, 0.41, 0.41], bounds=(0.0, 0.41))
    assert 0.0 <= s["ci95"][0] and s["ci95"][1] == 0.41 and 0.0 <= s["iqm_ci95"][0] <= s["iqm_ci95"][1] <= 0.41
    assert score_summary([])["mean"] is None
