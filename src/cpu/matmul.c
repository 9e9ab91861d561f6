/*
 * matmul.c: cpu_matmul (matmul.h) and the one table that says which kernel runs a call: a row
 * per weight type names its decode, prefill and fallback kernels, and each kernel names the CPU
 * level it needs (features.h). A call runs its row's kernel for its token count; where the CPU
 * lacks that kernel's level, or the kernel declines the call (shape, scratch), the next one
 * runs: AMX tiles, then AVX-512 BF16, then the row's fallback, then the reference kernel.
 *
 * Also here: the reference kernel (plain C: dequantize a row into a per-thread buffer,
 * cpu_dot_f32 with every token) and the threaded driver of it and of the tiled kernels of
 * matmul-avx512.c (activations quantized once per call, rows split over threads).
 * Scratch lives in thread-local buffers that only grow: the step loop does not allocate after
 * the first calls.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/features.h"
#include "cpu/gemv-impl.h"
#include "cpu/matmul-impl.h"
#include "cpu/scratch.h"
#include "quant.h"

/* ---- the kernel table ------------------------------------------------------------------- */

static bool run_ref(const struct mm_call *c);
static bool run_tiled_q8(const struct mm_call *c);
static bool run_tiled_f(const struct mm_call *c);
static bool run_gemv(const struct mm_call *c)
{
    return gemv_run(c);
}
static bool run_gemm_bf16(const struct mm_call *c)
{
    return gemm_run(c, false);
}
static bool run_gemm_amx(const struct mm_call *c)
{
    return gemm_run(c, true);
}

static const struct kernel {
    const char *name;
    unsigned level; /* the CPU features it needs (features.h) */
    bool (*run)(const struct mm_call *c);
} kernels[MM_N_KERNELS] = {
    [MM_REF] = {"ref", 0, run_ref},
    [MM_TILED_Q8] = {"tiled-q8", CPU_LEVEL_VNNI, run_tiled_q8},
    [MM_TILED_F] = {"tiled-f32", CPU_LEVEL_VNNI, run_tiled_f},
    [MM_GEMV] = {"gemv", CPU_LEVEL_VBMI, run_gemv},
    [MM_GEMM_BF16] = {"gemm-bf16", CPU_LEVEL_BF16, run_gemm_bf16},
    [MM_GEMM_AMX] = {"gemm-amx", CPU_LEVEL_AMX, run_gemm_amx},
};

/* What runs a call of w's type: decode below MM_PREFILL_MIN_TOK tokens, prefill from there;
 * fallback where those cannot. gv_act: the activation format of the decode kernel; segs: K
 * segments of the prefill GEMM (1: bf16 products, at the 8-bit activation bar like the int8
 * kernels; 2 or 3: split products at f32 accuracy like the f32 kernels). A type without a row
 * (one model binding rejects) gets the zero row: the reference kernel for every call. */
/* clang-format off */
static const struct mm_route routes[EXSA_DTYPE_COUNT] = {
    /* weight type          decode   prefill      fallback     gv_act       segs */
    [EXSA_DTYPE_Q4_0]    = {MM_GEMV, MM_GEMM_AMX, MM_TILED_Q8, GV_ACT_B4,   1},
    [EXSA_DTYPE_Q8_0]    = {MM_GEMV, MM_GEMM_AMX, MM_TILED_Q8, GV_ACT_B8,   1},
    [EXSA_DTYPE_Q4_K]    = {MM_GEMV, MM_GEMM_AMX, MM_TILED_Q8, GV_ACT_K8,   1},
    [EXSA_DTYPE_Q5_K]    = {MM_GEMV, MM_GEMM_AMX, MM_TILED_Q8, GV_ACT_K8,   1},
    [EXSA_DTYPE_Q6_K]    = {MM_GEMV, MM_GEMM_AMX, MM_TILED_Q8, GV_ACT_K6,   1},
    [EXSA_DTYPE_F16]     = {MM_GEMV, MM_GEMM_AMX, MM_TILED_F,  GV_ACT_F32,  3},
    [EXSA_DTYPE_BF16]    = {MM_GEMV, MM_GEMM_AMX, MM_TILED_F,  GV_ACT_BF,   2},
    [EXSA_DTYPE_F32]     = {MM_GEMV, MM_TILED_F,  MM_TILED_F,  GV_ACT_F32,  0},
    [EXSA_DTYPE_Q4_1]    = {MM_REF,  MM_GEMM_AMX, MM_REF,      GV_ACT_NONE, 3},
    [EXSA_DTYPE_Q5_0]    = {MM_REF,  MM_GEMM_AMX, MM_REF,      GV_ACT_NONE, 3},
    [EXSA_DTYPE_Q5_1]    = {MM_REF,  MM_GEMM_AMX, MM_REF,      GV_ACT_NONE, 3},
    [EXSA_DTYPE_Q2_K]    = {MM_REF,  MM_GEMM_AMX, MM_REF,      GV_ACT_NONE, 3},
    [EXSA_DTYPE_Q3_K]    = {MM_REF,  MM_GEMM_AMX, MM_REF,      GV_ACT_NONE, 3},
    [EXSA_DTYPE_Q8_K]    = {MM_REF,  MM_GEMM_AMX, MM_REF,      GV_ACT_NONE, 3},
    [EXSA_DTYPE_IQ4_NL]  = {MM_REF,  MM_GEMM_AMX, MM_REF,      GV_ACT_NONE, 3},
    [EXSA_DTYPE_IQ4_XS]  = {MM_REF,  MM_GEMM_AMX, MM_REF,      GV_ACT_NONE, 3},
};
/* clang-format on */

