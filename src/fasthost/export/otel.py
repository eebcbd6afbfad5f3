"""A snapshot, or the live recording, as OpenTelemetry metrics (optional
extra ``fasthost[otel]``): the counters of ``fasthost.serve()`` and one
exponential histogram of inclusive durations (ns) per exported target,
built from fasthost's own buckets, never from re-recorded values.

The SDK's instruments aggregate measurements one by one and choose their
own scale, so pre-bucketed data cannot go through them. This module builds
the SDK's public point types (``ExponentialHistogramDataPoint``,
``NumberDataPoint``, ``MetricsData``) itself, then either hands them to
any ``MetricExporter`` (``export()``), or serves them to any
``MetricReader`` in place of a ``MeterProvider`` (``register()``): the
role the OpenTelemetry specification gives a MetricProducer, which this
SDK does not expose publicly.

Mapping (OTel bucket i at scale s holds (2**(i / 2**s), 2**((i + 1) / 2**s)]
ns, upper-inclusive; fasthost's hold [lower, upper) whole ns): each fasthost
bucket goes whole to the OTel bucket holding its midpoint. At scale <= 0
OTel's edges are octave edges, which fasthost's buckets never straddle, so
the counts are exact except that a duration of exactly 2**k ns (k > p, where
the bucket is wider than 1 ns) is counted in the bucket above its own. At
0 < s <= p a duration lands at most one OTel bucket away from its own, in
one whose edges are within 2**-(p+1) of it (relative).
"""

from __future__ import annotations

import math
import os
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from fasthost import _core
from fasthost._version import __version__
from fasthost.export.histogram import Histogram, _lower_edges
from fasthost.export.metrics import Labels, Metrics
from fasthost.export.schema import PRECISIONS

if TYPE_CHECKING:
    from fasthost.export.snapshot import Snapshot

__all__ = ["MIN_SCALE", "exponential_buckets", "export", "metrics_data", "register"]

_NEEDS_SDK = "fasthost.export.otel needs opentelemetry-sdk: pip install 'fasthost[otel]'"
_DEFAULT_RESOURCE: list[Any] = []


def _default_resource() -> Any:
    """The SDK's default ``Resource``, made once: ``Resource.create()`` runs
    the resource detectors in a new thread pool each time."""
    if not _DEFAULT_RESOURCE:
        try:
            from opentelemetry.sdk.resources import Resource
        except ImportError:
            raise ImportError(_NEEDS_SDK) from None
        _DEFAULT_RESOURCE.append(Resource.create())
    return _DEFAULT_RESOURCE[0]


_SESSION_STARTS: dict[tuple[int, int], int] = {}  # (pid, epoch) -> wall-clock start, ns


def _start_ns(snapshot: Snapshot, now_ns: int) -> int:
    """When ``snapshot``'s session began, wall clock in ns: ``now_ns``
    minus the session's age, fixed at the first snapshot of each session
    of this process. OTel consumers read a changed start time as a counter
    reset, and that difference moves with the time between the snapshot
    and ``now_ns``. A reset() or start() is a new session (a new epoch)."""
    estimate = now_ns - int(snapshot.meta.get("session_ns", 0))
    session = snapshot.meta.get("session") or {}
    if session.get("pid") != os.getpid():
        return estimate  # a snapshot saved by another process
    key = (int(session["pid"]), int(session.get("epoch", 0)))
    if key not in _SESSION_STARTS:
        _SESSION_STARTS.clear()  # one session at a time in a process
        _SESSION_STARTS[key] = estimate
    return _SESSION_STARTS[key]


MIN_SCALE = -10
"""The coarsest scale accepted: OTel's, buckets of 2**1024."""


def _check_scale(scale: Any, precision: int) -> int:
    if not isinstance(scale, (int, np.integer)) or isinstance(scale, bool):
        raise TypeError(f"scale must be an int, not {type(scale).__name__}")
    if not MIN_SCALE <= scale <= precision:
        raise ValueError(f"scale must be between {MIN_SCALE} and the precision ({precision}), got {scale}")
    return int(scale)


