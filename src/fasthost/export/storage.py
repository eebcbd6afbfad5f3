"""Snapshots on disk: one ``.npz`` holding the snapshot's arrays and a JSON
header. No pickles, so loading a file never runs code from it.

A snapshot file can come from anywhere (a colleague, a CI artefact, a
crafted attack), so ``load`` sizes nothing by what the file declares: the
zip directory, every member's size, every ``.npy`` header and every value
of the JSON header are checked against what fasthost writes before they
are used, and anything else is refused with a one-line ``ValueError``.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import json
import math
import os
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, Callable

import numpy as np

from fasthost import _core
from fasthost.export.callsites import CALLSITE_DTYPE, SITE_BUCKETS
from fasthost.export.schema import (
    CALLBACK,
    HIST_KINDS,
    HIST_ROW_DTYPE,
    PRECISIONS,
    THREAD_DTYPE,
    THREAD_TARGET_DTYPE,
    bucket_rows,
)
from fasthost.hresult import CALL_ORDER, RESULT_ORDER

if TYPE_CHECKING:
    from fasthost.export.snapshot import Snapshot

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "open_for_writing", "read", "save"]

FORMAT_NAME = "fasthost-snapshot"
FORMAT_VERSION = 2
"""2: threads carry their ``pid``; sessions an ``id`` (format 1 files load)."""


def save(snapshot: Snapshot, path: str | os.PathLike[str]) -> None:
    """Writes ``snapshot`` to ``path`` (``.npz``; the name is kept as
    given). Raises ``OSError`` when it cannot be written."""
    symbols = snapshot.symbols
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "meta": snapshot.meta}
    with open_for_writing(path) as f:
        np.savez_compressed(
            f,
            header=np.array(json.dumps(header)),
            threads=snapshot.threads,
            results=snapshot.results,
            thread_targets=snapshot.thread_targets,
            hist_rows=snapshot.hist_rows,
            hist_counts=snapshot.hist_counts,
            symbol_addresses=np.array(list(symbols), dtype=np.uint64),
            symbol_names=np.array(list(symbols.values()), dtype=str),
            callsites=snapshot.callsites,
            callsite_counts=snapshot.callsite_counts,
        )


# ---- what a snapshot file holds ------------------------------------------------------

_STR = None
"""In ``_MEMBERS``: a str array (numpy ``U``) of any width."""

_MEMBERS: dict[str, tuple[np.dtype | None, int]] = {
    "header": (_STR, 0),  # the JSON header, one str
    "threads": (THREAD_DTYPE, 1),
    "results": (np.dtype(np.uint64), 3),
    "thread_targets": (THREAD_TARGET_DTYPE, 1),
    "hist_rows": (HIST_ROW_DTYPE, 1),
    "symbol_addresses": (np.dtype(np.uint64), 1),
    "symbol_names": (_STR, 1),
    "callsites": (CALLSITE_DTYPE, 1),
    "callsite_counts": (np.dtype(np.uint64), 2),
    "hist_counts": (np.dtype(np.uint64), 2),
}
"""Member (``<key>.npy``) -> (dtype, number of dimensions), in the order
``load`` reads them: the histogram counts, by far the largest, come last,
once everything they depend on has been checked."""

# fasthost always writes these; an absent one means no symbols, no call sites
# (files from before call sites were recorded)
_OPTIONAL = frozenset({"symbol_names", "callsites", "callsite_counts"})

# The .npy "descr" numpy writes for each fixed dtype, and the pattern of a
# str dtype in this machine's byte order (the only order fasthost writes).
_DESCRS = {key: np.lib.format.dtype_to_descr(dtype) for key, (dtype, _) in _MEMBERS.items() if dtype is not _STR}
# Older thread layouts, read and upgraded: format 1 had no ``pid`` (given the
# pid of the file's session, or 0 when it has none), and files of fasthost 0.x
# from before callbacks had self time also lack that column (given the
# callbacks' inclusive time, the most that can be said: a callback without
# frames inside is all self time).
_THREADS_FORMAT_1 = np.dtype([f for f in THREAD_DTYPE.descr if f[0] != "pid"])
_THREADS_WITHOUT_CALLBACK_SELF = np.dtype([f for f in _THREADS_FORMAT_1.descr if f[0] != "callback_exclusive_ns"])
_OLDER_THREADS = [
    (np.lib.format.dtype_to_descr(dtype), dtype) for dtype in (_THREADS_FORMAT_1, _THREADS_WITHOUT_CALLBACK_SELF)
]
_STR_DESCR = re.compile(re.escape(np.dtype("U1").str[0]) + r"U[1-9][0-9]{0,8}")

_U64_MAX = 2**64 - 1
_CLOCKS = _core.CLOCKS[1:]  # a session's clock: the core resolves "auto" to one of the others
# Integer values of the JSON header: name -> (lowest, highest), as the core and
# the export layer can produce them.
_CONFIG_INTS = _core.CONFIG_LIMITS
_SESSION_INTS = {"pid": (0, 2**32 - 1), "epoch": (0, 2**32 - 1)}
_META_INTS = {
    "precision": (PRECISIONS[0], PRECISIONS[-1]),
    "session_ns": (0, _U64_MAX),
    "unregistered_out_of_memory": (0, _U64_MAX),
    "interval_ns": (-_U64_MAX, _U64_MAX),  # a diff's: later session_ns - earlier session_ns
    "merged": (1, 2**63 - 1),  # a merge's: how many snapshots it holds
    "callsites_dropped": (0, _U64_MAX),  # calls past max_targets call sites per thread
}
_META_BOOLS = ("running", "poisoned")
_SESSION_ID = re.compile(r"[0-9a-f]{16}")  # a session's random id (format 2): 64 bits in hex
_SOURCE_INTS = {**_SESSION_INTS, "session_ns": (0, _U64_MAX)}
_META_LISTS = ("sources", "children_without_data")
_META_KEYS = frozenset({"config", "session", *_META_INTS, *_META_BOOLS, *_META_LISTS})

# ---- limits: far above what fasthost writes, checked before anything is read ----------

_MAX_STR_WIDTH = 1 << 20  # characters per name (file paths, symbols, the JSON header)
_MAX_SNAPSHOT_BYTES = 1 << 30
"""The arrays of one snapshot, uncompressed (1 GiB). A recording holds
roughly the core's own memory for it (docs/protocol.md §5: 4 KiB per active target), so
this is some 250,000 thread-target pairs. It is also what a hostile file of
consistent shapes can still make ``load`` inflate before a damaged checksum
at the end of a member gives it away."""

_MAX_HEADER_BYTES = 1 << 20  # the JSON header member; fasthost writes about 1.4 KB
_MAX_NPY_HEADER_BYTES = 64 << 10  # one member's .npy header; THREAD_DTYPE's, the longest, is about 600 bytes
_MAX_NPY_NESTING = 4  # {'descr': [('tid', '<u8'), ...], ...}: 3 deep
_MAX_JSON_NESTING = 8  # {"meta": {"config": {...}}}: 3 deep
_MAX_DIRECTORY_READ = 192 << 10  # what zipfile may read to find and parse the zip directory (see _BoundedReads)
_CHUNK_BYTES = 1 << 20  # member data is inflated this much at a time

_ENCRYPTED = 0x1  # zip general purpose flag

# What zipfile and zlib raise on damaged input: a bad CRC (BadZipFile), a
# broken deflate stream (zlib.error), a short file (EOFError), an unknown
# compression or encryption (NotImplementedError, RuntimeError), a name that
# is not UTF-8 (UnicodeDecodeError, a ValueError), an offset past 2**63
# (OverflowError), ... To the caller they all mean the same.
_DAMAGE = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    struct.error,
    NotImplementedError,
    RuntimeError,
    OverflowError,
    IndexError,
    KeyError,
)

_Fail = Callable[[str], ValueError]


def read(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The arrays, symbols and meta of the snapshot file at ``path``, as
    ``Snapshot``'s keyword arguments (see ``fasthost.load``, which builds
    the snapshot from them, for what is checked and what is raised)."""
    name = os.fspath(path)

    def fail(why: str) -> ValueError:
        return ValueError(f"{name}: {why}")

    with _open_regular_file(name) as f, _open_zip(f, fail) as archive, contextlib.ExitStack() as opened:
        infos = _directory(archive, fail)
        members = {key: _Member(key, infos[key], archive, opened, fail) for key in _MEMBERS if key in infos}
        meta = _parse_header(members["header"].read(), fail)
        precision = meta["precision"]
        _check_shapes(members, precision, fail)
        arrays = {key: member.read() for key, member in members.items() if key not in ("header", "hist_counts")}
        _check_contents(arrays, precision, fail)
        counts = members["hist_counts"].read()  # the largest, last: all the rest is sound
    names = arrays.get("symbol_names", np.zeros(0, dtype=str))
    threads = arrays["threads"]
    if threads.dtype != THREAD_DTYPE:
        threads = _upgraded_threads(threads, meta)
    sites, site_counts = arrays.get("callsites"), arrays.get("callsite_counts")
    return {
        "callsites": sites,
        "callsite_counts": site_counts,
        "threads": threads,
        "results": arrays["results"],
        "thread_targets": arrays["thread_targets"],
        "hist_rows": arrays["hist_rows"],
        "hist_counts": counts,
        "symbols": {int(a): str(n) for a, n in zip(arrays["symbol_addresses"].tolist(), names.tolist())},
        "meta": meta,
    }


