"""``fasthost.load`` on hostile files: what it reads and allocates is bounded
by what a snapshot needs, not by what the file declares, and every bad file
is refused with a one-line ``ValueError`` naming the file and the problem.

Every file here starts as a real saved snapshot; the hostile variants are
crafted from it with zipfile, as someone handing over a bad ``.npz`` would.
"""

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import fasthost
from fasthost.export.snapshot import THREAD_DTYPE

ZEROS = 1_500_000_000  # bytes in the zero-filled members below (1.5 GB)
RSS_GROWTH_LIMIT = 200 * 2**20


# ---- building files -----------------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    """A real snapshot saved by ``Snapshot.save``: one unmanaged call that
    returned, on the monotonic clock. fasthost is stopped again on return."""
    fasthost.start(clock="monotonic")
    fasthost.leave_runtime(1234)
    fasthost.enter_runtime()
    fasthost.stop()
    path = tmp_path / "run.npz"
    fasthost.snapshot().save(path)
    return path


def members(path):
    """name -> bytes of every member, in the archive's order."""
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def write_members(path, contents, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in contents.items():
            archive.writestr(name, data)


def npy(header, data=b"", version=1):
    """A .npy member with ``header`` (text) as it is, however bad."""
    text = header.encode("latin1")
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", len(text)) + text + data


def npy_header(dtype, shape):
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    return f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape!r}, }}\n"


def array_member(array):
    out = io.BytesIO()
    np.lib.format.write_array(out, np.asarray(array), allow_pickle=False)
    return out.getvalue()


def header_of(path):
    with zipfile.ZipFile(path) as archive, archive.open("header.npy") as f:
        return json.loads(str(np.lib.format.read_array(f, allow_pickle=False)))


def with_header(path, header):
    """Rewrites ``path`` with another JSON header (any JSON value)."""
    contents = members(path)
    contents["header.npy"] = array_member(np.array(json.dumps(header)))
    write_members(path, contents)


def write_zeros_member(path, name):
    """Adds (or replaces) member ``name`` holding 1.5 GB of zeros, streamed
    through deflate so neither the test nor the file holds 1.5 GB (the file
    grows by about 1.5 MB)."""
    contents = members(path)
    contents.pop(name, None)
    write_members(path, contents)
    chunk = memoryview(bytes(16 << 20))
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive, archive.open(name, "w", force_zip64=True) as f:
        left = ZEROS
        while left:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n


# ---- checking the outcome -----------------------------------------------------------


def refused(path, *words):
    """Loads ``path``, which must fail with a one-line ValueError naming the
    file and holding each of ``words``; returns the message."""
    with pytest.raises(ValueError) as info:
        fasthost.load(path)
    assert type(info.value) is ValueError, f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    for word in words:
        assert word in message, message
    return message


def assert_reportable(snap):
    """Everything a user does with a loaded snapshot works on it."""
    snap.report()
    json.dumps(snap.to_dict())
    for kind in ("inclusive", "exclusive", "callback"):
        snap.histogram(kind)
    repr(snap)


LOAD_AND_MEASURE = textwrap.dedent(
    """
    import json, resource, sys
    import fasthost
    load = fasthost.load  # imports the export layer before measuring
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    try:
        load(sys.argv[1])
        outcome = "loaded"
    except BaseException as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    print(json.dumps({"outcome": outcome, "growth": after - before}))
    """
)


def load_in_a_fresh_process(path, timeout=300):
    """(outcome, peak RSS growth in bytes) of ``fasthost.load(path)`` in a
    new interpreter, so that this process's own allocations hide nothing."""
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_AND_MEASURE, str(path)], capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    return result["outcome"], result["growth"]


# ---- the size of what is inflated ---------------------------------------------------


def test_an_unknown_member_of_1_5_gb_is_refused_without_inflating_it(saved):
    write_zeros_member(saved, "extra.npy")
    assert saved.stat().st_size < 4 << 20  # the file itself is small
    outcome, growth = load_in_a_fresh_process(saved)
    assert outcome.startswith(f"ValueError: {saved}: "), outcome
    assert "'extra.npy'" in outcome
    assert growth < RSS_GROWTH_LIMIT, f"load() grew the peak RSS by {growth / 2**20:.0f} MiB"


def test_a_known_member_larger_than_any_snapshot_is_refused_from_the_zip_directory(saved):
    write_zeros_member(saved, "hist_counts.npy")
    outcome, growth = load_in_a_fresh_process(saved)
    assert outcome.startswith(f"ValueError: {saved}: "), outcome
    assert "'hist_counts'" in outcome
    assert "1,500,000,000 bytes" in outcome
    assert growth < RSS_GROWTH_LIMIT, f"load() grew the peak RSS by {growth / 2**20:.0f} MiB"


