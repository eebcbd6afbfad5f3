"""Names for target addresses: ``libm.so.6!cos``.

In order: a label given to :func:`register_target`; the Python name of the
builtin, C type or ufunc that has that address (``math.cos``, ``sorted``,
``list.append``, ``operator.itemgetter.__call__``, ``numpy.add``), found in
the loaded modules, which works on stripped interpreters too; the object's exported
function at that address (from its ELF ``.dynsym``, resolved with dlsym so
that IFUNCs such as libc's ``strcmp`` are named after the function, and of
several aliases the plainest: ``cos``, not ``cosf64``); the symbol
``dladdr`` finds (with ``+0xoffset`` inside a function); a static
function from the object's ``.symtab`` when it is not stripped (builtins
such as ``math_cos``); ``object!0xaddress``; the bare hex address.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
import threading
import types
from collections.abc import Iterable
from functools import lru_cache

import numpy as np

from fasthost import _core

__all__ = ["register_target", "resolve", "resolve_all", "unregister_target"]

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


def resolve(address: int, python_names: dict[int, str] | None = None) -> str:
    """The best name for `address` (see the module docstring);
    ``python_names`` is a :func:`python_names` result, built if needed."""
    label = _labels.get(address)
    if label is not None:
        return label
    named = (python_names if python_names is not None else _python_names()).get(address)
    if named is not None:
        return named
    found = _core.symbol_of(address)
    if found is None:
        return f"0x{address:x}"
    path, base, name, symbol_address = found
    library = os.path.basename(path)
    exported = _exported_functions(path).get(address)
    if exported is not None:
        return f"{library}!{exported}"
    if name is not None:
        offset = address - symbol_address
        return f"{library}!{name}" if offset == 0 else f"{library}!{name}+0x{offset:x}"
    static = _static_functions(path).get(address - base)
    if static is not None:
        return f"{library}!{static}"
    return f"{library}!0x{address:x}"


def resolve_all(addresses: Iterable[int]) -> dict[int, str]:
    """:func:`resolve` for many addresses, looking at the modules once."""
    names = _python_names()
    return {address: resolve(address, names) for address in addresses}


_python_names_cache: tuple[int, dict[int, str]] = (-1, {})


def _python_names() -> dict[int, str]:
    """:func:`_find_python_names`, again only when modules were loaded since
    (a snapshot is taken often; the modules rarely change)."""
    global _python_names_cache
    loaded, names = _python_names_cache
    if loaded != len(sys.modules):
        names = _find_python_names()
        _python_names_cache = (len(sys.modules), names)
    return names


def _find_python_names() -> dict[int, str]:
    """Target address -> Python name, for every builtin function, C type
    (the type itself, its methods and what calling an instance runs) and
    numpy ufunc reachable from a loaded module. Of several names for one
    address the plainest wins (``os.stat`` over ``posix.stat``)."""
    candidates: dict[int, list[tuple[bool, bool, bool, bool, int, str]]] = {}

    def add(address: int, name: str, own_name: str, abroad: bool = False, elsewhere: bool = False) -> None:
        # An alias (zipfile's _dedupe = dict.fromkeys) loses to the name
        # the object gives itself, a class seen in another module (pickle's
        # partial) to its own module's, a function of a private accelerator
        # module seen elsewhere (enum's reduce) to its public module's
        # (functools.reduce), a private module to a public one.
        if address:
            alias = name.rpartition(".")[2] != own_name
            candidates.setdefault(address, []).append((alias, abroad, elsewhere, name.startswith("_"), len(name), name))

    def elsewhere(value: object, module_name: str) -> bool:
        """Whether ``value`` comes from a private module (``_functools``)
        other than ``module_name`` and its public face (``functools``)."""
        home = getattr(value, "__module__", None)
        return isinstance(home, str) and home.startswith("_") and module_name not in (home, home[1:])

    for module_name, module in list(sys.modules.items()):
        try:
            attributes = list(vars(module).items())
        except TypeError:  # None placeholders, odd objects
            continue
        prefix = "" if module_name == "builtins" else module_name + "."
        for attribute, value in attributes:
            kind = type(value)
            if kind is types.BuiltinFunctionType or kind is np.ufunc:
                add(
                    _core._callable_target(value),
                    prefix + attribute,
                    value.__name__,
                    False,
                    elsewhere(value, module_name),
                )
            elif callable(value) and not isinstance(value, type) and kind not in _PYTHON_CALLABLES:
                # Functions that are objects of a generic type: Cython's (by
                # their C function), numpy's array functions, pybind11's (by
                # the object). Not instances that share their type's call
                # (a partial is no name for every partial).
                target = _core._callable_target(value)
                if target == id(value) or kind.__name__ == "cython_function_or_method":
                    add(target, prefix + attribute, getattr(value, "__name__", attribute))
            elif issubclass(kind, type) and _core._callable_target(value):
                type_name = prefix + attribute
                abroad = getattr(value, "__module__", module_name) != module_name
                add(_core._callable_target(value), type_name, value.__name__, abroad)
                add(_core._type_call_target(value), type_name + ".__call__", "__call__", abroad)
                add(id(value) + 1, type_name + ".__call__", "__call__", abroad)  # generic call, anonymous objects
                for method_name, method in list(vars(value).items()):
                    if type(method) in _METHOD_TYPES:
                        add(_core._callable_target(method), f"{type_name}.{method_name}", method_name, abroad)
    return {address: min(names)[-1] for address, names in candidates.items()}


_PYTHON_CALLABLES = (types.FunctionType, types.MethodType, types.BuiltinFunctionType, np.ufunc)
_METHOD_TYPES = (types.MethodDescriptorType, types.BuiltinMethodType, types.ClassMethodDescriptorType)


def _plainest(names: list[str]) -> list[str]:
    """Names in increasing preference: shortest last, then no leading
    underscore."""
    return sorted(names, key=lambda n: (len(n), n.startswith("_"), n), reverse=True)


@lru_cache(maxsize=64)
def _exported_functions(path: str) -> dict[int, str]:
    """Run-time address -> name of the functions `path` exports, resolved
    with dlsym (so IFUNCs map to the implementation they picked). Of several
    names for one address the shortest wins (``cos`` over ``cosf64``), then
    the one without leading underscores."""
    try:
        names = [name for name, _ in _elf_functions(path, _SHT_DYNSYM)]
        library = ctypes.CDLL(path)  # already loaded: dlopen returns the same handle
    except (OSError, ValueError, struct.error):
        return {}
    table: dict[int, str] = {}
    for name in _plainest(names):
        try:
            pointer = getattr(library, name)
        except AttributeError:
            continue
        address = ctypes.cast(pointer, ctypes.c_void_p).value
        if address is not None:
            table[address] = name  # the best name comes last
    return table


@lru_cache(maxsize=64)
def _static_functions(path: str) -> dict[int, str]:
    """Offset from the load base -> name of the functions in `path`'s
    .symtab (empty when stripped)."""
    try:
        functions = _elf_functions(path, _SHT_SYMTAB)
    except (OSError, ValueError, struct.error):
        return {}
    by_offset: dict[int, list[str]] = {}
    for name, value in functions:
        by_offset.setdefault(value, []).append(name)
    return {offset: _plainest(names)[-1] for offset, names in by_offset.items()}


_STT_FUNC, _STT_GNU_IFUNC, _SHT_SYMTAB, _SHT_DYNSYM, _ET_EXEC = 2, 10, 2, 11, 2


def _elf_functions(path: str, table: int) -> list[tuple[str, int]]:
    """(name, offset from the load base) of the defined functions in one
    symbol table (_SHT_DYNSYM or _SHT_SYMTAB) of an ELF64 little-endian
    object. Raises ValueError for anything else."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not a little-endian ELF64 object")
    (object_type,) = struct.unpack_from("<H", data, 0x10)
    (section_offset,) = struct.unpack_from("<Q", data, 0x28)
    entry_size, count = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, section_offset + i * entry_size) for i in range(count)]
    # Symbol values are offsets in a shared object, but addresses in a fixed
    # executable, whose load base (what dladdr reports) is its first segment.
    load_address = _first_segment(data) if object_type == _ET_EXEC else 0
    functions: list[tuple[str, int]] = []
    for _, kind, _, _, offset, size, link, _, _, sym_size in sections:
        if kind != table or not sym_size:
            continue
        strings_offset = sections[link][4]
        for at in range(offset, offset + size, sym_size):
            name_offset, info, _, shndx, value, _ = struct.unpack_from("<IBBHQQ", data, at)
            if shndx == 0 or value == 0 or (info & 0xF) not in (_STT_FUNC, _STT_GNU_IFUNC):
                continue
            end = data.index(b"\0", strings_offset + name_offset)
            name = data[strings_offset + name_offset : end].decode("ascii", "replace")
            functions.append((name, value - load_address))
    return functions


def _first_segment(data: bytes) -> int:
    """The lowest virtual address of an ELF64 object's loadable segments."""
    (header_offset,) = struct.unpack_from("<Q", data, 0x20)
    entry_size, count = struct.unpack_from("<HH", data, 0x36)
    addresses = []
    for i in range(count):
        kind, _, _, virtual_address = struct.unpack_from("<IIQQ", data, header_offset + i * entry_size)
        if kind == _PT_LOAD:
            addresses.append(virtual_address)
    return min(addresses, default=0)


_PT_LOAD = 1
