/* fasthost.h -- the C API of fasthost, for native code in other extensions.
 *
 *     #include <fasthost.h>      // include dir: fasthost.get_include()
 *     if (fasthost_import() < 0) return NULL;     // once, with the GIL
 *     FH_LeaveRuntime((size_t)&some_c_function);  // any thread, no GIL
 *     some_c_function();
 *     FH_EnterRuntime();
 *
 * The functions live in fasthost._core and are reached through a table
 * published as the capsule "fasthost._core._C_API" (as numpy publishes
 * _ARRAY_API). They return HRESULTs, never block, never allocate after a
 * thread's first call (and its first call to each new target), and leave
 * errno as they found it.
 */
#ifndef FASTHOST_H
#define FASTHOST_H

#include <Python.h>
#include <stddef.h>
#include <stdint.h>

#define FASTHOST_CAPSULE_NAME "fasthost._core._C_API"
#define FASTHOST_ABI_VERSION 1u

#define FH_S_OK ((int32_t)0x00000000)
#define FH_HOST_E_CLRNOTAVAILABLE ((int32_t)0x80131023u)
#define FH_HOST_E_TIMEOUT ((int32_t)0x80131024u)
#define FH_HOST_E_NOT_OWNER ((int32_t)0x80131025u)
#define FH_HOST_E_ABANDONED ((int32_t)0x80131026u)
#define FH_E_FAIL ((int32_t)0x80004005u)
#define FH_E_OUTOFMEMORY ((int32_t)0x8007000Eu)

/* In the order of the CLR's IHostTaskManager IDL. */
typedef struct fasthost_api {
    uint32_t abi_version;
    uint32_t size; /* sizeof(fasthost_api) of the publisher */
    int32_t (*LeaveRuntime)(size_t target);
    int32_t (*EnterRuntime)(void);
    int32_t (*ReverseLeaveRuntime)(void);
    int32_t (*ReverseEnterRuntime)(void);
} fasthost_api;

#ifndef FASTHOST_NO_IMPORT

static const fasthost_api *fasthost_api_table = NULL;

/* Imports fasthost._core and fetches its table. 0 on success; -1 with a
 * Python exception set otherwise. Call once, holding the GIL. */
static int fasthost_import(void)
{
    const fasthost_api *api = (const fasthost_api *)PyCapsule_Import(FASTHOST_CAPSULE_NAME, 0);
    if (api == NULL)
        return -1;
    if (api->abi_version != FASTHOST_ABI_VERSION || api->size < sizeof(fasthost_api)) {
        PyErr_Format(PyExc_ImportError, "fasthost C API version %u (size %u) is not the %u this module was built for",
                     api->abi_version, api->size, FASTHOST_ABI_VERSION);
        return -1;
    }
    fasthost_api_table = api;
    return 0;
}

static inline int32_t FH_LeaveRuntime(size_t target) { return fasthost_api_table->LeaveRuntime(target); }
static inline int32_t FH_EnterRuntime(void) { return fasthost_api_table->EnterRuntime(); }
static inline int32_t FH_ReverseLeaveRuntime(void) { return fasthost_api_table->ReverseLeaveRuntime(); }
static inline int32_t FH_ReverseEnterRuntime(void) { return fasthost_api_table->ReverseEnterRuntime(); }

#endif /* FASTHOST_NO_IMPORT */
#endif /* FASTHOST_H */
