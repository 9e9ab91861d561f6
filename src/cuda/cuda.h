/*
 * cuda.h: internals of the CUDA backend (the .cu files of src/cuda), shared by them only.
 *
 * Weights live in device memory in a GPU layout per type (struct dweight): F32/F16/BF16 and
 * Q4_K/Q5_K as in the file; Q8_0, Q4_0 and Q6_K split into a 16-byte aligned body and a
 * separate fp16 scale array; every other type converted to Q8_0 at load. Activations feeding
 * a matrix-vector product are quantized to 8 bits per 32 (struct q8act). A step records its
 * ops (struct op) and runs them at end(): as a CUDA graph replayed per op-list fingerprint, or
 * eagerly. Kernels are in mmv.cu (decode products, MoE), gemm.cu (prefill products), attn.cu,
 * ops.cu (the rest); backend-cuda.cu holds memory, weights, steps and graphs; ops-table.cu maps the
 * seam's ops onto recorded kernels.
 */
#ifndef EXSA_CUDA_H
#define EXSA_CUDA_H

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "backend.h"
#include "kvcache.h"
#include "quant.h"
}

/* Op argument structs are packed: a step's ops are fingerprinted by their bytes, which must not
 * include uninitialised padding. */
#define PACKED __attribute__((packed))

/* ---- weights ------------------------------------------------------------------------------ */

enum gtype { GT_F32, GT_F16, GT_BF16, GT_Q8_0, GT_Q4_0, GT_Q4_K, GT_Q5_K, GT_Q6_K, GT_COUNT };

#define Q6_BODY 208 /* ql 128 | qh 64 | scales 16 per super-block; d kept apart */

/* Whether a layout's products take 8-bit activations (else f32), and the values of one unit
 * of the matrix-vector kernels (a row's length must be a multiple of it). */
__host__ __device__ constexpr bool gt_quantized(int gt)
{
    return gt != GT_F32 && gt != GT_F16 && gt != GT_BF16;
}
__host__ __device__ constexpr int gt_vpu(int gt)
{
    return gt == GT_F32 ? 32 : 64;
}

struct dweight {
    int gt;          /* enum gtype */
    int64_t K, rows; /* rows = N x E for expert stacks */
    int64_t N;       /* rows of one matrix (one expert) */
    uint8_t *q;      /* body: q_row bytes per row */
    __half *d;       /* per-block scales of split layouts (d_row per row), or NULL */
    size_t q_row;
    int d_row;
    const void *host; /* the host bytes it was made from (dedupe of tied tensors) */
    int refs;
};

/* ---- activations ---------------------------------------------------------------------------- */

/* x quantized per 32: q[t][k] = round(x / d[t][b]), s[t][b] = d x sum of q over block b. */
struct q8act {
    int8_t *q;
    float *d, *s;
    int64_t K; /* row length of the quantized rows (stride of q: K bytes; of d, s: K / 32) */
};

/* Which buffer a quantized scratch holds (src NULL: none), for how many rows of K: kept within a
 * step (ops-table.cu: set by the quantization, cleared when the buffer is written). */
struct qtag {
    const float *src;
    int n;
    int64_t K;
};

/* ---- recorded ops ----------------------------------------------------------------------------- */

struct cuda_be;
typedef void (*op_fn)(struct cuda_be *c, const void *args);

#define OP_ARGS_MAX 256
struct op {
    op_fn fn;
    const char *name; /* for the profile (not fingerprinted) */
    uint16_t size;    /* bytes of args used (fingerprinted) */
    alignas(16) unsigned char args[OP_ARGS_MAX];
};

/* The device copy of a step's arrays (fixed addresses: graphs replay over them). */
struct dstep {
    int32_t *n_tiles; /* attention tiles of this step */
    int32_t *tok, *pos, *ent_sq, *out_rows, *sq_ent_off, *sq_ent;
    int32_t *conv_rd, *conv_wr, *blk_off, *blk;
    int32_t *tiles; /* attention tiles: (sequence, first unit) pairs */
};

