/*
 * ops-ref.c: the reference backend: every op of backend.h in plain C with f32 arithmetic and
 * weights dequantized row by row. It is the ground truth the fixtures' tight bar is checked
 * against and the fallback of every fast backend. Single-threaded; no allocation per call
 * beyond one row's buffer. Also the host memory ops both CPU backends use: zeroed allocations
 * (large ones mapped, so untouched pages cost nothing) and plain copies.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "backend.h"
#include "cpu/matmul.h"
#include "cpu/ops-ref.h"
#include "kvcache.h"
#include "quant.h"

/* Row r of matrix expert `expert` of w, as bytes. */
static const uint8_t *weight_row(const struct tensor *w, int expert, int64_t r)
{
    size_t row_bytes = dtype_row_size(w->type, w->ne[0]);
    return (const uint8_t *)w->data + ((size_t)expert * w->ne[1] + (size_t)r) * row_bytes;
}

static int ref_matmul(struct backend *be, const struct tensor *w, int expert, const float *x,
                      float *y, int n_tok)
{
    const int64_t K = w->ne[0], N = w->ne[1];
    float *row = malloc(sizeof(float) * (size_t)K);
    if (!row)
        return EXSA_ENOMEM;
    for (int64_t n = 0; n < N; n++) {
        dequantize_row(w->type, weight_row(w, expert, n), row, K);
        for (int t = 0; t < n_tok; t++) {
            y[(size_t)t * N + n] = cpu_dot_f32(row, x + (size_t)t * K, K);
        }
    }
    free(row);
    return 0;
}

int ref_embed(struct backend *be, const struct step *st, const struct tensor *w, float *out)
{
    for (int i = 0; i < st->n; i++)
        if (dequantize_row(w->type, weight_row(w, 0, st->tok[i]), out + (size_t)i * w->ne[0],
                           w->ne[0]) < 0)
            return EXSA_EUNSUPPORTED;
    return 0;
}

static int ref_rmsnorm(struct backend *be, float *y, const float *x, const struct tensor *wt,
                       int n_rows, int dim, float eps)
{
    const float *w = wt->data;
    for (int r = 0; r < n_rows; r++) {
        const float *xr = x + (size_t)r * dim;
        float *yr = y + (size_t)r * dim;
        double ss = 0.0;
        for (int i = 0; i < dim; i++)
            ss += (double)xr[i] * xr[i];
        float scale = 1.0f / sqrtf((float)(ss / dim) + eps);
        for (int i = 0; i < dim; i++)
            yr[i] = xr[i] * scale * w[i];
    }
    return 0;
}

int ref_rope(struct backend *be, const struct step *st, float *x, int n_heads, int head_dim,
             float base)
{
    const int32_t *pos = st->pos;
    int half = head_dim / 2;
    for (int t = 0; t < st->n; t++) {
        for (int i = 0; i < half; i++) {
            double theta = pos[t] * pow(base, -2.0 * i / head_dim);
            float c = (float)cos(theta), s = (float)sin(theta);
            for (int h = 0; h < n_heads; h++) {
                float *xh = x + ((size_t)t * n_heads + h) * head_dim;
                float a = xh[i], b = xh[i + half];
                xh[i] = a * c - b * s;
                xh[i + half] = a * s + b * c;
            }
        }
    }
    return 0;
}

static int ref_swiglu(struct backend *be, float *out, const float *gate, const float *up, long n)
{
    for (long i = 0; i < n; i++)
        out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
    return 0;
}

static int ref_add(struct backend *be, float *y, const float *x, long n)
{
    for (long i = 0; i < n; i++)
        y[i] += x[i];
    return 0;
}

/* Copies each step sequence's conv state from its read slot to its write slot, which the entries
 * then update in place (shared by the CPU backends). */
int ref_conv_begin(const struct step *st, struct kv_cache *kv, int c)
{
    const size_t bytes = sizeof(float) * (size_t)kv->dim * (kv->l_cache - 1);
    for (int j = 0; j < st->n_sq; j++)
        memcpy(kv_conv_state(kv, c, st->sq_conv_wr[j]), kv_conv_state(kv, c, st->sq_conv_rd[j]),
               bytes);
    return 0;
}

