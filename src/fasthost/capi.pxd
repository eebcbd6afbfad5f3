# Cython declarations of the C API (include/fasthost.h), for extensions that
# report their own transitions:
#
#     from fasthost.capi cimport fasthost_import, FH_LeaveRuntime, FH_EnterRuntime
#
# Build with include_dirs=[fasthost.get_include()] and call fasthost_import()
# once (with the GIL) before the first FH_* call.
from libc.stdint cimport int32_t

cdef extern from "fasthost.h":
    int32_t FH_S_OK
    int32_t FH_HOST_E_CLRNOTAVAILABLE
    int32_t FH_HOST_E_TIMEOUT
    int32_t FH_HOST_E_NOT_OWNER
    int32_t FH_HOST_E_ABANDONED
    int32_t FH_E_FAIL
    int32_t FH_E_OUTOFMEMORY

    int fasthost_import() except -1
    int32_t FH_LeaveRuntime(size_t target) noexcept nogil
    int32_t FH_EnterRuntime() noexcept nogil
    int32_t FH_ReverseLeaveRuntime() noexcept nogil
    int32_t FH_ReverseEnterRuntime() noexcept nogil
