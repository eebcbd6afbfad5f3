"""``fasthost.cffi``: the cffi adapter, whose home is :mod:`fasthost.capture.cffi`.

This name is the one users import; it is that very module (not a copy), so
its functions and state are one.
"""

import sys

from fasthost.capture import cffi as _adapter
from fasthost.capture.cffi import *  # noqa: F403 (what type checkers see)

sys.modules[__name__] = _adapter