int ref_shortconv(struct backend *be, const struct step *st, float *y, const float *bcx,
                  const struct tensor *w, struct kv_cache *kv, int conv_idx, int dim, int l_cache)
{
    const float *wt = w->data; /* [dim][l_cache] */
    int ns = l_cache - 1;
    ref_conv_begin(st, kv, conv_idx);
    for (int i = 0; i < st->n; i++) {
        const float *B = bcx + (size_t)i * 3 * dim, *C = B + dim, *X = C + dim;
        float *state = kv_conv_state(kv, conv_idx, st->sq_conv_wr[st->ent_sq[i]]);
        for (int c = 0; c < dim; c++) {
            float s = B[c] * X[c];
            const float *wc = wt + (size_t)c * l_cache;
            float *sc = state + (size_t)c * ns;
            float acc = wc[ns] * s;
            for (int k = 0; k < ns; k++)
                acc += wc[k] * sc[k];
            for (int k = 0; k + 1 < ns; k++)
                sc[k] = sc[k + 1];
            if (ns > 0)
                sc[ns - 1] = s;
            y[(size_t)i * dim + c] = C[c] * acc;
        }
    }
    return 0;
}

/* Writes the step's K and V rows into an f32 host pool (shared by the CPU backends). */
int ref_kv_store(const struct step *st, struct kv_cache *kv, int a, const float *k, const float *v)
{
    if (kv->kv_type[a] != EXSA_DTYPE_F32)
        return EXSA_EUNSUPPORTED;
    const int kvd = kv->kv_dim;
    for (int i = 0; i < st->n; i++) {
        memcpy(kv_k(kv, a, st->seq[i], st->pos[i]), k + (size_t)i * kvd, sizeof(float) * kvd);
        memcpy(kv_v(kv, a, st->seq[i], st->pos[i]), v + (size_t)i * kvd, sizeof(float) * kvd);
    }
    return 0;
}

int ref_attention(struct backend *be, const struct step *st, float *out, const float *q,
                  const float *k, const float *v, struct kv_cache *kv, int a, int n_heads,
                  int n_kv_heads, int head_dim)
{
    int group = n_heads / n_kv_heads;
    int rc = ref_kv_store(st, kv, a, k, v);
    if (rc < 0)
        return rc;
    float scale = 1.0f / sqrtf((float)head_dim);
    float *sc = malloc(sizeof(float) * (size_t)(kv->n_ctx + 1));
    if (!sc)
        return EXSA_ENOMEM;
    for (int i = 0; i < st->n; i++) {
        int seq = st->seq[i], np = st->pos[i] + 1;
        for (int h = 0; h < n_heads; h++) {
            const float *qh = q + ((size_t)i * n_heads + h) * head_dim;
            int g = h / group;
            float mx = -INFINITY;
            for (int p = 0; p < np; p++) {
                const float *kp = kv_k(kv, a, seq, p) + g * head_dim;
                float d = 0.0f;
                for (int j = 0; j < head_dim; j++)
                    d += qh[j] * kp[j];
                sc[p] = d * scale;
                mx = sc[p] > mx ? sc[p] : mx;
            }
            float sum = 0.0f;
            for (int p = 0; p < np; p++) {
                sc[p] = expf(sc[p] - mx);
                sum += sc[p];
            }
            float *oh = out + ((size_t)i * n_heads + h) * head_dim;
            memset(oh, 0, sizeof(float) * head_dim);
            for (int p = 0; p < np; p++) {
                const float *vp = kv_v(kv, a, seq, p) + g * head_dim;
                float wgt = sc[p] / sum;
                for (int j = 0; j < head_dim; j++)
                    oh[j] += wgt * vp[j];
            }
        }
    }
    free(sc);
    return 0;
}

/* Picks the k experts with the largest sigmoid(logit) + bias; weights = normalised sigmoid. */
void moe_route(const float *logits, const float *bias, int n_experts, int k, int *ids, float *wts)
{
    float p[512];
    for (int e = 0; e < n_experts; e++)
        p[e] = 1.0f / (1.0f + expf(-logits[e]));
    float sum = 0.0f;
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int e = 0; e < n_experts; e++) {
            bool taken = false;
            for (int t = 0; t < j; t++)
                taken |= ids[t] == e;
            if (!taken && (best < 0 || p[e] + bias[e] > p[best] + bias[best]))
                best = e;
        }
        ids[j] = best;
        wts[j] = p[best];
        sum += p[best];
    }
    if (sum < 6.103515625e-5f)
        sum = 6.103515625e-5f;
    for (int j = 0; j < k; j++)
        wts[j] /= sum;
}