static const struct mm_route *route_of(int type)
{
    static const struct mm_route none = {MM_REF, MM_REF, MM_REF, GV_ACT_NONE, 0};
    return type >= 0 && type < EXSA_DTYPE_COUNT ? &routes[type] : &none;
}

/* The kernel to try after k on row r: AMX tiles -> AVX-512 BF16 -> fallback -> reference. */
static int next_kernel(const struct mm_route *r, int k)
{
    if (k == MM_GEMM_AMX)
        return MM_GEMM_BF16;
    return k == r->fallback || k == MM_REF ? MM_REF : r->fallback;
}

/* k, or the first kernel after it whose level the CPU has (the reference one needs none). */
static int usable(const struct mm_route *r, int k)
{
    while (!cpu_has(kernels[k].level))
        k = next_kernel(r, k);
    return k;
}

static int pick(const struct mm_route *r, int n_tok)
{
    return usable(r, n_tok >= MM_PREFILL_MIN_TOK ? r->prefill : r->decode);
}

/* Whether a call on row r that starts at kernel `from` can come to kernel k. */
static bool reaches(const struct mm_route *r, int from, int k)
{
    for (;; from = next_kernel(r, from)) {
        if (from == k)
            return true;
        if (from == MM_REF)
            return false;
    }
}

int cpu_matmul_pick(int type, int n_tok)
{
    return pick(route_of(type), n_tok);
}

int cpu_matmul_pick_family(int type, bool dec)
{
    const struct mm_route *r = route_of(type);
    return usable(r, dec ? r->decode : r->prefill);
}

const char *cpu_matmul_kernel_name(int kernel)
{
    return kernel >= 0 && kernel < MM_N_KERNELS ? kernels[kernel].name : "?";
}

bool cpu_matmul_exact(int kernel, int type)
{
    const struct mm_route *r = route_of(type);
    switch (kernel) {
    case MM_TILED_Q8: return false;
    case MM_GEMV: return r->gv_act == GV_ACT_F32 || r->gv_act == GV_ACT_BF;
    case MM_GEMM_BF16:
    case MM_GEMM_AMX: return r->segs > 1;
    default: return true;
    }
}

int cpu_matmul_prepare(struct tensor *w)
{
    return 0;
}

void cpu_matmul_release(struct tensor *w)
{
}

/* ---- plain C: the f32 dot and the reference kernel -------------------------------------- */

float cpu_dot_f32(const float *a, const float *b, int64_t n)
{
    float s[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++)
            s[j] += a[i + j] * b[i + j];
    for (; i < n; i++)
        s[i & 15] += a[i] * b[i];
    float sum = 0.0f;
    for (int j = 0; j < 16; j++)
        sum += s[j];
    return sum;
}

static _Thread_local struct scratch tl_act, tl_row;

/* Reference rows [r0, r1): each row dequantized once, then dotted with every token. */
static void rows_ref(const struct mm_job *j, int r0, int r1, int n_tok)
{
    float *row = scratch_get(&tl_row, sizeof(float) * (size_t)j->K);
    for (int r = r0; r < r1; r++) {
        int rc = row ? dequantize_row(j->type, j->w + (size_t)r * j->row_bytes, row, j->K) : -1;
        for (int t = 0; t < n_tok; t++)
            j->y[(size_t)t * j->N + r] =
                rc == 0 ? cpu_dot_f32(row, j->x + (size_t)t * j->K, j->K) : 0;
    }
}

