"""An FFI-heavy workload: libc qsort sorting strings with a Python
comparator that itself calls libc strcmp, so transitions nest
U (qsort) -> M (comparator) -> U (strcmp).

Run it under fasthost's profiler, or on its own (it then brackets its
foreign calls by hand and prints what fasthost recorded).
"""

import ctypes
import ctypes.util
import random
import sys

import fasthost

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.strcmp.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.strcmp.restype = ctypes.c_int

COMPARATOR = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_char_p))
QSORT = ctypes.cast(libc.qsort, ctypes.c_void_p).value
STRCMP = ctypes.cast(libc.strcmp, ctypes.c_void_p).value


def compare(a, b):
    # Two statements on purpose: they are the two levels of nesting.
    with fasthost.callback():  # noqa: SIM117 -- native qsort calls back into Python
        with fasthost.unmanaged(STRCMP):  # ... which calls native strcmp
            return libc.strcmp(a[0], b[0])


def sort_words(words):
    array = (ctypes.c_char_p * len(words))(*words)
    with fasthost.unmanaged(QSORT):
        libc.qsort(array, len(array), ctypes.sizeof(ctypes.c_char_p), COMPARATOR(compare))
    return list(array)


def main(n=2000, rounds=5):
    rng = random.Random(42)
    words = [bytes(rng.choices(b"abcdefghij", k=8)) for _ in range(n)]
    for _ in range(rounds):
        result = sort_words(words)
    assert result == sorted(words)
    return result


if __name__ == "__main__":
    own_session = not fasthost.running()
    if own_session:
        fasthost.start()
    main()
    if own_session:
        fasthost.stop()
        snap = fasthost.snapshot()
        totals = snap.totals
        print(f"{totals['transitions']} transitions, {totals['errors']} errors")
        for row in snap.thread_targets:
            name = "qsort" if row["target"] == QSORT else "strcmp" if row["target"] == STRCMP else hex(row["target"])
            mean = row["total_ns"] / row["calls"]
            share = row["exclusive_ns"] / row["total_ns"]
            print(f"  {name:8} calls={row['calls']:>7}  mean={mean:>10.0f} ns  exclusive share={share:6.1%}")
        callbacks = snap.threads["callback_calls"].sum()
        print(f"  callbacks={callbacks}  callback total={totals['callback_ns'] / 1e6:.1f} ms")
        sys.exit(0)
