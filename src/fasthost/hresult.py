"""HRESULT values returned by the transition functions (docs/protocol.md §2)."""

from __future__ import annotations

import enum

__all__ = ["HResult"]


class HResult(enum.IntEnum):
    """The HRESULTs of the CLR's host transition protocol.

    Members compare equal to the unsigned 32-bit values; the C API returns
    the same bits as signed ``int32_t``. Use :meth:`from_int32` to convert a
    C-level return value.
    """

    S_OK = 0x00000000
    HOST_E_CLRNOTAVAILABLE = 0x80131023
    HOST_E_TIMEOUT = 0x80131024
    HOST_E_NOT_OWNER = 0x80131025
    HOST_E_ABANDONED = 0x80131026
    E_FAIL = 0x80004005
    E_OUTOFMEMORY = 0x8007000E

    @classmethod
    def from_int32(cls, value: int) -> HResult:
        """The member for a signed 32-bit HRESULT as the C API returns it.

        Raises ``ValueError`` for a value that is not one of the members.
        """
        return cls(value & 0xFFFFFFFF)

    @property
    def failed(self) -> bool:
        """True for error HRESULTs (the severity bit is set)."""
        return bool(self.value & 0x80000000)


# The core reports results as small indexes; this is their order
# (core/fh_protocol.h, enum fh_result).
RESULT_ORDER = (
    HResult.S_OK,
    HResult.HOST_E_CLRNOTAVAILABLE,
    HResult.HOST_E_TIMEOUT,
    HResult.HOST_E_NOT_OWNER,
    HResult.HOST_E_ABANDONED,
    HResult.E_FAIL,
    HResult.E_OUTOFMEMORY,
)

# Calls, in the order of the CLR's IDL (enum fh_call).
CALL_ORDER = ("leave", "enter", "reverse_leave", "reverse_enter")
