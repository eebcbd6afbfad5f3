"""Names for target addresses: ``libm.so.6!cos``.

In order: a label given to :func:`register_target`; the symbol ``dladdr``
finds; the object's exported symbol at that address (read from its ELF
``.dynsym``, which also names IFUNC-resolved functions such as libm's
``cos``, whose resolved address dladdr cannot name); ``object!+0xoffset``;
the bare hex address.
"""

from __future__ import annotations

import ctypes
import os
import struct
import threading
from functools import lru_cache

from fasthost import _core

__all__ = ["register_target", "registered_targets", "resolve", "unregister_target"]

_labels: dict[int, str] = {}
_lock = threading.Lock()


def _check_address(address: object) -> int:
    if not isinstance(address, int) or isinstance(address, bool):
        raise TypeError(f"a target address must be an int, not {type(address).__name__}")
    if not 0 <= address < 2**64:
        raise OverflowError(f"a target address must be between 0 and 2**64 - 1, got {address}")
    return address


def register_target(address: int, name: str) -> None:
    """Names `address` in snapshots, reports and plots (beats dladdr).

    Raises ``TypeError``/``OverflowError`` for a bad address and
    ``ValueError`` for an empty name."""
    _check_address(address)
    if not isinstance(name, str) or not name:
        raise ValueError("a target's name must be a non-empty str")
    with _lock:
        _labels[address] = name


def unregister_target(address: int) -> None:
    """Forgets the label of `address` (no error if it had none)."""
    with _lock:
        _labels.pop(_check_address(address), None)


def registered_targets() -> dict[int, str]:
    """A copy of the labels given with :func:`register_target`."""
    with _lock:
        return dict(_labels)


def resolve(address: int) -> str:
    """The best name for `address` (see the module docstring)."""
    label = _labels.get(address)
    if label is not None:
        return label
    found = _core.symbol_of(address)
    if found is None:
        return f"0x{address:x}"
    path, name, symbol_address = found
    library = os.path.basename(path)
    # dladdr picks any one of a function's aliases (libm's cos is also
    # cosf64); the exported names at that address offer the plain one.
    exported = _exported_functions(path).get(address)
    if exported is not None:
        return f"{library}!{exported}"
    if name is not None:
        offset = address - symbol_address
        return f"{library}!{name}" if offset == 0 else f"{library}!{name}+0x{offset:x}"
    return f"{library}!0x{address:x}"


@lru_cache(maxsize=64)
def _exported_functions(path: str) -> dict[int, str]:
    """Run-time address -> name of the functions `path` exports, resolved
    with dlsym (so IFUNCs map to the implementation they picked). Of several
    names for one address the shortest wins (``cos`` over ``cosf64``), then
    the one without leading underscores."""
    try:
        names = _dynsym_function_names(path)
        library = ctypes.CDLL(path)  # already loaded: dlopen returns the same handle
    except (OSError, ValueError, struct.error):
        return {}
    table: dict[int, str] = {}
    for name in sorted(names, key=lambda n: (len(n), n.startswith("_"), n), reverse=True):
        try:
            pointer = getattr(library, name)
        except AttributeError:
            continue
        address = ctypes.cast(pointer, ctypes.c_void_p).value
        if address is not None:
            table[address] = name  # the best name comes last
    return table


_STT_FUNC, _STT_GNU_IFUNC, _SHT_DYNSYM = 2, 10, 11


def _dynsym_function_names(path: str) -> list[str]:
    """Names of the defined functions in an ELF64 little-endian object's
    .dynsym. Raises ValueError for anything else."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not a little-endian ELF64 object")
    (section_offset,) = struct.unpack_from("<Q", data, 0x28)
    entry_size, count = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, section_offset + i * entry_size) for i in range(count)]
    names: list[str] = []
    for _, kind, _, _, offset, size, link, _, _, sym_size in sections:
        if kind != _SHT_DYNSYM or not sym_size:
            continue
        strings_offset = sections[link][4]
        for at in range(offset, offset + size, sym_size):
            name_offset, info, _, shndx, value, _ = struct.unpack_from("<IBBHQQ", data, at)
            if shndx == 0 or value == 0 or (info & 0xF) not in (_STT_FUNC, _STT_GNU_IFUNC):
                continue
            end = data.index(b"\0", strings_offset + name_offset)
            names.append(data[strings_offset + name_offset : end].decode("ascii", "replace"))
    return names
