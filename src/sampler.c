/*
 * sampler.c: the sampling chain of sampler.h, in llama.cpp's order: bias, penalties, top-k,
 * top-p, min-p, temperature, draw.
 *
 * struct sampler owns a copy of the params, the penalty window (a ring of the last
 * penalty_last_n tokens, or a growing list for -1) with per-token counts kept in step, and a
 * candidate array of n_vocab entries reused on every call, so sampling never allocates.
 * Invariant: counts[t] == occurrences of t in the window. A mask (constrained decoding) runs
 * right after the penalties, so the filters and the draw only see allowed tokens; logprobs are
 * taken from the same logits, over the whole vocabulary, before the filters cut it.
 * Speed on a 65,536 vocabulary: top-k is a quickselect, min-p a filter fused with the max
 * pass, and top-p sorts only the best slices (64, 256, ...) of what top-k and min-p left. Top-p and
 * min-p both keep a prefix of the candidates sorted by logit, so running min-p first keeps the same
 * set as llama.cpp's top-p-then-min-p (top-p's probabilities are still taken over the set top-k
 * left).
 */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct sampler {
    struct exsa_sampling_params p; /* logit-bias pointers point at the copies below */
    int n_vocab;
    int32_t *bias_id;
    float *bias;
    int32_t *win; /* penalty window: ring of win_cap (last_n > 0) or growing list (-1) */
    int win_cap, win_len, win_head;
    int *counts;     /* [n_vocab] occurrences in the window */
    uint32_t *stamp; /* [n_vocab] penalty pass that last touched a token */
    uint32_t pass;
    struct sampler_cand *cands; /* [n_vocab] */
    uint64_t rng[4];
    struct sampler_mask mask; /* apply == NULL: none */
    int n_top;                /* logprobs: -1 off, else how many alternatives */
    int n_top_got;            /* of the last draw; -1 before the first */
    struct sampler_logprob chosen, top[SAMPLER_MAX_TOP_LOGPROBS];
};

/* ---- random numbers: splitmix64 seeds xoshiro256** ------------------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t *s)
{
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

static void seed_rng(struct sampler *s, uint64_t seed)
{
    if (seed == SAMPLER_SEED_RANDOM) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^ (uint64_t)(uintptr_t)s;
    }
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&seed);
}

double sampler_uniform(struct sampler *s)
{
    return (double)(xoshiro_next(s->rng) >> 11) * 0x1.0p-53;
}

/* ---- life cycle ------------------------------------------------------------------------------ */

static int check_params(const struct exsa_sampling_params *p, int n_vocab)
{
    if (isnan(p->temperature) || isnan(p->top_p) || isnan(p->min_p) || isnan(p->repeat_penalty) ||
        p->repeat_penalty < 0 || isnan(p->presence_penalty) || isnan(p->frequency_penalty) ||
        p->penalty_last_n < -1 || p->n_logit_bias < 0)
        return EXSA_EINVAL;
    if (p->n_logit_bias > 0 && (!p->logit_bias_id || !p->logit_bias))
        return EXSA_EINVAL;
    for (int i = 0; i < p->n_logit_bias; i++)
        if (p->logit_bias_id[i] < 0 || p->logit_bias_id[i] >= n_vocab || isnan(p->logit_bias[i]))
            return EXSA_EINVAL;
    return 0;
}

/* Returns 0, or EXSA_EINVAL for NaN settings, a negative repeat penalty, penalty_last_n < -1 or
 * a logit-bias id outside the vocabulary. repeat_penalty 0 counts as 1 (off). */