/* ---- the threaded driver of the reference and the tiled kernels ------------------------- */

struct rows_call {
    struct mm_job job;
    int kernel; /* MM_REF, MM_TILED_Q8 or MM_TILED_F */
    int n_tok;
    int8_t *xq; /* MM_TILED_Q8: where job.a points, writable */
    float *dx, *s16;
    atomic_int declined; /* a thread's kernel could not run (out of scratch) */
};

static void quantize_tokens(const struct rows_call *c, int t0, int t1)
{
    const int64_t K = c->job.K;
    for (int t = t0; t < t1; t++)
        mm_avx512_quantize(c->job.x + (size_t)t * K, K, c->xq + (size_t)t * K,
                           c->dx + (size_t)t * (K / 32), c->s16 + (size_t)t * (K / 16));
}

static void quantize_worker(void *arg, int ith, int nth)
{
    const struct rows_call *c = arg;
    quantize_tokens(c, c->n_tok * ith / nth, c->n_tok * (ith + 1) / nth);
}

static void rows_worker(void *arg, int ith, int nth)
{
    struct rows_call *c = arg;
    const int r0 = (int)(c->job.N * ith / nth), r1 = (int)(c->job.N * (ith + 1) / nth);
    if (r0 >= r1)
        return;
    int rc = 0;
    if (c->kernel == MM_TILED_Q8)
        rc = mm_avx512_q8(&c->job, r0, r1, 0, c->n_tok);
    else if (c->kernel == MM_TILED_F)
        rc = mm_avx512_f(&c->job, r0, r1, 0, c->n_tok);
    else
        rows_ref(&c->job, r0, r1, c->n_tok);
    if (rc != 0)
        atomic_store(&c->declined, 1);
}

/* Points the job's activations at this thread's act8 scratch; false if out of memory. */
static bool act_scratch(struct rows_call *c)
{
    const size_t K = (size_t)c->job.K, n = (size_t)c->n_tok;
    const size_t q_bytes = (n * K + 63) & ~(size_t)63, d_bytes = (n * K / 32 * 4 + 63) & ~63ul;
    uint8_t *p = scratch_get(&tl_act, q_bytes + d_bytes + n * K / 16 * 4);
    if (!p)
        return false;
    c->xq = (int8_t *)p;
    c->dx = (float *)(p + q_bytes);
    c->s16 = (float *)(p + q_bytes + d_bytes);
    c->job.a = (struct act8){c->xq, c->dx, c->s16, c->job.K};
    return true;
}

static bool run_rows(const struct mm_call *mc, int kernel)
{
    struct rows_call c = {
        .job = {.type = mc->type,
                .w = mc->w,
                .row_bytes = mc->row_bytes,
                .K = mc->K,
                .N = mc->N,
                .x = mc->x,
                .y = mc->y},
        .kernel = kernel,
        .n_tok = mc->n_tok,
    };
    if (kernel == MM_TILED_Q8) {
        if (mc->row_bytes == 0 || mc->K % 32 != 0 || !act_scratch(&c))
            return false; /* whole blocks of 32 only */
        if (mc->n_tok >= 2 * tp_n_threads(mc->tp))
            tp_run(mc->tp, quantize_worker, &c);
        else
            quantize_tokens(&c, 0, mc->n_tok);
    }
    atomic_init(&c.declined, 0);
    tp_run(mc->tp, rows_worker, &c);
    return !atomic_load(&c.declined);
}

static bool run_ref(const struct mm_call *c)
{
    return run_rows(c, MM_REF);
}
static bool run_tiled_q8(const struct mm_call *c)
{
    return run_rows(c, MM_TILED_Q8);
}
static bool run_tiled_f(const struct mm_call *c)
{
    return run_rows(c, MM_TILED_F);
}

/* ---- the entry points ------------------------------------------------------------------- */

static struct mm_call make_call(struct threadpool *tp, const struct tensor *w, int expert,
                                const float *x, float *y, int n_tok)
{
    const int64_t K = w->ne[0], N = w->ne[1];
    const size_t row_bytes = dtype_row_size(w->type, K);
    return (struct mm_call){
        .tp = tp,
        .route = route_of(w->type),
        .type = w->type,
        .n_tok = n_tok,
        .K = K,
        .N = N,
        .row_bytes = row_bytes,
        .x = x,
        .y = y,
        .w = (const uint8_t *)w->data + (size_t)expert * (size_t)N * row_bytes,
    };
}

