/*
 * features.c: the one probe of the CPU (features.h). cpuid says what the processor implements;
 * xgetbv says whether the OS saves the AVX and AVX-512 register state (without it those
 * instructions fault, so they do not count); AMX needs the OS's permission for the tile state,
 * asked once with arch_prctl. The probe runs once per process under call_once; the limit is an
 * atomic, so any thread may read both at any time. Plain cpuid, not __builtin_cpu_supports:
 * clang 14 does not know every feature name that gcc 12 does.
 */
#include "cpu/features.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

static once_flag g_once = ONCE_FLAG_INIT;
static unsigned g_detected;           /* written once, inside call_once */
static atomic_uint g_limit = CPU_ALL; /* features that count; EXSA_GEMM may lower it at start */

#if defined(__x86_64__) && defined(__GNUC__)

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
#define XCR0_YMM 0x06u /* SSE and AVX state */
#define XCR0_ZMM 0xe6u /* the same plus opmask, ZMM0-15 upper halves, ZMM16-31 */

static uint64_t xcr0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}

/* bit of word w as a flag */
#define BIT(w, b) (((w) >> (b)) & 1u)

/* The CPU_* bits that cpuid and the OS state allow. */
static unsigned probe(void)
{
    unsigned a, b, c, d, f = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !BIT(c, 27)) /* OSXSAVE: xgetbv is there */
        return 0;
    const uint64_t x = xcr0();
    const bool ymm = (x & XCR0_YMM) == XCR0_YMM, zmm = (x & XCR0_ZMM) == XCR0_ZMM;
    if (ymm && BIT(c, 12))
        f |= CPU_FMA;
    if (ymm && BIT(c, 29))
        f |= CPU_F16C;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return f;
    const unsigned max_sub = a, b7 = b, c7 = c, d7 = d;
    f |= ymm && BIT(b7, 5) ? CPU_AVX2 : 0;
    f |= BIT(b7, 3) && BIT(b7, 8) ? CPU_BMI : 0;
    if (zmm) {
        f |= (BIT(b7, 16) ? CPU_AVX512F : 0) | (BIT(b7, 17) ? CPU_AVX512DQ : 0) |
             (BIT(b7, 30) ? CPU_AVX512BW : 0) | (BIT(b7, 31) ? CPU_AVX512VL : 0) |
             (BIT(c7, 1) ? CPU_AVX512VBMI : 0) | (BIT(c7, 11) ? CPU_AVX512VNNI : 0);
        if (max_sub >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d) && BIT(a, 5))
            f |= CPU_AVX512BF16;
    }
    /* EDX bit 22 AMX-BF16, bit 24 AMX-TILE; the OS hands out the tile state on request */
    if (BIT(d7, 22) && BIT(d7, 24) &&
        syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0)
        f |= CPU_AMX_BF16;
    return f;
}

#else

static unsigned probe(void)
{
    return 0;
}

#endif

/* EXSA_GEMM=off: no prefill GEMM (nothing else uses BF16); avx512: no AMX tiles. */
static unsigned env_limit(void)
{
    const char *e = getenv("EXSA_GEMM");
    if (e && !strcmp(e, "off"))
        return CPU_ALL & ~(CPU_AVX512BF16 | CPU_AMX_BF16);
    if (e && !strcmp(e, "avx512"))
        return CPU_ALL & ~CPU_AMX_BF16;
    return CPU_ALL;
}

static void init(void)
{
    g_detected = probe();
    atomic_fetch_and(&g_limit, env_limit());
}

unsigned cpu_detected(void)
{
    call_once(&g_once, init);
    return g_detected;
}

unsigned cpu_features(void)
{
    return cpu_detected() & atomic_load_explicit(&g_limit, memory_order_relaxed);
}

bool cpu_has(unsigned need)
{
    return (cpu_features() & need) == need;
}

void cpu_limit(unsigned mask)
{
    call_once(&g_once, init); /* so that init's EXSA_GEMM limit cannot come after this one */
    atomic_store_explicit(&g_limit, mask, memory_order_relaxed);
}
