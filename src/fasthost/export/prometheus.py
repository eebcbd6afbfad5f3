"""The live recording as Prometheus metrics (optional extra
``fasthost[prometheus]``): a ``prometheus_client`` collector that takes a
snapshot at each scrape, and ``serve()``, an HTTP endpoint for it.

Histograms are classic ones with ``le`` on octave edges: bucket ``le`` =
(2**k - 1) ns holds every duration below 2**k ns. fasthost's buckets never
straddle a power of two and durations are whole ns, so every cumulative
count is exact, not interpolated (see the README for why not native
histograms, and for the error of ``histogram_quantile``).
"""

from __future__ import annotations

import _thread
import socket
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import numpy as np

from fasthost import _core
from fasthost.export.histogram import Histogram, _lower_edges
from fasthost.export.metrics import Labels, check_top

__all__ = ["OCTAVES", "FasthostCollector", "Server", "octave_buckets", "serve"]

OCTAVES = range(3, 37)
"""The k of each ``le`` = (2**k - 1) ns edge: 7 ns to 68.7 s, then +Inf."""

_NS = 1e-9  # Prometheus' base unit of time is the second


def octave_buckets(histogram: Histogram) -> list[tuple[str, float]]:
    """Cumulative (``le`` in seconds as text, count) pairs of ``histogram``
    at the octave edges (2**k - 1) ns for k in ``OCTAVES``, then ``+Inf``:
    exact counts of the durations <= each edge."""
    lowers = _lower_edges(histogram.precision)[:-1]
    cumulative = np.concatenate(([0], np.cumsum(histogram.counts, dtype=np.uint64)))
    # Buckets whose lower edge is below 2**k hold only durations <= 2**k - 1.
    below = np.searchsorted(lowers, np.array([2**k for k in OCTAVES], dtype=np.uint64), side="left")
    edges = [(repr((2**k - 1) * _NS), float(cumulative[n])) for k, n in zip(OCTAVES, below.tolist())]
    return [*edges, ("+Inf", float(cumulative[-1]))]


class FasthostCollector:
    """A ``prometheus_client`` collector of this process's recording: each
    ``collect()`` takes a ``fasthost.snapshot()`` and yields

    - ``fasthost_transitions_total{call, result}``: calls of each kind
      (leave, enter, reverse_leave, reverse_enter) by HRESULT name;
    - ``fasthost_frames_abandoned_at_thread_exit_total``;
    - ``fasthost_target_calls_total{target}``,
      ``fasthost_target_seconds_total{target}`` (inclusive) and
      ``fasthost_target_exclusive_seconds_total{target}``;
    - ``fasthost_target_latency_seconds{target}``: a histogram of the
      inclusive durations, ``le`` on octave edges (``octave_buckets``).

    ``target`` is a symbol for at most ``top`` targets, which keep their
    label for the session (see :class:`~fasthost.export.metrics.Labels`:
    every series only grows), and ``other`` for the rest. The counters
    restart from 0 at a ``reset()`` or a new ``start()``, which
    Prometheus' ``rate()`` reads as a counter reset. Raises ``ValueError``
    for a negative ``top``."""

    def __init__(self, top: int = 20):
        self.top = check_top(top)
        self._labels = Labels(self.top)  # one scraping thread: no lock

    def describe(self) -> Iterator[Any]:
        """The metric families, without samples: prometheus_client reads
        their names from here to answer a filtered scrape
        (``/metrics?name[]=fasthost_target_calls_total``)."""
        yield from _families()

    def collect(self) -> Iterator[Any]:
        """The metric families of a snapshot taken now."""
        from fasthost.export.snapshot import snapshot

        figures = self._labels(snapshot())
        transitions, abandoned, calls, seconds, exclusive, latency = _families()
        for (call, result), count in figures.transitions.items():
            transitions.add_metric([call, result], count)
        abandoned.add_metric([], figures.abandoned_at_exit)
        for row in figures.targets:
            calls.add_metric([row.label], row.calls)
            seconds.add_metric([row.label], row.total_ns * _NS)
            exclusive.add_metric([row.label], row.exclusive_ns * _NS)
            latency.add_metric([row.label], octave_buckets(row.histogram), row.histogram.sum * _NS)
        yield from (transitions, abandoned, calls, seconds, exclusive, latency)


