"""The core when a target finds no memory, in plain C (tests/native/out_of_memory.c):
an open refused that way stays open, unrecorded, and nothing is recorded
inside it, on the fast path neither, with frames beneath it or none, so
that unrecorded opens are always the newest entries (the captures' closes
find their frames by that)."""

from .core_programs import needs_the_core, run_core_program

pytestmark = needs_the_core


def test_nothing_is_recorded_inside_an_open_refused_for_want_of_memory(tmp_path):
    assert run_core_program("out_of_memory", tmp_path).strip().endswith("out_of_memory: ok")