def _index(doubled_midpoint: int, scale: int) -> int:
    """OTel's bucket index at ``scale`` of the value ``doubled_midpoint / 2``
    (> 0): the i with 2**(i / 2**scale) < value <= 2**((i + 1) / 2**scale)."""
    # At scale 0, ceil(log2(value)) - 1, in integers: ceil(log2(n)) is (n - 1).bit_length().
    octave = (doubled_midpoint - 1).bit_length() - 2
    if scale <= 0:
        return octave >> -scale
    # log2 of a power of two is exact, so values on an octave edge stay there.
    return math.ceil((math.log2(doubled_midpoint) - 1) * 2**scale) - 1


def exponential_buckets(histogram: Histogram, scale: int = 0) -> tuple[int, int, list[int]]:
    """(zero count, offset, counts) of ``histogram`` (ns) as an OTel
    exponential histogram at ``scale`` (``MIN_SCALE`` to the histogram's
    precision): ``counts[j]`` is OTel bucket ``offset + j``. Each fasthost
    bucket goes whole to the OTel bucket holding its midpoint (see the
    module's docstring for what is exact). Raises ``ValueError`` for a
    scale out of range, ``TypeError`` for a non-int."""
    scale = _check_scale(scale, histogram.precision)
    lowers = _lower_edges(histogram.precision)
    nonzero = np.flatnonzero(histogram.counts)
    zero_count = 0
    by_index: dict[int, int] = {}
    for bucket in nonzero.tolist():
        count = int(histogram.counts[bucket])
        low, high = int(lowers[bucket]), int(lowers[bucket + 1])
        if low == 0:
            zero_count += count  # the bucket of 0 ns: fasthost's first bucket is [0, 1)
            continue
        # The bucket holds the integers low .. high - 1: twice its midpoint is low + high - 1.
        index = _index(low + high - 1, scale)
        by_index[index] = by_index.get(index, 0) + count
    if not by_index:
        return zero_count, 0, []
    offset = min(by_index)
    counts = [0] * (max(by_index) - offset + 1)
    for index, count in by_index.items():
        counts[index - offset] = count
    return zero_count, offset, counts


def _points(figures: Metrics, scale: int, start_ns: int, now_ns: int) -> list[Any]:
    """The SDK metrics of ``figures``, all cumulative since the session began."""
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        Buckets,
        ExponentialHistogram,
        ExponentialHistogramDataPoint,
        Metric,
        NumberDataPoint,
        Sum,
    )

    cumulative = AggregationTemporality.CUMULATIVE

    def counter(name: str, description: str, unit: str, points: list[tuple[dict[str, str], int]]) -> Any:
        data_points = [NumberDataPoint(attributes, start_ns, now_ns, value) for attributes, value in points]
        return Metric(name, description, unit, Sum(data_points, cumulative, is_monotonic=True))

    def latency(label: str, histogram: Histogram) -> Any:
        zero_count, offset, counts = exponential_buckets(histogram, scale)
        low, high = histogram.min, histogram.max
        return ExponentialHistogramDataPoint(
            attributes={"target": label}, start_time_unix_nano=start_ns, time_unix_nano=now_ns,
            count=histogram.total, sum=histogram.sum, scale=scale, zero_count=zero_count,
            positive=Buckets(offset, counts), negative=Buckets(0, []), flags=0,
            min=float(low) if low is not None else 0.0, max=float(high) if high is not None else 0.0,
        )  # fmt: skip

    targets = figures.targets
    return [
        counter(
            "fasthost.transitions", "Transition calls by kind and HRESULT", "{call}",
            [({"call": call, "result": result}, n) for (call, result), n in figures.transitions.items()],
        ),
        counter(
            "fasthost.frames.abandoned_at_thread_exit", "Frames still open when their thread ended", "{frame}",
            [({}, figures.abandoned_at_exit)],
        ),
        counter("fasthost.target.calls", "Unmanaged calls per target", "{call}",
                [({"target": t.label}, t.calls) for t in targets]),
        counter("fasthost.target.time", "Inclusive time in unmanaged calls per target", "ns",
                [({"target": t.label}, t.total_ns) for t in targets]),
        counter("fasthost.target.exclusive_time", "Time in the target's own native code (callbacks left out)", "ns",
                [({"target": t.label}, t.exclusive_ns) for t in targets]),
        Metric(
            "fasthost.target.latency", "Durations of unmanaged calls per target", "ns",
            ExponentialHistogram([latency(t.label, t.histogram) for t in targets], cumulative),
        ),
    ]  # fmt: skip