def _upgraded_threads(threads: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """``threads`` of an older layout (``_OLDER_THREADS``) in today's."""
    upgraded = np.zeros(len(threads), dtype=THREAD_DTYPE)
    names = threads.dtype.names or ()
    for field in names:
        upgraded[field] = threads[field]
    if "callback_exclusive_ns" not in names:
        upgraded["callback_exclusive_ns"] = threads["callback_total_ns"]
    session = meta.get("session")
    upgraded["pid"] = session["pid"] if session is not None else 0
    return upgraded


# ---- the file and the zip directory -------------------------------------------------------

_NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


@contextlib.contextmanager
def open_for_writing(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """``path`` opened for writing, as ``open(path, "wb")`` would, but
    losing nothing when a write fails.

    A regular file (or one not there yet) is written to a new file beside
    it, which replaces it once complete and closed: a write that fails
    midway (a full disk, a file-size limit, an exception from the caller)
    raises and leaves the old file as it was, with nothing left over. The
    file keeps its permissions; through a symbolic link, the file it points
    to is replaced. Anything else (a pipe, a terminal, ``/dev/null``) is
    written in place, as is a file in a folder where no new file can be
    made. A named pipe with no reader raises ``OSError`` (ENXIO, "a named
    pipe with no reader") at once, where ``open`` would block until a
    reader came, hanging a command whose work is done."""
    target = os.path.realpath(path)
    try:
        mode: int | None = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        with _open_in_place(path) as f:
            yield f
        return
    try:
        fd, temporary = _new_file_beside(target)
    except OSError:
        with _open_in_place(path) as f:
            yield f
        return
    try:
        with _fdopen(fd, "wb", lambda fd: os.fchmod(fd, stat.S_IMODE(mode)) if mode is not None else None) as f:
            yield f
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _new_file_beside(target: str) -> tuple[int, str]:
    """A new, empty file in ``target``'s folder, named after it (hidden),
    created with the permissions ``open`` gives a new file (0o666 less the
    umask): its descriptor and name."""
    folder, name = os.path.split(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        temporary = os.path.join(folder, f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", os.path.join(folder, f".{name}.*.tmp"))


@contextlib.contextmanager
def _open_in_place(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """``path`` opened for writing, created or truncated, without waiting
    for a reader (see open_for_writing)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    nonblocking = getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags | nonblocking, 0o666)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise OSError(errno.ENXIO, "a named pipe with no reader", os.fspath(path)) from None
        raise
    # Only the open had to not wait: writes wait for a slow reader.
    with _fdopen(fd, "wb", lambda fd: os.set_blocking(fd, True) if nonblocking else None) as f:
        yield f


def _fdopen(fd: int, mode: str, prepare: Callable[[int], None]) -> BinaryIO:
    """``fd`` as a file object of ``mode`` once ``prepare(fd)`` has run
    without raising; on any failure ``fd`` is closed, not leaked."""
    try:
        prepare(fd)
        return os.fdopen(fd, mode)  # type: ignore[return-value]
    except BaseException:
        os.close(fd)
        raise


def _check_regular(name: str, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = next((kind for is_kind, kind in _NOT_REGULAR if is_kind(mode)), "not a file")
        raise ValueError(f"not a regular file: {name} ({kind})")


@contextlib.contextmanager
def _open_regular_file(name: str) -> Iterator[BinaryIO]:
    """``name`` opened for reading, if it is a regular file.

    Anything else is refused before it is opened: opening a FIFO waits for
    a writer, and a device can stream forever. The open is non-blocking and
    the check repeated on the open file, in case a FIFO was swapped in
    between."""
    _check_regular(name, os.stat(name).st_mode)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(name, flags)
    with _fdopen(fd, "rb", lambda fd: _check_regular(name, os.fstat(fd).st_mode)) as f:
        yield f


class _OverBudget(Exception):
    """zipfile asked for more than a snapshot's zip directory can take."""


class _BoundedReads:
    """A read-only file for zipfile that refuses, before reading, a read
    past ``budget`` bytes in all, while a budget is set.

    ``zipfile.ZipFile`` reads the whole central directory that the end
    record declares (up to 2**64 bytes) and builds an object for each
    entry, so a small file could make it build millions. The budget covers
    what it reads to find the end record (the last 64 KiB at most) and a
    directory a hundred times the size of fasthost's (8 entries, < 1 KiB);
    it is lifted once the directory is read."""

    def __init__(self, file: BinaryIO, size: int, budget: int):
        self._file, self._size = file, size
        self.budget: int | None = budget

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            n = max(self._size - self._file.tell(), 0)
        if self.budget is not None:
            if n > self.budget:
                raise _OverBudget
            self.budget -= n
        return self._file.read(n)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def seekable(self) -> bool:
        return True


@contextlib.contextmanager
def _open_zip(f: BinaryIO, fail: _Fail) -> Iterator[zipfile.ZipFile]:
    reads = _BoundedReads(f, os.fstat(f.fileno()).st_size, _MAX_DIRECTORY_READ)
    try:
        archive = zipfile.ZipFile(reads)  # a file-like object is all it needs
    except _OverBudget:
        raise fail("not a fasthost snapshot (its zip directory is far larger than a snapshot's)") from None
    except _DAMAGE as exc:
        raise fail(f"not a fasthost snapshot (not a readable .npz file: {_one_line(exc)})") from None
    reads.budget = None  # from here on, load() reads members in bounded chunks itself
    with archive:
        yield archive


def _directory(archive: zipfile.ZipFile, fail: _Fail) -> dict[str, zipfile.ZipInfo]:
    """The snapshot's members by key, checked from the zip directory alone
    (names, compression, sizes): nothing has been inflated yet."""
    entries = archive.infolist()
    if not any(info.filename == "header.npy" for info in entries):
        raise fail("not a fasthost snapshot (no header)")
    infos: dict[str, zipfile.ZipInfo] = {}
    for info in entries:
        key = info.filename[: -len(".npy")] if info.filename.endswith(".npy") else ""
        if key not in _MEMBERS:
            # Never read: an unknown member could be anything, of any size.
            raise fail(
                f"not a fasthost snapshot (unexpected member {_short(info.filename)}, "
                f"{info.file_size:,} bytes uncompressed; left unread)"
            )
        if key in infos:
            raise fail(f"corrupt snapshot: two members named {info.filename!r}")
        if info.flag_bits & _ENCRYPTED:
            raise fail(f"the {key!r} member is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise fail(
                f"the {key!r} member uses zip compression method {info.compress_type}; snapshots are stored or deflated"
            )
        limit = _MAX_HEADER_BYTES if key == "header" else _MAX_SNAPSHOT_BYTES
        if info.file_size > limit:
            raise fail(f"the {key!r} member is {info.file_size:,} bytes uncompressed, more than it can be ({limit:,})")
        infos[key] = info
    missing = [key for key in _MEMBERS if key not in infos and key not in _OPTIONAL]
    if missing:
        raise fail(f"incomplete snapshot: no {missing[0]!r} array")
    total = sum(info.file_size for info in infos.values())
    if total > _MAX_SNAPSHOT_BYTES:
        raise fail(f"the members add up to {total:,} bytes uncompressed, more than a snapshot can be")
    return infos


# ---- one member ---------------------------------------------------------------------------


class _Member:
    """One ``.npy`` member, read in two steps: its header (bounded) when
    made, then its data, once every member's header agreed with the
    schema."""

    def __init__(
        self, key: str, info: zipfile.ZipInfo, archive: zipfile.ZipFile, opened: contextlib.ExitStack, fail: _Fail
    ):
        self.key, self._fail = key, fail
        self._file = opened.enter_context(self._zip(archive.open, info))
        self.dtype, self.shape, self._fortran, header_bytes = self._read_header()
        # The directory's size of the member bounds what it can hold: the
        # shape its header declares must fill exactly the rest.
        self.nbytes = math.prod(self.shape) * self.dtype.itemsize
        held = info.file_size - header_bytes
        if self.nbytes != held:
            declared = f"shape {self.shape} of {self.dtype.itemsize}-byte items ({self.nbytes:,} bytes)"
            if held < self.nbytes:
                raise self.fail(f"is truncated: its header declares {declared}, it holds {held:,} bytes")
            raise self.fail(f"declares {declared} but holds {held:,} bytes of data")

    def fail(self, why: str) -> ValueError:
        return self._fail(f"the {self.key!r} member {why}")

    def _zip(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)``, a call into zipfile for this member, with
        damage reported as such."""
        try:
            return function(*args)
        except _DAMAGE as exc:
            raise self.fail(f"cannot be read ({_one_line(exc)})") from None

    def _read(self, n: int, what: str) -> bytes:
        data = self._zip(self._file.read, n)
        if len(data) != n:
            raise self.fail(f"is truncated (in {what})")
        return data

    def _read_header(self) -> tuple[np.dtype, tuple[int, ...], bool, int]:
        """(dtype, shape, fortran order, bytes read) from the .npy header,
        parsed here rather than by numpy so that its length, nesting and
        values are all bounded before use."""
        prefix = self._zip(self._file.read, 8)
        if len(prefix) != 8 or prefix[:6] != b"\x93NUMPY":
            raise self.fail("is not a numpy array")
        version = (prefix[6], prefix[7])
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise self.fail(f"has .npy format version {version[0]}.{version[1]}, which numpy does not write")
        length_format = "<H" if version == (1, 0) else "<I"
        length_size = struct.calcsize(length_format)
        (length,) = struct.unpack(length_format, self._read(length_size, "its .npy header"))
        if length > _MAX_NPY_HEADER_BYTES:
            raise self.fail(f"has a {length:,}-byte .npy header (at most {_MAX_NPY_HEADER_BYTES:,})")
        raw = self._read(length, "its .npy header")
        try:
            fields = _npy_literal(raw.decode("utf-8" if version == (3, 0) else "latin-1"))
        except ValueError as exc:  # UnicodeDecodeError included
            raise self.fail(f"has a malformed .npy header ({_one_line(exc)})") from None
        if not isinstance(fields, dict) or set(fields) != {"descr", "fortran_order", "shape"}:
            raise self.fail("has a malformed .npy header (not numpy's descr, fortran_order and shape)")
        shape, fortran = fields["shape"], fields["fortran_order"]
        if not isinstance(shape, tuple) or not all(_is_int(n) and n >= 0 for n in shape):
            raise self.fail(f"has a malformed .npy header (shape {_short(shape)})")
        if not isinstance(fortran, bool):
            raise self.fail(f"has a malformed .npy header (fortran_order {_short(fortran)})")
        expected, ndim = _MEMBERS[self.key]
        descr = fields["descr"]
        if expected is _STR:
            if not (isinstance(descr, str) and _STR_DESCR.fullmatch(descr)):
                raise self.fail(f"has dtype {_short(descr)}, expected a str array")
            # Older numpy takes widths up to 2**31; fasthost never writes a
            # name of more than a few thousand characters.
            if int(descr[2:]) > _MAX_STR_WIDTH:
                raise self.fail(f"has dtype {_short(descr)}, wider than fasthost writes")
            try:
                dtype = np.dtype(descr)
            except TypeError:  # wider than numpy allows (2**29 - 1 characters)
                raise self.fail(f"has dtype {_short(descr)}, wider than numpy reads") from None
        elif self.key == "threads" and any(descr == older for older, _ in _OLDER_THREADS):
            dtype = next(older_dtype for older, older_dtype in _OLDER_THREADS if descr == older)
        elif descr != _DESCRS[self.key]:
            wanted = "the fields fasthost writes" if expected.names else str(expected)
            raise self.fail(f"has dtype {_short(descr)}, expected {wanted}")
        else:
            dtype = expected
        if len(shape) != ndim:
            raise self.fail(f"has shape {shape}, expected {ndim} dimension(s)")
        return dtype, shape, fortran, len(prefix) + length_size + length

    def read(self) -> np.ndarray:
        """The member's array, inflated chunk by chunk into its final
        buffer: the peak is its size (checked against the directory's)
        plus one chunk."""
        buffer = np.empty(self.nbytes, dtype=np.uint8)
        view = memoryview(buffer)  # type: ignore[arg-type]  # numpy's stubs give ndarray __buffer__ on 3.12+ only
        done = 0
        while done < self.nbytes:
            got = self._zip(self._file.readinto, view[done : done + _CHUNK_BYTES])
            if not got:
                raise self.fail("is truncated")
            done += got
        if self._zip(self._file.read, 1):  # at the end, this also checks the CRC
            raise self.fail("holds more than its header declares")
        flat = buffer.view(self.dtype)
        return flat.reshape(self.shape[::-1]).T if self._fortran else flat.reshape(self.shape)


_NPY_TOKEN = re.compile(r"""\s+|'[^'\\\n]*'|"[^"\\\n]*"|[0-9]{1,20}(?![0-9])|True|False|[{}()\[\]:,]""")


def _npy_literal(text: str) -> Any:
    """The value of a .npy header (a dict of str, bool, int and tuples).

    ``ast.literal_eval`` recurses once per nesting level and per unary
    operator, so the header is first checked to hold only the tokens numpy
    writes (strings, integers, True/False, brackets, ``:`` and ``,``),
    nested at most ``_MAX_NPY_NESTING`` deep. Raises ``ValueError``."""
    depth = position = 0
    while position < len(text):
        token = _NPY_TOKEN.match(text, position)
        if token is None:
            raise ValueError(f"unexpected {text[position : position + 10]!r} at offset {position}")
        if token.group() in ("{", "(", "["):
            depth += 1
            if depth > _MAX_NPY_NESTING:
                raise ValueError(f"nested more than {_MAX_NPY_NESTING} deep")
        elif token.group() in ("}", ")", "]"):
            depth -= 1
        position = token.end()
    try:
        return ast.literal_eval(text)
    except (SyntaxError, ValueError, TypeError) as exc:  # TypeError: an unhashable dict key
        raise ValueError(f"{type(exc).__name__}: {exc}") from None


# ---- the JSON header ---------------------------------------------------------------------

_JSON_NESTING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def _parse_header(array: np.ndarray, fail: _Fail) -> dict[str, Any]:
    """The checked ``meta`` of the JSON header (format, version, meta)."""
    if not _is_text(array):
        raise fail("not a fasthost snapshot (the header is not text)")
    text = str(array[()])
    depth = deepest = 0
    for token in _JSON_NESTING.finditer(text):  # json.loads recurses per level: bound it first
        if token.group() in ("[", "{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token.group() in ("]", "}"):
            depth -= 1
    if deepest > _MAX_JSON_NESTING:
        raise fail(f"not a fasthost snapshot (the header nests more than {_MAX_JSON_NESTING} deep)")
    try:
        header = json.loads(text)
    except ValueError:
        raise fail("not a fasthost snapshot (unreadable header)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise fail("not a fasthost snapshot (the header names another format)")
    version: Any = header.get("version")
    if not _is_int(version) or version < 1:
        raise fail(f"bad format version {_short(version)}")
    if version > FORMAT_VERSION:
        raise fail(f"written by a newer fasthost (format {version}; this one reads up to {FORMAT_VERSION}): upgrade")
    unknown = sorted(set(header) - {"format", "version", "meta"})
    if unknown:
        raise fail(f"bad header: unknown field {_short(unknown[0])}")
    meta: Any = header.get("meta")
    _check_meta(meta, fail)
    return meta


def _check_meta(meta: Any, fail: _Fail) -> None:
    """Every value of ``meta`` has the type and range fasthost writes, so
    that ``report()``, ``to_dict()``, ``diff`` and ``merge`` can use it."""
    if not isinstance(meta, dict):
        raise fail(f"bad header: meta is {_short(meta)}, not an object")
    unknown = sorted(set(meta) - _META_KEYS)
    if unknown:
        raise fail(f"bad header: unknown meta key {_short(unknown[0])}")
    if "precision" not in meta:
        raise fail("bad header: no valid precision")
    precision = meta["precision"]
    for key in ["precision", *sorted(set(meta) - {"precision"})]:
        value = meta[key]
        if key == "config":
            why = _config_problem(value, precision)
        elif key == "session":
            why = _session_problem(value)
        elif key == "sources":
            why = _list_problem(value, _source_problem)
        elif key == "children_without_data":
            why = _list_problem(value, lambda pid: _int_problem(pid, *_SESSION_INTS["pid"]))
        elif key in _META_BOOLS:
            why = None if isinstance(value, bool) else f"must be true or false, got {_short(value)}"
        else:
            why = _int_problem(value, *_META_INTS[key])
        if why:
            raise fail(f"bad header: meta {key!r} {why}")


def _config_problem(config: Any, precision: int) -> str | None:
    if config is None:  # a merge of sessions recorded with different configurations
        return None
    keys = {"clock", *_CONFIG_INTS}
    if not isinstance(config, dict) or set(config) != keys:
        return f"must be null or an object of {', '.join(sorted(keys))}, got {_short(config)}"
    if config["clock"] not in _CLOCKS:
        return f"has clock {_short(config['clock'])}, not one of {', '.join(_CLOCKS)}"
    for name, (low, high) in _CONFIG_INTS.items():
        why = _int_problem(config[name], low, high)
        if why:
            return f"{name} {why}"
    if config["precision"] != precision:
        return f"has precision {config['precision']}, not the snapshot's {precision}"
    return None


def _session_problem(session: Any) -> str | None:
    if session is None:  # a merged snapshot has no one session
        return None
    return _identity_problem(session, _SESSION_INTS, optional_id=True)


def _source_problem(source: Any) -> str | None:
    return _identity_problem(source, _SOURCE_INTS, optional_id=False)


def _identity_problem(value: Any, ints: dict[str, tuple[int, int]], optional_id: bool) -> str | None:
    """Problems of a session's identity: ``ints`` and an ``id`` (optional
    in format 1 files, which had none)."""
    keys = set(ints) | {"id"}
    if not isinstance(value, dict) or not (set(value) == keys or (optional_id and set(value) == set(ints))):
        return f"must be an object of {', '.join(sorted(keys))}, got {_short(value)}"
    for name, (low, high) in ints.items():
        why = _int_problem(value[name], low, high)
        if why:
            return f"{name} {why}"
    if "id" in value and not (isinstance(value["id"], str) and _SESSION_ID.fullmatch(value["id"])):
        return f"id must be 16 hex digits, got {_short(value['id'])}"
    return None


def _list_problem(value: Any, item_problem: Callable[[Any], str | None]) -> str | None:
    if not isinstance(value, list):
        return f"must be a list, got {_short(value)}"
    for item in value:
        why = item_problem(item)
        if why:
            return f"item {why}"
    return None


def _int_problem(value: Any, low: int, high: int) -> str | None:
    if _is_int(value) and low <= value <= high:
        return None
    return f"must be an integer from {low:,} to {high:,}, got {_short(value)}"


# ---- the arrays together ---------------------------------------------------------------------


def _check_shapes(members: dict[str, _Member], precision: int, fail: _Fail) -> None:
    """The shapes the members declare agree with each other: checked on
    their headers, before any data is inflated."""
    threads = members["threads"].shape[0]
    results = (threads, len(CALL_ORDER), len(RESULT_ORDER))
    _require(members["results"].shape == results, fail, "threads and results disagree")
    rows = members["hist_rows"].shape[0]
    _require(members["hist_counts"].shape == (rows, 1 << precision), fail, "histogram rows do not match the precision")
    names = members["symbol_names"].shape if "symbol_names" in members else (0,)
    _require(names == members["symbol_addresses"].shape, fail, "bad symbol table")
    _require(("callsites" in members) == ("callsite_counts" in members), fail, "call sites without their counts")
    if "callsites" in members:
        sites = members["callsites"].shape[0]
        _require(members["callsite_counts"].shape == (sites, SITE_BUCKETS), fail, "call site histograms do not match")


def _check_contents(arrays: dict[str, np.ndarray], precision: int, fail: _Fail) -> None:
    """Every index points where it should, and every histogram row is one
    the core can write: what the snapshot's views index with."""
    threads, pairs, rows = arrays["threads"], arrays["thread_targets"], arrays["hist_rows"]
    _require(_is_text(threads["name"]), fail, "a thread name is not text")
    if "callsites" in arrays:
        sites = arrays["callsites"]
        _require(_is_text(sites["file"]) and _is_text(sites["function"]), fail, "a call site's name is not text")
    _require(_is_text(arrays.get("symbol_names", np.zeros(0, dtype=str))), fail, "a symbol name is not text")
    _require(_indexes_ok(pairs["thread"], len(threads)), fail, "a target row names no thread")
    _require(_indexes_ok(rows["thread"], len(threads)), fail, "a histogram row names no thread")
    targets = rows["target"]
    _require(bool(((targets >= -1) & (targets < len(pairs))).all()), fail, "a histogram row names no target")
    _require(bool(np.isin(rows["kind"], list(HIST_KINDS.values())).all()), fail, "unknown histogram kind")
    in_range = (rows["row"] >= 0) & (rows["row"] < bucket_rows(precision))
    _require(bool(in_range.all()), fail, "histogram row out of range")
    callbacks = rows["kind"] == CALLBACK
    _require(bool(((targets == -1) == callbacks).all()), fail, "a histogram row's kind and target disagree")
    of_pairs = ~callbacks
    _require(
        bool((pairs["thread"][targets[of_pairs]] == rows["thread"][of_pairs]).all()),
        fail,
        "a histogram row's thread is not its target's",
    )


def _indexes_ok(index: np.ndarray, size: int) -> bool:
    return bool(((index >= 0) & (index < size)).all())


def _require(ok: bool, fail: _Fail, why: str) -> None:
    if not ok:
        raise fail(f"corrupt snapshot: {why}")


# ---- small helpers ---------------------------------------------------------------------------


def _is_text(array: np.ndarray) -> bool:
    """Whether a str array holds only Unicode code points. numpy stores
    str as UCS-4 without checking it, and makes a value past U+10FFFF into
    a corrupt Python str, on which later operations raise SystemError."""
    return bool((np.ascontiguousarray(array).reshape(-1).view(np.uint32) <= 0x10FFFF).all())


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any) -> str:
    """``repr(value)``, cut to fit in a one-line message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
