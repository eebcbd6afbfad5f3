"""docs/protocol.md §5, export rows: ``Histogram.record_many`` next to numpy.histogram
on log-spaced bins and hdrhistogram's record_value loop (same data), and
the cost of ``snapshot()``/``save()`` with 64 threads.

    pytest bench/test_export_bench.py --benchmark-json=bench/export.json
"""

import numpy as np
import pytest

import fasthost
from fasthost import _testing

VALUES = 1_000_000
PEER_VALUES = 20_000  # hdrhistogram records in pure Python: a smaller slice, reported per value


@pytest.fixture(scope="module")
def durations():
    """Lognormal durations around 1 us with a long tail, in ns."""
    return np.random.default_rng(7).lognormal(7, 1.5, VALUES).astype(np.uint64)


def per_value(benchmark, n):
    benchmark.extra_info["values_per_round"] = n


@pytest.mark.benchmark(group="record-many")
def test_histogram_record_many(benchmark, durations):
    per_value(benchmark, VALUES)
    hist = fasthost.Histogram()
    benchmark(hist.record_many, durations)
    assert hist.total % VALUES == 0
    assert hist.total > 0


@pytest.mark.benchmark(group="record-many")
def test_numpy_histogram_log_bins(benchmark, durations):
    per_value(benchmark, VALUES)
    # The same number of buckets as fasthost's precision-5 histogram.
    bins = np.logspace(0, 64 * np.log10(2), len(fasthost.Histogram().counts) + 1)
    counts, _ = benchmark(np.histogram, durations, bins)
    assert counts.sum() == VALUES


@pytest.mark.benchmark(group="record-many")
def test_hdrhistogram_record_value_loop(benchmark, durations):
    hdrh = pytest.importorskip("hdrh.histogram")
    per_value(benchmark, PEER_VALUES)
    values = durations[:PEER_VALUES].tolist()
    hist = hdrh.HdrHistogram(1, 2**40, 2)

    def record():
        for v in values:
            hist.record_value(v)

    benchmark(record)
    assert hist.get_total_count() % PEER_VALUES == 0


@pytest.fixture(scope="module")
def sixty_four_threads():
    fasthost.start(clock="monotonic")
    _testing.run_native_threads(64, 1000, 0x4000, "targets", 8)
    fasthost.stop()
    yield
    fasthost.reset()


@pytest.mark.benchmark(group="snapshot")
def test_snapshot_with_64_threads(benchmark, sixty_four_threads):
    snap = benchmark(fasthost.snapshot)
    assert len(snap.threads) == 64
    assert snap.totals["calls"]["leave"] == 64_000


@pytest.mark.benchmark(group="snapshot")
def test_save_with_64_threads(benchmark, sixty_four_threads, tmp_path):
    snap = fasthost.snapshot()
    path = tmp_path / "run.npz"
    benchmark(snap.save, path)
    assert fasthost.load(path) == snap
