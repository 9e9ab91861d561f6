/*
 * features.h: what this x86-64 CPU and its OS let the kernels of src/cpu use, and the levels
 * (feature sets) the kernel families are compiled for. The CPU is probed once per process
 * (cpuid and xgetbv, under call_once, in features.c); every file of src/cpu asks cpu_has here
 * and nowhere else. A limit narrows what counts as present: tests and benchmarks compare the
 * kernels with it, and the environment variable EXSA_GEMM (off, avx512 or amx) sets its start.
 *
 * Each level comes with the target attribute its kernels are compiled with (TGT_*): a function
 * with TGT_X may run only after cpu_has(CPU_LEVEL_X) said yes.
 */
#ifndef EXSA_CPU_FEATURES_H
#define EXSA_CPU_FEATURES_H

#include <stdbool.h>

enum cpu_feature {
    CPU_AVX2 = 1u << 0,
    CPU_FMA = 1u << 1,
    CPU_F16C = 1u << 2,
    CPU_BMI = 1u << 3, /* BMI1 and BMI2 */
    CPU_AVX512F = 1u << 4,
    CPU_AVX512BW = 1u << 5,
    CPU_AVX512VL = 1u << 6,
    CPU_AVX512DQ = 1u << 7,
    CPU_AVX512VNNI = 1u << 8,
    CPU_AVX512VBMI = 1u << 9,
    CPU_AVX512BF16 = 1u << 10,
    CPU_AMX_BF16 = 1u << 11, /* AMX-TILE and AMX-BF16, and the OS granted the tile state */
};
#define CPU_ALL (~0u)

/* AVX-512 F alone: element-wise ops and attention (ops-fast.c, attn-avx512.c, vmath.h). */
#define CPU_LEVEL_AVX512F CPU_AVX512F
#define TGT_AVX512F __attribute__((target("avx512f")))
/* AVX2 with FMA and F16C: the 256-bit weight unpackers of simd.h, inlined into the levels below. */
#define CPU_LEVEL_AVX2 (CPU_AVX2 | CPU_FMA | CPU_F16C)
#define TGT_AVX2 __attribute__((target("avx2,fma,f16c")))
/* AVX-512 VNNI (Cascade Lake, Ice Lake, Zen 4 and later): the tiled kernels (matmul-avx512.c). */
#define CPU_LEVEL_VNNI (CPU_LEVEL_AVX2 | CPU_AVX512F | CPU_AVX512BW | CPU_AVX512VL | CPU_AVX512VNNI)
#define TGT_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
/* VNNI with VBMI, DQ and BMI (Ice Lake, Zen 4 and later): the decode kernels (gemv-avx512.c). */
#define CPU_LEVEL_VBMI (CPU_LEVEL_VNNI | CPU_AVX512DQ | CPU_AVX512VBMI | CPU_BMI)
#define TGT_VBMI                                                                                   \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,avx2,fma,"     \
                          "f16c,bmi,bmi2")))
/* AVX-512 BF16 with DQ (Cooper Lake, Zen 4, Sapphire Rapids): the prefill GEMM (gemm-kern.c). */
#define CPU_LEVEL_BF16                                                                             \
    (CPU_LEVEL_AVX2 | CPU_AVX512F | CPU_AVX512BW | CPU_AVX512VL | CPU_AVX512DQ | CPU_AVX512BF16)
#define TGT_BF16                                                                                   \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c")))
/* BF16 with AMX tiles (Sapphire Rapids and later): the prefill GEMM on tiles. */
#define CPU_LEVEL_AMX (CPU_LEVEL_BF16 | CPU_AMX_BF16)
#define TGT_AMX                                                                                    \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c,"           \
                          "amx-tile,amx-bf16")))

/* The features this CPU and OS have (CPU_* bits), whatever the limit. Thread-safe. */
unsigned cpu_detected(void);
/* The features the kernels may use: cpu_detected() within the limit. Thread-safe. */
unsigned cpu_features(void);
/* Whether every feature of need (a CPU_LEVEL_* or CPU_* mask) may be used. */
bool cpu_has(unsigned need);
/* Sets the limit: from now on only the features of mask count (CPU_ALL: all that the CPU has;
 * 0: plain C everywhere). Replaces the start value that EXSA_GEMM set. For tests and
 * benchmarks: a call made while another thread runs kernels changes which kernel its next
 * call picks, never a call in progress. */
void cpu_limit(unsigned mask);

#endif
