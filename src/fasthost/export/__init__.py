"""The export layer: turns what the core recorded into numpy arrays."""

from fasthost.export.snapshot import Snapshot, snapshot

__all__ = ["Snapshot", "snapshot"]