int sampler_create(const struct exsa_sampling_params *p, int n_vocab, struct sampler **out)
{
    *out = NULL;
    if (!p || n_vocab <= 0)
        return EXSA_EINVAL;
    int rc = check_params(p, n_vocab);
    if (rc)
        return rc;
    struct sampler *s = calloc(1, sizeof *s);
    if (!s)
        return EXSA_ENOMEM;
    s->p = *p;
    if (s->p.repeat_penalty == 0)
        s->p.repeat_penalty = 1;
    s->n_vocab = n_vocab;
    s->win_cap = p->penalty_last_n > 0 ? p->penalty_last_n : 64;
    s->win = malloc(sizeof *s->win * (size_t)s->win_cap);
    s->counts = calloc((size_t)n_vocab, sizeof *s->counts);
    s->stamp = calloc((size_t)n_vocab, sizeof *s->stamp);
    s->cands = malloc(sizeof *s->cands * (size_t)n_vocab);
    int nb = p->n_logit_bias;
    s->bias_id = malloc(sizeof *s->bias_id * (size_t)(nb ? nb : 1));
    s->bias = malloc(sizeof *s->bias * (size_t)(nb ? nb : 1));
    if (!s->win || !s->counts || !s->stamp || !s->cands || !s->bias_id || !s->bias) {
        sampler_free(s);
        return EXSA_ENOMEM;
    }
    if (nb) {
        memcpy(s->bias_id, p->logit_bias_id, sizeof *s->bias_id * (size_t)nb);
        memcpy(s->bias, p->logit_bias, sizeof *s->bias * (size_t)nb);
    }
    s->p.logit_bias_id = s->bias_id;
    s->p.logit_bias = s->bias;
    s->n_top = s->n_top_got = -1;
    seed_rng(s, p->seed);
    *out = s;
    return 0;
}

void sampler_free(struct sampler *s)
{
    if (!s)
        return;
    free(s->win);
    free(s->counts);
    free(s->stamp);
    free(s->cands);
    free(s->bias_id);
    free(s->bias);
    free(s);
}

void sampler_reset(struct sampler *s)
{
    for (int i = 0; i < s->win_len; i++)
        s->counts[s->win[(s->win_head + i) % s->win_cap]] = 0;
    s->win_len = s->win_head = 0;
}

void sampler_accept(struct sampler *s, int32_t tok)
{
    if (tok < 0 || tok >= s->n_vocab || s->p.penalty_last_n == 0)
        return;
    if (s->win_len == s->win_cap) {
        if (s->p.penalty_last_n > 0) { /* ring full: evict the oldest */
            s->counts[s->win[s->win_head]]--;
            s->win[s->win_head] = tok;
            s->win_head = (s->win_head + 1) % s->win_cap;
            s->counts[tok]++;
            return;
        }
        int32_t *w = realloc(s->win, sizeof *w * (size_t)s->win_cap * 2);
        if (!w)
            return; /* out of memory: the window stops growing, sampling goes on */
        s->win = w;
        s->win_cap *= 2;
    }
    s->win[(s->win_head + s->win_len) % s->win_cap] = tok;
    s->win_len++;
    s->counts[tok]++;
}

/* ---- the chain ------------------------------------------------------------------------------- */

void sampler_apply_penalties(struct sampler *s, float *logits)
{
    const struct exsa_sampling_params *p = &s->p;
    for (int i = 0; i < p->n_logit_bias; i++)
        logits[p->logit_bias_id[i]] += p->logit_bias[i];
    if (p->repeat_penalty == 1 && p->presence_penalty == 0 && p->frequency_penalty == 0)
        return;
    if (++s->pass == 0) { /* the stamps wrapped: clear them so none looks current */
        memset(s->stamp, 0, sizeof *s->stamp * (size_t)s->n_vocab);
        s->pass = 1;
    }
    for (int i = 0; i < s->win_len; i++) {
        int32_t t = s->win[(s->win_head + i) % s->win_cap];
        if (s->stamp[t] == s->pass)
            continue; /* each distinct token once */
        s->stamp[t] = s->pass;
        float l = logits[t];
        l = l <= 0 ? l * p->repeat_penalty : l / p->repeat_penalty;
        logits[t] = l - (float)s->counts[t] * p->frequency_penalty - p->presence_penalty;
    }
}

