"""The captures: what turns calls across the Python/native boundary into
transitions of the core, without the user bracketing them by hand.

- ``ctypes``, ``cffi``: adapters that bracket foreign function calls (and
  their callbacks) of the libraries they instrument; users import them as
  ``fasthost.ctypes`` and ``fasthost.cffi``.
- ``builtins``: ``capture_builtins()``, the interpreter's C calls through a
  C profile hook (3.9-3.11) or ``sys.monitoring`` (3.12+), callbacks
  included.
- ``native``: ``capture_native()``, every call to something that is not a
  Python function (3.12+), or the best each older Python allows.
- ``modes``: the captures by name, for the command line and the pytest
  plugin.

Their C halves are ``fh_capture.h`` and ``fh_monitor.h`` here, compiled
into ``fasthost._core`` through ``_capture.pxi`` and ``_monitor.pxi``.
"""
