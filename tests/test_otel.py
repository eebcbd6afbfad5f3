"""OpenTelemetry export: exponential histograms built from fasthost's
buckets, checked against the SDK's own index mappings, read by the SDK's
InMemoryMetricReader, and sent by the OTLP/HTTP exporter to a receiver
started here that decodes the protobuf."""

from __future__ import annotations

import ctypes
import http.server
import threading
import time

import numpy as np
import pytest

import fasthost
import fasthost.ctypes

pytest.importorskip("opentelemetry.sdk.metrics", reason="the test extra installs opentelemetry-sdk")
from opentelemetry.sdk.metrics._internal.exponential_histogram.mapping.exponent_mapping import (
    ExponentMapping,
)
from opentelemetry.sdk.metrics._internal.exponential_histogram.mapping.logarithm_mapping import (
    LogarithmMapping,
)
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader

from fasthost.export import otel

CALLS = 1000
COS = "libm.so.6!cos"


def otel_index(value: int, scale: int) -> int:
    """The SDK's own bucket index of ``value`` at ``scale``."""
    return (ExponentMapping(scale) if scale <= 0 else LogarithmMapping(scale)).map_to_index(float(value))


def reference_counts(values: list[int], scale: int) -> dict[int, int]:
    counts: dict[int, int] = {}
    for value in values:
        index = otel_index(value, scale)
        counts[index] = counts.get(index, 0) + 1
    return counts


def as_dict(offset: int, counts: list[int]) -> dict[int, int]:
    return {offset + i: n for i, n in enumerate(counts) if n}


def spread_values(precision: int) -> list[int]:
    """Durations from 1 ns to an hour, none of them 2**k ns past the exact
    range (2**(precision + 1)), but every power of two inside it."""
    rng = np.random.default_rng(13)
    values = [int(v) for v in np.exp(rng.uniform(0, np.log(3.6e12), 4000)).astype(np.uint64)]
    values += [2**k for k in range(precision + 2)] + [2**k + 1 for k in range(40)] + [2**k - 1 for k in range(2, 40)]
    return [v for v in values if v > 0 and not (v >= 2 ** (precision + 1) and v & (v - 1) == 0)]


@pytest.mark.parametrize("precision", [1, 3, 5])
@pytest.mark.parametrize("scale", [-3, -1, 0])
def test_buckets_at_scale_0_and_below_equal_the_sdks_own_mapping_of_the_values(precision, scale):
    values = spread_values(precision)
    hist = fasthost.Histogram(precision)
    hist.record_many(np.array([*values, 0, 0], dtype=np.uint64))
    zero_count, offset, counts = otel.exponential_buckets(hist, scale)
    assert zero_count == 2
    assert as_dict(offset, counts) == reference_counts(values, scale)


def test_a_duration_of_exactly_two_to_the_k_past_the_exact_range_is_one_bucket_up():
    hist = fasthost.Histogram(5)
    hist.record(1024)  # OTel's bucket 9 is (512, 1024]; fasthost's [1024, 1056) goes to bucket 10
    _, offset, counts = otel.exponential_buckets(hist, 0)
    assert otel_index(1024, 0) == 9
    assert as_dict(offset, counts) == {10: 1}


@pytest.mark.parametrize("scale", [1, 3, 5])
def test_at_finer_scales_each_duration_lands_within_one_bucket_and_two_to_the_minus_p_plus_1(scale):
    precision = 5
    mapping = LogarithmMapping(scale)
    slack = 2.0 ** -(precision + 1)
    for value in spread_values(precision)[::8]:
        hist = fasthost.Histogram(precision)
        hist.record(value)
        _, index, counts = otel.exponential_buckets(hist, scale)
        assert counts == [1]
        assert abs(index - mapping.map_to_index(float(value))) <= 1, value
        # The bucket it lands in has an edge within 2**-(p+1) of the duration (relative).
        lower, upper = mapping.get_lower_boundary(index), mapping.get_lower_boundary(index + 1)
        assert lower * (1 - slack) <= value <= upper * (1 + slack), (value, lower, upper)


@pytest.mark.parametrize(
    ("scale", "error", "message"),
    [(6, ValueError, r"between -10 and the precision \(5\), got 6"), (-11, ValueError, "got -11"),
     (0.5, TypeError, "scale must be an int, not float")],
)  # fmt: skip
def test_a_scale_finer_than_the_precision_or_not_an_int_is_refused(scale, error, message):
    with pytest.raises(error, match=message):
        otel.exponential_buckets(fasthost.Histogram(5), scale)


@pytest.fixture
def recorded():
    """A session with CALLS libm cos calls and 20 sin calls, stopped."""
    libm = fasthost.ctypes.instrument(ctypes.CDLL("libm.so.6"))
    for name in ("cos", "sin"):
        getattr(libm, name).restype = ctypes.c_double
        getattr(libm, name).argtypes = [ctypes.c_double]
    fasthost.start()
    try:
        for i in range(CALLS):
            libm.cos(i * 0.001)
        for _ in range(20):
            libm.sin(1.0)
    finally:
        fasthost.stop()
    yield fasthost.snapshot()
    fasthost.reset()


def by_name(metrics_data) -> dict:
    [resource] = metrics_data.resource_metrics
    [scope] = resource.scope_metrics
    assert scope.scope.name == "fasthost"
    return {metric.name: metric for metric in scope.metrics}


def point(metric, **attributes):
    [found] = [p for p in metric.data.data_points if dict(p.attributes) == attributes]
    return found