/* Candidate order: higher logit first, then lower id (so ties are deterministic). */
static int before(const struct sampler_cand *a, const struct sampler_cand *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cmp_cand(const void *x, const void *y)
{
    const struct sampler_cand *a = x, *b = y;
    return before(a, b) ? -1 : before(b, a) ? 1 : 0;
}

static void swap_cand(struct sampler_cand *a, struct sampler_cand *b)
{
    struct sampler_cand t = *a;
    *a = *b;
    *b = t;
}

/* Reorders c[0..n) so that its k first entries are the k best (in no set order). */
static void select_top(struct sampler_cand *c, int n, int k)
{
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2; /* median of three as pivot, moved to hi */
        if (before(&c[mid], &c[lo]))
            swap_cand(&c[mid], &c[lo]);
        if (before(&c[hi], &c[lo]))
            swap_cand(&c[hi], &c[lo]);
        if (before(&c[mid], &c[hi]))
            swap_cand(&c[mid], &c[hi]);
        struct sampler_cand piv = c[hi];
        int store = lo;
        for (int i = lo; i < hi; i++)
            if (before(&c[i], &piv))
                swap_cand(&c[i], &c[store++]);
        swap_cand(&c[store], &c[hi]);
        if (store == k - 1 || store == k)
            return;
        if (store < k)
            lo = store + 1;
        else
            hi = store - 1;
    }
}

static int argmax(const struct sampler *s, const float *logits)
{
    int best = 0;
    for (int i = 1; i < s->n_vocab; i++)
        if (logits[i] > logits[best] || isnan(logits[best]))
            best = i;
    return best;
}

/* exp(l - max) / sum summed in order of rank until it reaches top_p: sorts only as much of
 * c[0..n) as it needs (the best 64, then 256, ... by quickselect, each slice sorted).
 * Returns the count kept (>= 1). */
static int top_p_cut(struct sampler_cand *c, int n, float max, double sum, float top_p)
{
    double cum = 0;
    for (int done = 0, k = 64; done < n; k *= 4) {
        int m = k < n ? k : n;
        if (m < n)
            select_top(c + done, n - done, m - done);
        qsort(c + done, (size_t)(m - done), sizeof *c, cmp_cand);
        for (int i = done; i < m; i++) {
            cum += exp((double)c[i].logit - max) / sum;
            if (cum >= top_p)
                return i + 1;
        }
        done = m;
    }
    return n;
}

/* Fills s->cands with the tokens that pass top-k and min-p (NaN logits never do); *max gets
 * the best logit and *sum top-p's normaliser (over what top-k left, before min-p; only
 * computed when top-p is on). Without top-k, one pass finds the max and a second keeps only
 * min-p's survivors, so the common case never touches n_vocab candidates. */
static int gather(struct sampler *s, const float *l, float *max_out, double *sum_out)
{
    const struct exsa_sampling_params *p = &s->p;
    struct sampler_cand *c = s->cands;
    bool need_sum = p->top_p<1, top_k = p->top_k> 0 && p->top_k < s->n_vocab;
    float max = -INFINITY, thr = -INFINITY;
    double sum = 0;
    int n = 0;
    if (top_k) {
        for (int i = 0; i < s->n_vocab; i++)
            if (!isnan(l[i]))
                c[n++] = (struct sampler_cand){i, l[i], 0};
        if (p->top_k < n) {
            select_top(c, n, p->top_k);
            n = p->top_k;
        }
        for (int i = 0; i < n; i++)
            max = c[i].logit > max ? c[i].logit : max;
    } else {
        for (int i = 0; i < s->n_vocab; i++)
            max = l[i] > max ? l[i] : max; /* NaN compares false */
    }
    if (p->min_p > 0)
        thr = max + logf(p->min_p) < max ? max + logf(p->min_p) : max; /* the best survives */
    if (top_k) {
        int m = 0;
        for (int i = 0; i < n; i++) {
            if (need_sum)
                sum += exp((double)c[i].logit - max);
            if (c[i].logit >= thr)
                c[m++] = c[i];
        }
        n = m;
    } else {
        for (int i = 0; i < s->n_vocab; i++) {
            if (need_sum && l[i] - max > -60) /* smaller terms are below double rounding */
                sum += exp((double)l[i] - max);
            if (l[i] >= thr)
                c[n++] = (struct sampler_cand){i, l[i], 0};
        }
    }
    *max_out = max;
    *sum_out = sum;
    return n;
}