def metrics_data(snapshot: Snapshot | None = None, *, top: int = 20, scale: int = 0, resource: Any = None) -> Any:
    """``snapshot`` (default: one taken now) as the SDK's ``MetricsData``:

    - ``fasthost.transitions{call, result}`` (calls of each kind by HRESULT
      name), ``fasthost.frames.abandoned_at_thread_exit``;
    - ``fasthost.target.calls``, ``fasthost.target.time`` and
      ``fasthost.target.exclusive_time`` (ns) per ``target``;
    - ``fasthost.target.latency{target}``: an exponential histogram (ns) at
      ``scale`` (default 0: octaves, exact but for durations of exactly
      2**k ns; up to the precision for finer buckets).

    ``target`` is a symbol for the ``top`` targets by inclusive time, then
    ``other``. All cumulative from the session's start. ``resource`` is an
    SDK ``Resource`` (default: the SDK's default one). Raises
    ``ImportError`` without opentelemetry-sdk, ``ValueError``/``TypeError``
    for a bad ``top`` or ``scale``."""
    return _metrics_data(snapshot, Labels(top), scale, resource)


def _metrics_data(snapshot: Snapshot | None, labels: Labels, scale: int, resource: Any) -> Any:
    try:
        from opentelemetry.sdk.metrics.export import MetricsData, ResourceMetrics, ScopeMetrics
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    except ImportError:
        raise ImportError(_NEEDS_SDK) from None
    if snapshot is None:
        from fasthost.export.snapshot import snapshot as take

        snapshot = take()
    scale = _check_scale(scale, snapshot.precision)
    now_ns = time.time_ns()
    points = _points(labels(snapshot), scale, _start_ns(snapshot, now_ns), now_ns)
    scope = ScopeMetrics(InstrumentationScope("fasthost", __version__), points, "")
    return MetricsData([ResourceMetrics(resource or _default_resource(), [scope], "")])


def export(exporter: Any, snapshot: Snapshot | None = None, **options: Any) -> Any:
    """Sends ``snapshot`` (default: one taken now) through an SDK
    ``MetricExporter`` (e.g. ``OTLPMetricExporter()``) once; returns the
    exporter's ``MetricExportResult``. ``options`` as for ``metrics_data``."""
    return exporter.export(metrics_data(snapshot, **options))


def register(reader: Any, **options: Any) -> None:
    """Makes ``reader`` (any SDK ``MetricReader`` not attached to a
    ``MeterProvider``: ``InMemoryMetricReader``,
    ``PeriodicExportingMetricReader(OTLPMetricExporter(), ...)`` for a live
    export on an interval) read this process's recording: each of its
    collections takes a snapshot. ``options`` as for ``metrics_data``;
    they are checked now (``ValueError``/``TypeError``).

    This sets the collect callback through which a ``MeterProvider`` feeds
    its readers (the SDK has no public MetricProducer yet), so the reader
    must not also be given to a ``MeterProvider``. A
    ``PeriodicExportingMetricReader``'s own thread is never recorded."""
    unknown = set(options) - {"top", "scale", "resource"}
    if unknown:
        raise TypeError(f"register() got unexpected options: {', '.join(sorted(unknown))}")
    # One Labels for the reader's collections: a target keeps its label,
    # so that every series only grows within a session.
    labels = Labels(options.get("top", 20))
    scale = options.get("scale", 0)
    _check_scale(scale, max(PRECISIONS))  # and against each snapshot's precision
    # Now, in the caller's thread: the detectors' threads would be recorded
    # if they first ran under a capture.
    resource = options.get("resource") or _default_resource()

    def collect(_reader: Any, timeout_millis: float = 10_000) -> Any:
        if threading.current_thread() is getattr(reader, "_daemon_thread", None):
            # A periodic reader's own thread collects and exports (an HTTP
            # request per interval): fasthost's work, never the program's
            # calls, under a builtins or native capture. For good: the
            # thread does nothing else.
            _core._pause()
        return _metrics_data(None, labels, scale, resource)

    reader._set_collect_callback(collect)
