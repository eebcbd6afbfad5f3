/* fh_platform.h -- compiler and atomics glue shared by the fasthost C core.
 *
 * Every counter in the core has exactly one writer: the thread that owns it.
 * Readers (snapshot, the sanitizer harness) run on other threads. A plain
 * `x++` would be a data race in the C11 sense, so writers use a relaxed load
 * and a relaxed store (not a read-modify-write: nobody else writes), or on
 * x86-64 one `add` to memory (fh_bump), and readers a relaxed load. On
 * x86-64 these are ordinary instructions; the point is that the compiler
 * and ThreadSanitizer know the access is shared.
 */
#ifndef FASTHOST_PLATFORM_H
#define FASTHOST_PLATFORM_H

#include <stdint.h>
#include <stddef.h>
#include <stdlib.h> /* any C library header: under glibc it defines __GLIBC__ */

#if !defined(__GNUC__)
#error "fasthost's core needs GCC or Clang (atomics builtins, __thread)"
#endif

#define FH_LIKELY(x) __builtin_expect(!!(x), 1)
#define FH_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define FH_INLINE static inline __attribute__((always_inline))
#define FH_NOINLINE __attribute__((noinline))
#define FH_COLD __attribute__((cold, noinline))
/* For header functions that not every includer calls. */
#define FH_UNUSED __attribute__((unused))

/* initial-exec: the TLS slot is reached with one %fs-relative load instead of
 * a __tls_get_addr call. The core is a dlopen()ed extension module, and an
 * initial-exec variable in one is only safe because glibc reserves a static
 * TLS surplus for such modules (the core keeps a single pointer there, well
 * inside it). Other C libraries (musl, the BSDs', macOS's) make no such
 * promise, so elsewhere the slot is a plain __thread in the default model of
 * a shared object: a call into the TLS runtime more per access, but always
 * loadable. memray guards its initial-exec TLS the same way. */
#if defined(__GLIBC__)
#define FH_TLS __thread __attribute__((tls_model("initial-exec")))
#else
#define FH_TLS __thread
#endif

#define fh_load(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define fh_store(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define fh_load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define fh_store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

/* Single-writer increment: see the comment at the top of this file. GCC
 * never merges atomic accesses, so the relaxed load and store cost three
 * instructions (load, add, store) where one `add` to memory does the same:
 * on x86-64 an aligned 8-byte access is single-copy atomic, so a reader on
 * another thread sees the old count or the new one, never a torn one; and
 * the asm is opaque to the compiler, which can neither split it nor keep
 * the value in a register. ThreadSanitizer cannot see inside asm, so its
 * builds keep the atomic pair. Not volatile: "+m" tells the compiler the
 * count is read and written, which is all it must keep (a volatile asm
 * could not be moved either, and the capture's close would keep more
 * registers: 6 instructions more). The Linux kernel's raw_cpu_add is the
 * same instruction, written the same way. */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FH_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define FH_TSAN 1
#endif

#if defined(__x86_64__) && !defined(FH_TSAN)
#define fh_bump(p, n)                                                                                                  \
    do {                                                                                                               \
        if (sizeof(*(p)) == 8)                                                                                         \
            __asm__("addq %1, %0" : "+m"(*(p)) : "er"((uint64_t)(n)));                                                \
        else                                                                                                           \
            fh_store((p), fh_load(p) + (n));                                                                           \
    } while (0)
#else
#define fh_bump(p, n) fh_store((p), fh_load(p) + (n))
#endif

#endif /* FASTHOST_PLATFORM_H */
