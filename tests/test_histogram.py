"""Histogram: quantiles within 2**-precision of numpy's exact ones, and the
rest of its contract."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fasthost import Histogram

HOUR_NS = 3_600 * 10**9
PRECISIONS = st.integers(min_value=1, max_value=8)
PERCENTS = np.array([0.0, 0.1, 1, 10, 25, 50, 75, 90, 99, 99.9, 100])
# numpy divides percents by 100; the same floats here, so that a rank that
# falls exactly on a boundary (n * q integral) is chosen alike.
QS = PERCENTS / 100


@st.composite
def durations(draw):
    """Wide-ranging data: 1 ns to hours, lognormal, constant, bimodal."""
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(1, 3000))
    shape = draw(st.sampled_from(["uniform_log", "lognormal", "constant", "bimodal", "small"]))
    rng = np.random.default_rng(seed)
    if shape == "uniform_log":
        values = np.exp(rng.uniform(0, np.log(HOUR_NS), n))
    elif shape == "lognormal":
        values = rng.lognormal(draw(st.floats(0, 20)), draw(st.floats(0.01, 3)), n)
    elif shape == "constant":
        values = np.full(n, draw(st.integers(0, HOUR_NS)))
    elif shape == "bimodal":
        values = np.concatenate([rng.lognormal(5, 0.3, n), rng.lognormal(20, 0.5, n // 3 + 1)])
    else:
        values = rng.integers(0, 100, n)
    return np.clip(values, 0, 2**62).astype(np.uint64)


@settings(max_examples=150, deadline=None)
@given(values=durations(), precision=PRECISIONS)
def test_quantiles_are_within_relative_error_of_numpy_inverted_cdf(values, precision):
    hist = Histogram(precision)
    hist.record_many(values)
    exact = np.percentile(values, PERCENTS, method="inverted_cdf").astype(np.float64)
    ours = hist.quantile(QS)
    bound = 2.0**-precision * np.maximum(exact, 1)
    assert np.all(np.abs(ours - exact) <= bound), (precision, exact, ours)
    assert hist.total == len(values)
    assert hist.min == int(values.min())
    assert hist.max == int(values.max())
    assert hist.sum == int(values.astype(object).sum())


@settings(max_examples=50, deadline=None)
@given(values=durations(), split=st.integers(0, 3000), precision=PRECISIONS)
def test_merge_equals_recording_everything_in_one(values, split, precision):
    left, right, whole = Histogram(precision), Histogram(precision), Histogram(precision)
    left.record_many(values[:split])
    right.record_many(values[split:])
    whole.record_many(values)
    assert left.merge(right) == whole
    assert left + right == whole


def test_record_and_record_many_agree():
    one, many = Histogram(), Histogram()
    values = [0, 1, 63, 64, 65, 1000, 10**9, 2**64 - 1]
    for v in values:
        one.record(v)
    many.record_many(np.array(values, dtype=np.uint64))
    assert one == many
    assert one.total == len(values)
    assert one.min == 0
    assert one.max == 2**64 - 1


def test_edges_and_counts_describe_the_buckets():
    hist = Histogram(3)
    assert hist.edges.dtype == np.float64
    assert hist.counts.dtype == np.uint64
    assert len(hist.edges) == len(hist.counts) + 1
    assert np.all(np.diff(hist.edges) > 0)
    hist.record(1000)
    (bucket,) = np.flatnonzero(hist.counts)
    assert hist.edges[bucket] <= 1000 < hist.edges[bucket + 1]
    # A bucket is never wider than 2**-precision of its lower edge.
    lower, upper = hist.edges[:-1], hist.edges[1:]
    assert np.all((upper - lower) <= np.maximum(lower * 2.0**-3, 1))


def test_quantile_of_a_scalar_is_a_float_and_of_an_array_an_array():
    hist = Histogram()
    hist.record_many(np.arange(1, 101, dtype=np.uint64))
    assert isinstance(hist.quantile(0.5), float)
    assert hist.quantile([0.5, 0.9]).shape == (2,)
    assert hist.quantile(0) == 1
    assert hist.quantile(1) == 100


def test_empty_histogram_has_nan_quantiles_and_no_extremes():
    hist = Histogram()
    assert np.isnan(hist.quantile(0.5))
    assert np.isnan(hist.mean)
    assert hist.min is None
    assert hist.max is None
    assert hist.total == 0


@pytest.mark.parametrize("q", [-0.1, 1.5, float("nan"), [0.5, 2.0]])
def test_quantile_outside_zero_one_raises_value_error(q):
    hist = Histogram()
    hist.record(5)
    with pytest.raises(ValueError, match=r"quantiles must be in \[0, 1\]"):
        hist.quantile(q)


def test_merging_different_precisions_raises_value_error():
    with pytest.raises(ValueError, match="precision 5 and 6"):
        Histogram(5).merge(Histogram(6))
    with pytest.raises(TypeError):
        Histogram().merge([1, 2])


@pytest.mark.parametrize(
    ("values", "error"),
    [
        (np.array([1.5, 2.0]), TypeError),
        (np.array([-1, 5]), ValueError),
        (np.array(["a"]), TypeError),
    ],
)
def test_record_many_rejects_bad_arrays_and_records_nothing(values, error):
    hist = Histogram()
    with pytest.raises(error):
        hist.record_many(values)
    assert hist.total == 0


@pytest.mark.parametrize(
    ("value", "error"), [(-1, ValueError), (2**64, ValueError), (1.5, TypeError), ("1", TypeError)]
)
def test_record_rejects_bad_values(value, error):
    with pytest.raises(error):
        Histogram().record(value)


@pytest.mark.parametrize(
    ("precision", "error"), [(0, ValueError), (9, ValueError), (2.0, TypeError), (True, TypeError)]
)
def test_bad_precision_raises(precision, error):
    with pytest.raises(error):
        Histogram(precision)