/* Runs the call from kernel k on, down the row's fallbacks until one takes it. */
static void run_from(const struct mm_call *c, int k)
{
    while (!kernels[k].run(c)) /* the reference kernel always runs */
        k = usable(c->route, next_kernel(c->route, k));
}

void cpu_matmul(struct threadpool *tp, const struct tensor *w, int expert, const float *x, float *y,
                int n_tok)
{
    const struct mm_call c = make_call(tp, w, expert, x, y, n_tok);
    run_from(&c, pick(c.route, n_tok));
}

/* ---- calls of two kernel families (cpu_matmul_roles) -------------------------------------- */

static _Thread_local struct scratch tl_gx, tl_gy;

/* The tokens t with (dec[t] != 0) == want, as [first, last] when they are one contiguous run;
 * returns their count. */
static int family_run(const uint8_t *dec, int n_tok, bool want, int *first, int *last)
{
    int n = 0;
    *first = -1, *last = -1;
    for (int t = 0; t < n_tok; t++)
        if ((dec[t] != 0) == want) {
            n++;
            *first = *first < 0 ? t : *first;
            *last = t;
        }
    return n;
}

/* The family's tokens of the call through its kernels: straight on x and y when they are one
 * run, else gathered into scratch and scattered back. False if out of memory. */
static bool run_family(const struct mm_call *all, const uint8_t *dec, bool want)
{
    int first, last;
    const int n = family_run(dec, all->n_tok, want, &first, &last);
    const int k = usable(all->route, want ? all->route->decode : all->route->prefill);
    const size_t K = (size_t)all->K, N = (size_t)all->N;
    struct mm_call c = *all;
    c.n_tok = n;
    if (n == 0)
        return true;
    if (last - first + 1 == n) {
        c.x = all->x + (size_t)first * K, c.y = all->y + (size_t)first * N;
        run_from(&c, k);
        return true;
    }
    float *gx = scratch_get(&tl_gx, sizeof(float) * (size_t)n * K);
    float *gy = scratch_get(&tl_gy, sizeof(float) * (size_t)n * N);
    if (!gx || !gy)
        return false;
    for (int t = first, i = 0; t <= last; t++)
        if ((dec[t] != 0) == want)
            memcpy(gx + (size_t)i++ * K, all->x + (size_t)t * K, sizeof(float) * K);
    c.x = gx, c.y = gy;
    run_from(&c, k);
    for (int t = first, i = 0; t <= last; t++)
        if ((dec[t] != 0) == want)
            memcpy(all->y + (size_t)t * N, gy + (size_t)i++ * N, sizeof(float) * N);
    return true;
}

void cpu_matmul_family(struct threadpool *tp, const struct tensor *w, int expert, const float *x,
                       float *y, int n_tok, bool dec)
{
    if (n_tok <= 0)
        return; /* an expert with no token of this family: nothing to read */
    const struct mm_call c = make_call(tp, w, expert, x, y, n_tok);
    run_from(&c, usable(c.route, dec ? c.route->decode : c.route->prefill));
}

void cpu_matmul_roles(struct threadpool *tp, const struct tensor *w, int expert, const float *x,
                      float *y, int n_tok, const uint8_t *dec)
{
    if (!dec) {
        cpu_matmul(tp, w, expert, x, y, n_tok);
        return;
    }
    const struct mm_call c = make_call(tp, w, expert, x, y, n_tok);
    if (!run_family(&c, dec, true) || !run_family(&c, dec, false)) {
        /* out of memory for the gather: whole-call kernels on every token, one at a time, so
         * that each still gets its own family's arithmetic */
        for (int t = 0; t < n_tok; t++) {
            const uint8_t one = dec[t];
            struct mm_call c1 =
                make_call(tp, w, expert, x + (size_t)t * c.K, y + (size_t)t * c.N, 1);
            run_family(&c1, &one, one != 0);
        }
    }
}

bool cpu_matmul_with(int kernel, struct threadpool *tp, const struct tensor *w, int expert,
                     const float *x, float *y, int n_tok)
{
    if (kernel < 0 || kernel >= MM_N_KERNELS || !cpu_has(kernels[kernel].level))
        return false;
    const struct mm_call c = make_call(tp, w, expert, x, y, n_tok);
    const bool in_row =
        reaches(c.route, c.route->decode, kernel) || reaches(c.route, c.route->prefill, kernel);
    return in_row && kernels[kernel].run(&c);
}
