"""The export layer: turns what the core recorded into numpy arrays,
histograms, files, reports and plots."""

from fasthost.export.histogram import Histogram
from fasthost.export.memory import memory_usage
from fasthost.export.snapshot import Snapshot, load, merge, snapshot
from fasthost.export.symbols import register_target, unregister_target

__all__ = ["Histogram", "Snapshot", "load", "memory_usage", "merge", "register_target", "snapshot", "unregister_target"]