@pytest.mark.parametrize(
    ("member", "dtype", "shape"),
    [
        ("symbol_addresses", np.uint64, (2**40,)),
        ("threads", THREAD_DTYPE, (2**40,)),
        ("results", np.uint64, (2**40, 4, 7)),
    ],
)
def test_a_member_declaring_a_tebibyte_shape_is_refused_before_allocating(saved, member, dtype, shape):
    contents = members(saved)
    contents[f"{member}.npy"] = npy(npy_header(dtype, shape), bytes(16))
    write_members(saved, contents)
    refused(saved, f"'{member}'", "declares")


def test_a_member_longer_than_its_header_declares_is_refused(saved):
    contents = members(saved)
    contents["symbol_addresses.npy"] += bytes(8)
    write_members(saved, contents)
    refused(saved, "'symbol_addresses'")


# ---- hostile .npy headers ------------------------------------------------------------


HOSTILE_NPY_HEADERS = {
    "100,000 brackets": ("[" * 100_000, 2),
    "9,000 brackets": ("[" * 9_000, 1),
    "150 nested parentheses": ("(" * 150 + ")" * 150, 1),
    "a chain of 9,000 minus signs": ("{'descr': '<u8', 'fortran_order': False, 'shape': (" + "-" * 9_000 + "1,), }", 1),
    "a 400-digit shape": ("{'descr': '<u8', 'fortran_order': False, 'shape': (" + "9" * 400 + ",), }", 1),
    "a call": ("{'descr': '<u8', 'fortran_order': False, 'shape': (len('ab'),), }", 1),
    "not a dict": ("['descr', '<u8']", 1),
    "an extra key": ("{'descr': '<u8', 'fortran_order': False, 'shape': (0,), 'x': 1}", 1),
    "a negative shape": ("{'descr': '<u8', 'fortran_order': False, 'shape': (-1,), }", 1),
    "a boolean shape": ("{'descr': '<u8', 'fortran_order': False, 'shape': (True,), }", 1),
    "a list for a shape": ("{'descr': '<u8', 'fortran_order': False, 'shape': [0], }", 1),
    "a string for fortran_order": ("{'descr': '<u8', 'fortran_order': 'no', 'shape': (0,), }", 1),
    "an object dtype": ("{'descr': '|O', 'fortran_order': False, 'shape': (0,), }", 1),
    "a big-endian dtype": ("{'descr': '>u8', 'fortran_order': False, 'shape': (0,), }", 1),
    "an unhashable key": ("{['descr']: '<u8'}", 1),
    "a NUL byte": ("{'descr': '<u8', 'fortran_order': False, 'shape': (0,), }\x00", 1),
}


@pytest.mark.parametrize("case", list(HOSTILE_NPY_HEADERS))
def test_hostile_npy_headers_are_refused_without_recursion_or_allocation(saved, case):
    header, version = HOSTILE_NPY_HEADERS[case]
    contents = members(saved)
    contents["symbol_addresses.npy"] = npy(header, version=version)
    write_members(saved, contents)
    refused(saved, "'symbol_addresses'")


@pytest.mark.parametrize("width", [2**29, 999_999_999])
def test_a_str_member_wider_than_numpy_allows_is_refused(saved, width):
    contents = members(saved)
    contents["symbol_names.npy"] = npy(f"{{'descr': '<U{width}', 'fortran_order': False, 'shape': (0,), }}\n")
    write_members(saved, contents)
    refused(saved, "'symbol_names'", f"<U{width}")


@pytest.mark.parametrize(
    ("prefix", "words"),
    [
        (b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**32 - 1) + b"{}", "header"),  # claims a 4 GiB header
        (b"\x93NUMPY\x01\x00" + struct.pack("<H", 65_000) + b"{}", "header"),  # claims more than it holds
        (b"\x93NUMPY\x09\x00" + struct.pack("<H", 2) + b"{}", "version"),
        (b"\x93NUMPY\x01", "numpy array"),
        (b"garbage", "numpy array"),
    ],
)
def test_npy_prefixes_claiming_impossible_lengths_are_refused(saved, prefix, words):
    contents = members(saved)
    contents["threads.npy"] = prefix
    write_members(saved, contents)
    refused(saved, "'threads'", words)


