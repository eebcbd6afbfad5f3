"""An FFI-heavy workload, with nothing of fasthost in it: libc qsort sorts
strings with a Python comparator that itself calls libc strcmp, so the
transitions nest U (qsort) -> M (comparator) -> U (strcmp).

Profile it with fasthost, which instruments the ctypes calls and the
callback without touching this file:

    python -m fasthost run examples/qsort_callbacks.py [WORDS [ROUNDS]]

(2000 words, 5 rounds by default.)
"""

import ctypes
import ctypes.util
import random
import sys

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.strcmp.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.strcmp.restype = ctypes.c_int

COMPARATOR = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_char_p))


@COMPARATOR
def compare(a, b):
    return libc.strcmp(a[0], b[0])


def sort_words(words):
    array = (ctypes.c_char_p * len(words))(*words)
    libc.qsort(array, len(array), ctypes.sizeof(ctypes.c_char_p), compare)
    return list(array)


def main(n=2000, rounds=5):
    rng = random.Random(42)
    words = [bytes(rng.choices(b"abcdefghij", k=8)) for _ in range(n)]
    for _ in range(rounds):
        result = sort_words(words)
    assert result == sorted(words)
    print(f"sorted {n} words {rounds} times")


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:3]))