int sampler_filter(struct sampler *s, float *logits, const struct sampler_cand **cands)
{
    struct sampler_cand *c = s->cands;
    *cands = c;
    sampler_apply_penalties(s, logits);
    if (s->mask.apply)
        s->mask.apply(s->mask.ctx, logits, s->n_vocab);
    float max = -INFINITY;
    double sum = 0;
    int n = 0;
    if (s->p.temperature > 0)
        n = gather(s, logits, &max, &sum);
    if (n == 0 || max == -INFINITY) { /* greedy, or every logit banned or NaN */
        int b = argmax(s, logits);
        c[0] = (struct sampler_cand){b, logits[b], 1.0f};
        return 1;
    }
    if (s->p.top_p < 1 && n > 1)
        n = top_p_cut(c, n, max, sum, s->p.top_p);
    float t = s->p.temperature;
    double z = 0;
    for (int i = 0; i < n; i++) {
        c[i].logit /= t;
        z += c[i].p = (float)exp((double)c[i].logit - max / t);
    }
    for (int i = 0; i < n; i++)
        c[i].p = (float)(c[i].p / z);
    return n;
}

/* ---- logprobs ------------------------------------------------------------------------------- */

void sampler_set_mask(struct sampler *s, const struct sampler_mask *m)
{
    if (m && m->apply)
        s->mask = *m;
    else
        memset(&s->mask, 0, sizeof s->mask);
}

int sampler_set_logprobs(struct sampler *s, int n_top)
{
    if (n_top < -1 || n_top > SAMPLER_MAX_TOP_LOGPROBS)
        return EXSA_EINVAL;
    s->n_top = n_top;
    return 0;
}

/* Inserts (id, l) into s->top[0..*n), kept sorted by logit and at most s->n_top long (the
 * caller checked that l makes the cut); ids arrive in increasing order, so on a tie the lower id
 * stays first. */
static void top_insert(struct sampler *s, int *n, int32_t id, float l)
{
    int i = *n < s->n_top ? (*n)++ : *n - 1; /* a new slot, or the last one's */
    while (i > 0 && l > s->top[i - 1].logprob) {
        s->top[i] = s->top[i - 1];
        i--;
    }
    s->top[i] = (struct sampler_logprob){id, l};
}

/* logprobs of the distribution drawn from: softmax(logits / T) over the whole vocabulary, the
 * logits as sampler_filter left them (bias, penalties, mask); T = 1 when greedy. */
static void record_logprobs(struct sampler *s, const float *logits, int32_t chosen)
{
    float t = s->p.temperature > 0 ? s->p.temperature : 1, max = -INFINITY;
    for (int i = 0; i < s->n_vocab; i++)
        max = logits[i] > max ? logits[i] : max; /* NaN compares false */
    double sum = 0;
    int n = 0;
    for (int i = 0; i < s->n_vocab; i++) {
        float l = logits[i];
        if (!(l > -INFINITY)) /* -inf and NaN: cannot be drawn */
            continue;
        sum += exp(((double)l - max) / t);
        if (s->n_top > 0 && (n < s->n_top || l > s->top[n - 1].logprob))
            top_insert(s, &n, i, l);
    }
    double lse = (double)max / t + log(sum);
    for (int i = 0; i < n; i++)
        s->top[i].logprob = (float)((double)s->top[i].logprob / t - lse);
    float lc = logits[chosen];
    s->chosen =
        (struct sampler_logprob){chosen, lc > -INFINITY ? (float)(lc / t - lse) : -INFINITY};
    s->n_top_got = n;
}

int sampler_logprobs(const struct sampler *s, struct sampler_logprob *chosen,
                     const struct sampler_logprob **top)
{
    if (s->n_top < 0 || s->n_top_got < 0)
        return -1;
    *chosen = s->chosen;
    *top = s->top;
    return s->n_top_got;
}

/* ---- the draw -------------------------------------------------------------------------------- */

static int32_t draw(struct sampler *s, float *logits)
{
    const struct sampler_cand *c;
    int n = sampler_filter(s, logits, &c);
    if (n == 1)
        return c[0].id;
    double u = sampler_uniform(s), cum = 0;
    for (int i = 0; i < n; i++) {
        cum += c[i].p;
        if (u < cum)
            return c[i].id;
    }
    return c[n - 1].id; /* rounding left u just above the total */
}

int32_t sampler_sample(struct sampler *s, float *logits)
{
    int32_t tok = draw(s, logits);
    if (s->n_top >= 0)
        record_logprobs(s, logits, tok);
    if (s->mask.accept)
        s->mask.accept(s->mask.ctx, tok);
    return tok;
}