@pytest.mark.parametrize(
    ("member", "array", "words"),
    [
        ("results", np.zeros((1, 4, 6), np.uint64), "threads and results disagree"),
        ("results", np.zeros((1, 28), np.uint64), "'results'"),
        ("hist_counts", np.zeros((1, 16), np.uint64), "precision"),
        ("hist_counts", np.zeros((1, 32), np.int64), "'hist_counts'"),
        ("symbol_names", np.array(["a", "b"]), "symbol"),
        ("symbol_names", np.zeros(1, np.uint64), "'symbol_names'"),
        ("header", np.array(["{}", "{}"]), "'header'"),
        ("header", np.array(b"{}"), "'header'"),
        ("threads", np.zeros(1, np.uint64), "'threads'"),
    ],
)
def test_arrays_whose_dtype_or_shape_breaks_the_schema_are_refused(saved, member, array, words):
    contents = members(saved)
    contents[f"{member}.npy"] = array_member(array)
    write_members(saved, contents)
    refused(saved, words)


def test_a_fortran_ordered_member_reads_as_numpy_would(saved):
    """np.save writes an array that is F- but not C-contiguous in Fortran
    order: such a file is valid and must read as the same values."""
    snap = fasthost.load(saved)
    contents = members(saved)
    rows = np.concatenate([snap.hist_rows, snap.hist_rows])  # two rows at least: F order differs from C
    counts = np.asfortranarray(np.arange(len(rows) * 32, dtype=np.uint64).reshape(len(rows), 32))
    contents["hist_counts.npy"] = array_member(counts)
    contents["hist_rows.npy"] = array_member(rows)
    assert b"'fortran_order': True" in contents["hist_counts.npy"]
    write_members(saved, contents)
    loaded = fasthost.load(saved)
    assert np.array_equal(loaded.hist_counts, counts)
    assert_reportable(loaded)


# ---- text --------------------------------------------------------------------------------


def beyond_unicode(array, field=None):
    """A copy of str ``array`` (or of its str ``field``) whose first
    character is 0xFFFFFFFF, past the last code point, U+10FFFF."""
    array = np.array(array, copy=True)
    raw = array.reshape(-1).view(np.uint8).reshape(array.size, -1)
    at = 0 if field is None else array.dtype.fields[field][1]
    raw[0, at : at + 4] = 0xFF
    return array


@pytest.mark.parametrize("member", ["symbol_names", "threads", "header"])
def test_text_past_the_last_unicode_code_point_is_refused(saved, member):
    """numpy turns such UCS-4 into a corrupt Python str without a word."""
    snap = fasthost.load(saved)
    contents = members(saved)
    if member == "symbol_names":
        changed = beyond_unicode(np.array(list(snap.symbols.values())))
    elif member == "threads":
        changed = beyond_unicode(snap.threads, "name")
    else:
        changed = beyond_unicode(np.array(json.dumps(header_of(saved))))
    contents[f"{member}.npy"] = array_member(changed)
    write_members(saved, contents)
    refused(saved, "not text")


# ---- the JSON header and its meta values ----------------------------------------------


def test_a_deeply_nested_json_header_is_refused_without_recursion(saved):
    contents = members(saved)
    contents["header.npy"] = array_member(np.array("[" * 100_000))
    write_members(saved, contents)
    refused(saved, "header")


def test_a_json_header_of_more_than_a_mebibyte_is_refused(saved):
    header = header_of(saved)
    header["meta"]["pad"] = "x" * (1 << 20)
    with_header(saved, header)
    refused(saved, "'header'")


CONFIG = {"clock": "monotonic", "max_depth": 256, "precision": 5, "timeout_ns": 0, "max_targets": 1024}