/* Pool row of position p of step sequence j (its block table). */
__device__ __forceinline__ int64_t kv_row(const struct dstep &ds, int j, int p)
{
    return (int64_t)ds.blk[ds.blk_off[j] + p / KV_BLOCK] * KV_BLOCK + p % KV_BLOCK;
}

/* A K/V cache element from f32. */
template <typename T> __device__ __forceinline__ T to_kv(float v);
template <> __device__ __forceinline__ float to_kv<float>(float v)
{
    return v;
}
template <> __device__ __forceinline__ __half to_kv<__half>(float v)
{
    return __float2half_rn(v);
}

struct graph_entry {
    uint64_t key;
    int seen;
    cudaGraphExec_t exec; /* NULL until captured */
    uint64_t last_use;
};
#define GRAPH_SLOTS 64

struct host_copy {
    void *dst;
    const void *src;
    size_t bytes;
};

/* ---- the backend ------------------------------------------------------------------------------ */

struct cuda_be {
    struct backend be;
    struct backend_config cfg;
    struct hparams hp;
    cudaStream_t stream;
    cublasHandle_t blas;
    int err; /* first error of the current step (EXSA_E*) */
    char errmsg[256];
    bool in_step, pdl, graphs_on;
    int n_sms;
    int64_t mmv_max_blocks; /* a product's grid at most (0: no cap): each block walks rows */
    bool mmv_inslot;        /* EXSA_CUDA_MMV_INSLOT=0: next row's units loaded after a row */
    int mmq_min, mmq_max;   /* token counts the batched products take (mmq.cu; 0: none) */

    /* step */
    struct dstep ds;
    void *ds_mem;
    size_t ds_bytes;
    unsigned char *stage_in;              /* pinned: the step's arrays, then uploads */
    size_t stage_in_bytes, stage_in_used; /* the step's arrays take the first ds_bytes */
    unsigned char *stage_out;             /* pinned: downloads */
    size_t stage_out_bytes, stage_out_used;
    struct host_copy *pre, *post; /* host copies before launch (uploads) / after (downloads) */
    int n_pre, n_post, max_copies;
    struct op *ops;
    int n_ops, max_ops; /* the op list grows (deterministic prefill records many products) */
    int attn_chunk;     /* deterministic: positions per attention split, fixed for the engine
                           (0: splits follow the step's shape) */
    int n_tok, n_sq, attn_units; /* this step's entries, sequences; warps per attention tile */
    int attn_group;              /* query heads per KV head */
    int n_tiles_max;
    struct graph_entry graphs[GRAPH_SLOTS];
    uint64_t use_clock;
    /* EXSA_CUDA_PROFILE=1: every step eager, GPU time per op name, printed when freed */
    bool profile;
    struct prof_row {
        const char *name;
        double us;
        long calls;
    } prof[48];
    int n_prof;
    cudaEvent_t *ev;
    int n_ev;
    double prof_steps, prof_host_us, t_begin;
    long graph_replays; /* for tests */

    /* an RMSNorm not yet run: y = norm(x) * w over rows x dim (ops-table.cu) */
    struct pending_norm {
        bool on;
        float *y;
        const float *x, *w;
        int rows, dim;
        float eps;
    } pend;

    /* scratch */
    struct q8act q8;    /* quantized activations of the tagged buffer (MoE) */
    struct qtag q8_tag; /* what q8 holds */
    float *wh;          /* dequantized weights for cuBLAS (largest dense matrix) */
    float *glu_tmp;     /* [n_batch][hidden]: the up product of an unfused GLU */
    float *xhi, *xlo;   /* activations split for F16/BF16 products (gemm.cu) */
    size_t xsplit_elems;
    size_t wh_elems;
    void *blas_ws;
    float *attn_part; /* attention partials */
    size_t attn_part_floats;
    float *rope_cs; /* [n_ctx][head_dim / 2][2] cos, sin */
    /* MoE */
    int32_t *moe_ids, *moe_order, *moe_tiles;
    float *moe_wts, *moe_logits, *moe_act, *moe_out;
    struct q8act moe_q8;
    /* the batched products' activations: MMQ_TOK rows of int8 and (d, d x sum) per 32 */
    struct {
        int8_t *q;
        float2 *ds;
    } mq;
    int64_t mq_kmax;    /* the longest row mq holds */
    struct qtag mq_tag; /* what mq holds */
    size_t scratch_bytes;

