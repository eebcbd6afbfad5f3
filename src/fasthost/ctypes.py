"""``fasthost.ctypes``: the ctypes adapter, whose home is :mod:`fasthost.capture.ctypes`.

This name is the one users import; it is that very module (not a copy), so
its functions and state are one.
"""

import sys

from fasthost.capture import ctypes as _adapter
from fasthost.capture.ctypes import *  # noqa: F403 (what type checkers see)

sys.modules[__name__] = _adapter