BAD_META = [
    ("precision", "5"),
    ("precision", 5.0),
    ("precision", True),
    ("precision", 0),
    ("precision", 9),
    ("precision", None),
    ("config", "monotonic"),
    ("config", [CONFIG]),
    ("config", {**CONFIG, "clock": "sundial"}),
    ("config", {**CONFIG, "clock": 1}),
    ("config", {**CONFIG, "max_depth": 0}),
    ("config", {**CONFIG, "max_depth": 2**20 + 1}),
    ("config", {**CONFIG, "precision": 6}),  # not the snapshot's precision
    ("config", {**CONFIG, "timeout_ns": -1}),
    ("config", {**CONFIG, "timeout_ns": 2**64}),
    ("config", {**CONFIG, "max_targets": 0}),
    ("config", {**CONFIG, "max_targets": "1024"}),
    ("config", {k: v for k, v in CONFIG.items() if k != "clock"}),
    ("config", {**CONFIG, "colour": "blue"}),
    ("session", 7),
    ("session", {"pid": -1, "epoch": 1}),
    ("session", {"pid": "1", "epoch": 1}),
    ("session", {"pid": 1, "epoch": 2**32}),
    ("session", {"pid": 1}),
    ("session", {"pid": 1, "epoch": 1, "host": "x"}),
    ("running", "yes"),
    ("running", 1),
    ("poisoned", None),
    ("session_ns", -1),
    ("session_ns", 2**64),
    ("session_ns", 1.5),
    ("session_ns", "1"),
    ("unregistered_out_of_memory", -1),
    ("unregistered_out_of_memory", 2**64),
    ("unregistered_out_of_memory", float("nan")),
    ("unregistered_out_of_memory", [1]),
    ("interval_ns", "1"),
    ("interval_ns", 2**65),
    ("merged", 0),
    ("merged", True),
    ("merged", "2"),
    ("owner", "someone"),  # not a key fasthost writes
    ("session", {"pid": 1, "epoch": 1, "id": "not hex"}),
    ("session", {"pid": 1, "epoch": 1, "id": 5}),
    ("session", {"pid": 1, "epoch": 1, "id": "0123456789abcdef", "host": "x"}),
    ("sources", {"pid": 1}),
    ("sources", [{"pid": 1, "epoch": 1, "id": "0123456789abcdef"}]),  # no session_ns
    ("sources", [{"pid": -1, "epoch": 1, "id": "0123456789abcdef", "session_ns": 0}]),
    ("children_without_data", [1, "2"]),
    ("children_without_data", 3),
]


@pytest.mark.parametrize(("key", "value"), BAD_META, ids=[f"{k}={v!r}"[:40] for k, v in BAD_META])
def test_meta_values_of_the_wrong_type_or_range_are_refused(saved, key, value):
    header = header_of(saved)
    header["meta"][key] = value
    with_header(saved, header)
    refused(saved, repr(key))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"meta": []}, "meta"),
        ({"meta": None}, "meta"),
        ({"version": True}, "version"),
        ({"version": 1.0}, "version"),
        ({"comment": "hi"}, "'comment'"),
        ({"format": None}, "another format"),
    ],
)
def test_header_fields_of_the_wrong_type_are_refused(saved, change, words):
    header = header_of(saved)
    header.update(change)
    with_header(saved, header)
    refused(saved, words)


def test_a_header_that_is_not_an_object_is_refused(saved):
    with_header(saved, ["fasthost-snapshot", 1])
    refused(saved, "not a fasthost snapshot")


# ---- damaged files ----------------------------------------------------------------------