def _families() -> list[Any]:
    """The exported metric families, empty, in the order they are exposed."""
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

    return [
        CounterMetricFamily("fasthost_transitions", "Transition calls by kind and HRESULT", labels=["call", "result"]),
        CounterMetricFamily(
            "fasthost_frames_abandoned_at_thread_exit", "Frames still open when their thread ended", labels=[]
        ),
        CounterMetricFamily("fasthost_target_calls", "Unmanaged calls per target", labels=["target"]),
        CounterMetricFamily(
            "fasthost_target_seconds", "Inclusive time in unmanaged calls per target", labels=["target"]
        ),
        CounterMetricFamily(
            "fasthost_target_exclusive_seconds",
            "Time in the target's own native code (callbacks left out)",
            labels=["target"],
        ),
        HistogramMetricFamily(
            "fasthost_target_latency_seconds", "Durations of unmanaged calls per target", labels=["target"]
        ),
    ]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape a second would fill stderr


class _IPv6Server(WSGIServer):
    address_family = socket.AF_INET6


class Server:
    """A running ``/metrics`` endpoint (from ``serve()``): ``port`` is the
    bound port, ``url`` the address to scrape; ``stop()`` (or leaving a
    ``with`` block) shuts it down and closes its socket."""

    def __init__(self, server: WSGIServer, finished: threading.Event):
        self._server = server
        self._finished = finished  # set when the serving thread has returned
        self.address = str(server.server_address[0])
        self.port = int(server.server_address[1])

    @property
    def url(self) -> str:
        """The metrics URL, e.g. ``http://127.0.0.1:9464/metrics``."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        """Stops serving and closes the socket (waits for a scrape being
        answered). Calling it again does nothing."""
        if not self._finished.is_set():
            self._server.shutdown()
            self._finished.wait()
        self._server.server_close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<fasthost.Server {self.url}>"


def serve(port: int = 0, addr: str = "127.0.0.1", *, top: int = 20) -> Server:
    """Serves the live recording to Prometheus at ``http://addr:port/metrics``
    (``port=0``: a free port, read it from ``.port``), from one background
    thread whose own calls are never recorded. Each scrape is a snapshot;
    ``top`` bounds the targets labelled by name (the rest are ``other``).

    Needs ``prometheus_client`` (``pip install fasthost[prometheus]``):
    raises ``ImportError`` saying so. Raises ``TypeError``/``ValueError``
    for a bad port or ``top``, ``OSError`` when the address cannot be bound.
    """
    if not isinstance(port, int) or isinstance(port, bool):
        raise TypeError(f"port must be an int, not {type(port).__name__}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be between 0 and 65535, got {port}")
    try:
        from prometheus_client import CollectorRegistry, make_wsgi_app
    except ImportError:
        raise ImportError("fasthost.serve() needs prometheus_client: pip install 'fasthost[prometheus]'") from None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FasthostCollector(top))
    server_class = _IPv6Server if ":" in addr else WSGIServer
    # One thread answers every scrape (no thread per request), so that all
    # of the endpoint's work runs where recording is paused.
    server = make_server(addr, port, make_wsgi_app(registry), server_class=server_class, handler_class=_QuietHandler)
    paused, finished = threading.Event(), threading.Event()

    def answer_scrapes() -> None:
        _core._pause()  # this thread's calls are fasthost's, not the program's
        try:
            paused.set()
            server.serve_forever(poll_interval=0.2)
        finally:
            finished.set()

    # A bare thread, not a threading.Thread: the latter's bootstrap makes
    # builtin calls (its ident, its started Event) before the target runs,
    # which a capture that sees every thread (sys.monitoring, 3.12+) would
    # record as the program's. Here pausing is the thread's first act. Like
    # a daemon thread, it does not keep the process alive.
    _thread.start_new_thread(answer_scrapes, ())
    paused.wait()
    return Server(server, finished)