int ref_moe(struct backend *be, float *out, const float *x, const struct layer *l, int n_tok,
            int dim, int n_experts, int k, int fe)
{
    float *logits = malloc(sizeof(float) * (size_t)n_experts);
    float *g = malloc(sizeof(float) * (size_t)fe * 2), *u = g + fe;
    float *y = malloc(sizeof(float) * (size_t)dim);
    int rc = n_experts > 512 || k > 64 ? EXSA_EUNSUPPORTED : EXSA_ENOMEM;
    if (!logits || !g || !y || n_experts > 512 || k > 64)
        goto done;
    rc = 0;
    for (int t = 0; t < n_tok; t++) {
        const float *xt = x + (size_t)t * dim;
        float *ot = out + (size_t)t * dim;
        int ids[64];
        float wts[64];
        if ((rc = be->ops->matmul(be, &l->router, 0, xt, logits, 1)) < 0)
            goto done;
        moe_route(logits, l->exp_bias.data, n_experts, k, ids, wts);
        memset(ot, 0, sizeof(float) * dim);
        for (int j = 0; j < k; j++) {
            if ((rc = be->ops->matmul(be, &l->gate_exps, ids[j], xt, g, 1)) < 0 ||
                (rc = be->ops->matmul(be, &l->up_exps, ids[j], xt, u, 1)) < 0 ||
                (rc = be->ops->swiglu(be, g, g, u, fe)) < 0 ||
                (rc = be->ops->matmul(be, &l->down_exps, ids[j], g, y, 1)) < 0)
                goto done;
            for (int i = 0; i < dim; i++)
                ot[i] += wts[j] * y[i];
        }
    }
done:
    free(logits);
    free(g);
    free(y);
    return rc;
}

int ref_gather(struct backend *be, const struct step *st, float *dst, const float *src, int r0,
               int n_rows, int dim)
{
    for (int r = 0; r < n_rows; r++)
        memmove(dst + (size_t)r * dim, src + (size_t)st->out_rows[r0 + r] * dim,
                sizeof(float) * dim);
    return 0;
}

/* ---- host memory ---------------------------------------------------------------------------- */

#define HOST_HDR 64             /* bytes before each block: its total size */
#define HOST_MAP_MIN (1u << 20) /* blocks from this size are mapped (lazily zeroed pages) */

void *cpu_host_alloc(struct backend *be, size_t bytes)
{
    size_t total = (bytes + HOST_HDR + 63) & ~(size_t)63;
    char *p;
    if (total >= HOST_MAP_MIN) {
        p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return NULL;
    } else {
        if (!(p = aligned_alloc(64, total)))
            return NULL;
        memset(p, 0, total);
    }
    *(size_t *)p = total;
    return p + HOST_HDR;
}

void cpu_host_release(struct backend *be, void *ptr)
{
    if (!ptr)
        return;
    char *p = (char *)ptr - HOST_HDR;
    size_t total = *(size_t *)p;
    if (total >= HOST_MAP_MIN)
        munmap(p, total);
    else
        free(p);
}

int cpu_host_copy(struct backend *be, void *dst, const void *src, size_t bytes)
{
    memmove(dst, src, bytes);
    return 0;
}

int cpu_host_zero(struct backend *be, void *dst, size_t bytes)
{
    memset(dst, 0, bytes);
    return 0;
}

static void ref_free(struct backend *be)
{
    free(be);
}

const struct backend_ops backend_ref_ops = {
    .name = "ref",
    .free = ref_free,
    CPU_HOST_MEMORY_OPS,
    .matmul = ref_matmul,
    .embed = ref_embed,
    .rmsnorm = ref_rmsnorm,
    .rope = ref_rope,
    .swiglu = ref_swiglu,
    .add = ref_add,
    .shortconv = ref_shortconv,
    .attention = ref_attention,
    .moe = ref_moe,
    .gather = ref_gather,
};

struct backend *backend_ref_create(const struct backend_config *c)
{
    struct backend *be = calloc(1, sizeof(*be));
    if (be) {
        be->ops = &backend_ref_ops;
        be->n_threads = 1;
        be->host_memory = true;
    }
    return be;
}