def test_in_memory_reader_reads_the_recording_counters_and_buckets_exactly(recorded):
    reader = InMemoryMetricReader()
    otel.register(reader, top=1)
    metrics = by_name(reader.get_metrics_data())
    snap = recorded
    assert point(metrics["fasthost.target.calls"], target=COS).value == CALLS
    assert point(metrics["fasthost.target.calls"], target="other").value == 20
    assert point(metrics["fasthost.transitions"], call="leave", result="S_OK").value == CALLS + 20
    assert point(metrics["fasthost.transitions"], call="enter", result="HOST_E_NOT_OWNER").value == 0
    row = snap.targets[snap.targets["symbol"] == COS][0]
    assert point(metrics["fasthost.target.time"], target=COS).value == int(row["total_ns"])
    assert metrics["fasthost.target.time"].unit == "ns"

    latency = point(metrics["fasthost.target.latency"], target=COS)
    hist = snap.histogram("inclusive", target=COS)
    assert (latency.count, latency.sum, latency.scale) == (CALLS, hist.sum, 0)
    assert (latency.min, latency.max) == (hist.min, hist.max)
    # Independently of the mapping's code: sum the snapshot's buckets by octave.
    lowers, uppers, counts = hist.nonzero()
    expected: dict[int, int] = {}
    for low, high, n in zip(lowers.astype(np.int64), uppers.astype(np.int64), counts.tolist()):
        octave = int(np.log2(low))
        index = octave - 1 if high - low == 1 and low == 2**octave else octave  # a lone 2**k is upper-inclusive
        expected[index] = expected.get(index, 0) + n
    assert as_dict(latency.positive.offset, list(latency.positive.bucket_counts)) == expected


class Receiver:
    """A small OTLP/HTTP metrics receiver on 127.0.0.1: decodes every
    request body as an ExportMetricsServiceRequest."""

    def __init__(self):
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

        self.requests: list = []
        received = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = metrics_service_pb2.ExportMetricsServiceRequest()
                request.ParseFromString(body)
                received.append((self.path, request))
                reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/v1/metrics"

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver():
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="the test extra installs the OTLP exporter")
    pytest.importorskip("opentelemetry.proto", reason="the test extra installs opentelemetry-proto")
    server = Receiver()
    yield server
    server.close()


def decoded(request) -> dict:
    [resource] = request.resource_metrics
    [scope] = resource.scope_metrics
    return {metric.name: metric for metric in scope.metrics}


def test_otlp_exporter_delivers_the_snapshots_buckets_exactly(recorded, receiver):
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics.export import MetricExportResult

    exporter = OTLPMetricExporter(endpoint=receiver.endpoint)
    try:
        assert otel.export(exporter, recorded, scale=3) is MetricExportResult.SUCCESS
    finally:
        exporter.shutdown()
    [(path, request)] = receiver.requests
    assert path == "/v1/metrics"
    metrics = decoded(request)
    for target in (COS, "libm.so.6!sin"):
        [sent] = [
            p for p in metrics["fasthost.target.latency"].exponential_histogram.data_points
            if {a.key: a.value.string_value for a in p.attributes} == {"target": target}
        ]  # fmt: skip
        zero_count, offset, counts = otel.exponential_buckets(recorded.histogram("inclusive", target=target), 3)
        assert (sent.scale, sent.zero_count, sent.positive.offset) == (3, zero_count, offset)
        assert list(sent.positive.bucket_counts) == counts
        assert sent.count == sum(counts) == int(recorded.targets[recorded.targets["symbol"] == target]["calls"][0])
    calls = {p.attributes[0].value.string_value: p.as_int for p in metrics["fasthost.target.calls"].sum.data_points}
    assert calls == {COS: CALLS, "libm.so.6!sin": 20}
    assert metrics["fasthost.target.calls"].sum.is_monotonic


def test_periodic_reader_exports_the_live_recording_on_an_interval(receiver):
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    libm = fasthost.ctypes.instrument(ctypes.CDLL("libm.so.6"))
    libm.cos.restype, libm.cos.argtypes = ctypes.c_double, [ctypes.c_double]
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=receiver.endpoint), export_interval_millis=100)
    fasthost.start()
    try:
        otel.register(reader)
        for i in range(CALLS):
            libm.cos(i * 0.001)
        deadline = time.monotonic() + 30
        seen: list[int] = []
        while time.monotonic() < deadline and CALLS not in seen:
            seen = [
                p.as_int
                for _, request in list(receiver.requests)
                for p in decoded(request)["fasthost.target.calls"].sum.data_points
            ]
            time.sleep(0.05)
    finally:
        reader.shutdown()
        fasthost.stop()
        fasthost.reset()
    assert CALLS in seen


def test_a_periodic_readers_exports_are_not_recorded_as_the_programs_calls(receiver):
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=receiver.endpoint), export_interval_millis=50)
    fasthost.start()
    try:
        otel.register(reader)
        with fasthost.capture_builtins():
            deadline = time.monotonic() + 30
            while len(receiver.requests) < 5 and time.monotonic() < deadline:
                time.sleep(0.05)
            reader.shutdown()
        threads = fasthost.snapshot().threads
    finally:
        fasthost.stop()
        fasthost.reset()
    assert len(receiver.requests) >= 5
    recorded = {str(row["name"]): int(row["leave"]) for row in threads}
    # Five HTTP exports make thousands of builtin calls; the reader's thread
    # records only the few it made before its first collection paused it.
    [reader_thread] = [name for name in recorded if name.startswith("OtelPeriodic")]
    assert recorded[reader_thread] < 100, recorded
    assert not [name for name in recorded if name.startswith("ThreadPoolExecutor")], recorded


def test_register_refuses_bad_options_before_any_collection():
    reader = InMemoryMetricReader()
    with pytest.raises(ValueError, match="top must be >= 0, got -1"):
        otel.register(reader, top=-1)
    with pytest.raises(TypeError, match="unexpected options: scael"):
        otel.register(reader, scael=2)