def test_a_truncated_file_is_refused_at_every_length(saved):
    data = saved.read_bytes()
    cut = saved.with_name("cut.npz")
    for length in sorted({*range(0, len(data), max(1, len(data) // 64)), *range(len(data) - 30, len(data))}):
        cut.write_bytes(data[:length])
        refused(cut, "not a fasthost snapshot")


@pytest.mark.parametrize(
    "member", ["header", "threads", "results", "thread_targets", "hist_rows", "hist_counts", "symbol_addresses"]
)
def test_a_truncated_member_inside_a_sound_zip_is_refused_naming_it(saved, member):
    contents = members(saved)
    contents[f"{member}.npy"] = contents[f"{member}.npy"][:-5]
    write_members(saved, contents)
    refused(saved, f"'{member}'")


def test_a_flipped_byte_anywhere_is_refused_or_loads_a_reportable_snapshot(saved):
    data = saved.read_bytes()
    damaged = saved.with_name("damaged.npz")
    for i in range(len(data)):
        damaged.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])
        try:
            snap = fasthost.load(damaged)
        except ValueError:
            refused(damaged)  # and then the message is one line naming the file
        else:
            assert_reportable(snap)


def byte_changes(data, is_json):
    """(offset, xor mask) pairs worth trying on one .npy member: every
    byte of its header and data with the low bit flipped (a digit becomes
    another digit), and the array data with the high bit flipped too (an
    index turns negative or huge). The header's space padding and the
    zero high bytes of the JSON header's UCS-4 characters are left out."""
    start = 10 + int.from_bytes(data[8:10], "little")  # where the array data begins (.npy 1.0)
    padding = range(data.rindex(b"}", 0, start) + 1, start - 1)
    for i in range(len(data)):
        if i in padding or (is_json and i >= start and (i - start) % 4):
            continue
        yield i, 0x01
        if i >= start and not is_json:
            yield i, 0x80


def test_a_changed_byte_inside_any_member_is_refused_or_loads_a_reportable_snapshot(saved):
    """Unlike a flipped byte in the file, these keep every CRC right: the
    changed values reach the loader's own checks."""
    contents = members(saved)
    damaged = saved.with_name("damaged.npz")
    for name, data in contents.items():
        for i, mask in byte_changes(data, name == "header.npy"):
            changed = {**contents, name: data[:i] + bytes([data[i] ^ mask]) + data[i + 1 :]}
            write_members(damaged, changed, zipfile.ZIP_STORED)
            try:
                snap = fasthost.load(damaged)
            except ValueError:
                refused(damaged)
            else:
                assert_reportable(snap)


# ---- zip features fasthost never writes ---------------------------------------------------


def test_two_members_of_one_name_are_refused(saved):
    contents = members(saved)
    with zipfile.ZipFile(saved, "a") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr("threads.npy", contents["threads.npy"])
    refused(saved, "'threads.npy'")


def test_a_member_compressed_with_another_method_is_refused(saved):
    contents = members(saved)
    with zipfile.ZipFile(saved, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in contents.items():
            archive.writestr(name, data, zipfile.ZIP_BZIP2 if name == "threads.npy" else zipfile.ZIP_DEFLATED)
    refused(saved, "'threads'", "compression")


def test_a_zip_directory_of_thousands_of_entries_is_refused_before_it_is_parsed(saved):
    with zipfile.ZipFile(saved, "a") as archive:
        for i in range(5000):
            archive.writestr(f"padding{i:05}.npy", b"")
    refused(saved, "directory")


def test_an_encrypted_member_is_refused(saved):
    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as archive:
        at = archive.start_dir  # the central directory: one 46-byte record + name per member
    while data[at + 46 : at + 46 + len(b"threads.npy")] != b"threads.npy":
        name, extra, comment = struct.unpack_from("<3H", data, at + 28)
        at += 46 + name + extra + comment
    # Set the "encrypted" bit of the threads member's general purpose flags.
    struct.pack_into("<H", data, at + 8, struct.unpack_from("<H", data, at + 8)[0] | 1)
    saved.write_bytes(bytes(data))
    refused(saved, "'threads'", "encrypted")


# ---- files that are not regular files --------------------------------------------------------


def test_a_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "snapshot.fifo"
    os.mkfifo(fifo)
    # Nothing ever writes to the FIFO: opening it to read would block forever,
    # so the load runs in another process with a deadline.
    outcome, _ = load_in_a_fresh_process(fifo, timeout=30)
    assert outcome.startswith("ValueError: "), outcome
    assert f"not a regular file: {fifo}" in outcome


@pytest.mark.parametrize("which", ["directory", "device"])
def test_a_directory_or_a_device_is_refused_as_not_a_regular_file(tmp_path, which):
    path = tmp_path if which == "directory" else os.devnull
    with pytest.raises(ValueError, match="not a regular file") as info:
        fasthost.load(path)
    assert str(path) in str(info.value)


def test_a_symlink_to_a_snapshot_still_loads(saved):
    link = saved.with_name("link.npz")
    link.symlink_to(saved)
    assert fasthost.load(link) == fasthost.load(saved)


# ---- every kind of file fasthost writes still loads -------------------------------------------


def test_every_kind_of_saved_snapshot_still_loads_and_reports(tmp_path):
    """Diffs, merges, empty snapshots, every precision, uncompressed
    archives (np.savez) and callback-only snapshots are all valid files."""
    kept = {}
    fasthost.start(clock="monotonic", precision=1)
    kept["empty"] = fasthost.snapshot()
    fasthost.leave_runtime(1)
    fasthost.enter_runtime()
    early = fasthost.snapshot()
    fasthost.leave_runtime(2)
    fasthost.enter_runtime()
    late = fasthost.snapshot()
    fasthost.stop()
    kept["precision 1"] = late
    kept["diff"] = late - early
    kept["merge"] = fasthost.merge([early, late])
    fasthost.start(clock="monotonic", precision=8, timeout_ns=2**64 - 1)
    fasthost.leave_runtime(3)
    fasthost.reverse_enter_runtime()
    fasthost.reverse_leave_runtime()
    fasthost.enter_runtime()
    fasthost.stop()
    kept["precision 8 with a callback"] = fasthost.snapshot()
    fasthost.start(clock="monotonic")
    fasthost.reverse_enter_runtime()
    fasthost.reverse_leave_runtime()
    fasthost.stop()
    kept["callbacks only"] = fasthost.snapshot()

    for name, snap in kept.items():
        path = tmp_path / f"{name}.npz"
        snap.save(path)
        assert fasthost.load(path) == snap, name
        write_members(path, members(path), zipfile.ZIP_STORED)
        assert fasthost.load(path) == snap, name
        if name != "callbacks only":  # report() of a snapshot without targets fails: see snapshot._row_mask
            assert_reportable(fasthost.load(path))
