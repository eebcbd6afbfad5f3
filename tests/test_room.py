"""Where the core refuses opens, in plain C (tests/native/room.c), against a
model: the protocol's frames and the captures' each nest max_depth deep,
nothing opens on top of an unrecorded open, a capture's refused open leaves
no entry. Random sequences of the four kinds of open, closes, protocol
closes that abandon the captured frames they straddle, captured frames
abandoned in place and new sessions (another max_depth too) at max_depth
1 to 7: the count of each side's frames, which the core keeps between
opens past max_depth, is checked against every kind of stack."""

from .core_programs import needs_the_core, run_core_program

pytestmark = needs_the_core


def test_opens_are_refused_exactly_where_each_sides_own_max_depth_is_reached(tmp_path):
    assert run_core_program("room", tmp_path, "20000").strip() == "room: ok"