    /* weights */
    struct dweight **wlist;
    int n_w, max_w;
};

static inline struct cuda_be *CB(struct backend *be)
{
    return (struct cuda_be *)be;
}

/* Records the first failure of the step ("what": the call that failed). */
void cu_fail(struct cuda_be *c, int code, const char *what, cudaError_t e);
/* Checks the launch just made. */
void cu_check_launch(struct cuda_be *c, const char *what);
/* Appends an op (args copied) to the step's list; runs it at once outside a step. */
void cu_record(struct cuda_be *c, op_fn fn, const char *name, const void *args, size_t size);
/* Launch configuration with programmatic dependent launch when enabled. */
struct cu_launch {
    cudaLaunchConfig_t cfg;
    cudaLaunchAttribute attr[1];
};
void cu_launch_cfg(struct cuda_be *c, struct cu_launch *l, dim3 grid, dim3 block, size_t smem);

/* Device helpers used at the start of every kernel: with PDL, wait for the previous kernel's
 * results (a no-op otherwise), and let the next kernel start launching. */
__device__ __forceinline__ void pdl_wait()
{
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger()
{
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;");
#endif
}

/* The start of a kernel with one thread per element: the PDL handshake, then the thread's
 * element index. */
__device__ __forceinline__ int64_t elementwise_start()
{
    pdl_trigger();
    pdl_wait();
    return (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
}

/* ---- kernels (launchers run on c->stream) ------------------------------------------------------ */

/* mmv.cu */
#define MMV_MAX_TOK 8 /* tokens per matrix-vector launch */
#define MMV_MAX_N 64  /* larger calls take the GEMM path */
#define MOE_TILE 8    /* problems (token, expert slot) per MoE tile */
void cu_quantize(struct cuda_be *c, const float *x, int n, int64_t K, const struct q8act *out);
/* y[t][r] (+)= W[r] . x[t] for the rows of up to 3 matrices of one type and K (segments of
 * one row range, each with its own y), t < n (<= cu_mmv_max_tok). x is f32 [n][ldx], RMS-normed
 * with weights nw on the way in when nw is set; each block stages it in shared memory (8-bit per
 * 32 for quantized weights). glu: two segments (gate, up) of equal rows, y0 = silu(gate) * up. */
struct mmv_seg {
    const struct dweight *w;
    int64_t row0; /* first row of the matrix (expert offset) */
    int64_t rows;
    float *y;
    int64_t ldy;
};
static_assert(sizeof(struct mmv_seg) == 40, "mmv_seg has no padding (fingerprinted)");
static_assert(sizeof(struct q8act) == 32, "q8act has no padding (fingerprinted)");
struct PACKED mmv_args {
    struct mmv_seg seg[3];
    int n_seg;
    int n; /* tokens */
    const float *x;
    int64_t ldx;
    const float *nw;
    float eps;
    bool acc, glu;
};
void cu_mmv(struct cuda_be *c, const struct mmv_args *a);
/* Tokens one launch takes for weights of type gt and row length K (shared memory bound). */
int cu_mmv_max_tok(int gt, int64_t K);
/* Lets every product kernel use the shared memory it may ask for (once, at creation). */
void cu_mmv_init(void);
/* The products' grid cap in blocks for a device of n_sms (0: none); see mmv.cu. */
int64_t cu_mmv_grid_cap(int n_sms);
/* MoE: route (ids, wts) and tiles of problems grouped by expert; gathered products. */
void cu_moe_route(struct cuda_be *c, const float *logits, const float *bias, int n, int n_exp,
                  int k);
void cu_moe_ffn(struct cuda_be *c, const struct layer *l, const float *x, float *out, int n,
                int dim, int n_exp, int k, int fe);
bool cu_moe_supported(const struct layer *l);

/* mmq.cu: the batched products, y[t] (+)= W x[t] for t < n <= MMQ_TOK on the int8 tensor cores,
 * for the segments of a (as cu_mmv; x is not read: cu_mq_quant put it in c->mq first). Each
 * token's result is the same whatever the other tokens of the launch. */
#define MMQ_TOK 64
bool cu_mmq_supported(const struct dweight *w);
/* c->mq = x [n][K] quantized per 32, RMS-normed by nw first when nw is set. */
void cu_mq_quant(struct cuda_be *c, const float *x, const float *nw, float eps, int n, int64_t K);
void cu_mmq(struct cuda_be *c, const struct mmv_args *a);

/* gemm.cu: y[n][N] = x[n][K] W^T through cuBLAS (weights dequantized to fp16 when needed). */
void cu_gemm(struct cuda_be *c, const struct dweight *w, int64_t row0, int64_t N, const float *x,
             float *y, int n, bool acc);
/* out[i] = row tok[i] of w (f32). */
void cu_embed(struct cuda_be *c, const struct dweight *w, const int32_t *tok, int n, float *out);

/* attn.cu */
void cu_kv_store(struct cuda_be *c, const struct kv_cache *kv, int a, const float *k,
                 const float *v, int n);
/* span: at least the longest context of the step (positions split into pieces of 64 or more). */
void cu_attention(struct cuda_be *c, const struct kv_cache *kv, int a, const float *q, float *out,
                  int n, int n_heads, int n_kv_heads, int head_dim, int span);
/* Attention tiles of a step: pairs (sequence index, first unit); returns the count. */
int cu_attn_tiles(const struct step *st, int group, int units, int32_t *tiles);

/* ops.cu */
void cu_rmsnorm(struct cuda_be *c, float *y, const float *x, const float *w, int rows, int dim,
                float eps);
/* Optionally also stores k (after RoPE) and v into an attention layer's cache (kp NULL: not). */
struct PACKED kv_dst {
    void *kp, *vp;
    const float *v;
    int kvd, f16;
};
void cu_qk_norm_rope(struct cuda_be *c, float *q, float *k, const float *qw, const float *kw, int n,
                     int n_heads, int n_kv_heads, int head_dim, float eps, struct kv_dst st);
void cu_rope(struct cuda_be *c, float *x, int n, int n_heads, int head_dim);
void cu_swiglu(struct cuda_be *c, float *out, const float *g, const float *u, long n);
void cu_add(struct cuda_be *c, float *y, const float *x, long n);
void cu_shortconv(struct cuda_be *c, float *y, const float *bcx, const float *w, float *state,
                  int n, int n_sq, int dim, int l_cache);
void cu_gather(struct cuda_be *c, float *dst, const float *src, int r0, int n_rows, int dim);
double cu_read_bandwidth(size_t bytes);

/* backend-cuda.cu: the device copy of a tensor (NULL for a tensor prepare never saw). */
static inline const struct dweight *DW(const struct tensor *t)
{
    return (const struct dweight *)t->be_data;
}

/* backend-cuda.cu: memory, weights and step entries of the ops table (contracts: backend.h) */
void cu_free(struct backend *be);
void *cu_alloc(struct backend *be, size_t bytes);
void cu_release(struct backend *be, void *p);
int cu_upload(struct backend *be, void *dst, const void *src, size_t bytes);
int cu_download(struct backend *be, void *dst, const void *src, size_t bytes);
int cu_copy(struct backend *be, void *dst, const void *src, size_t bytes);
int cu_zero(struct backend *be, void *dst, size_t bytes);
int cu_prepare(struct backend *be, struct tensor *t);
void cu_unprepare(struct backend *be, struct tensor *t);
int cu_begin(struct backend *be, const struct step *st);
int cu_end(struct backend *be);

/* ops-table.cu */
extern const struct backend_ops cuda_ops;
/* Before a memory op inside a step that reads rd and writes wr (either may be NULL): keeps the
 * pending norm right. */
void cu_touch(struct cuda_be *c, const void *rd, const void *wr);
/* At begin: nothing pending, nothing quantized. */
void cu_step_reset(struct cuda_be *c);
/* The quantized scratches hold nothing known (at a step's end). */
void cu_forget_quantized(struct cuda_be *c);

#endif
