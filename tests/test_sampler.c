/*
 * test_sampler.c: the sampling chain of src/sampler.c on constructed logits: fixed seeds give
 * fixed tokens, top-k 1 is greedy, top-p/min-p keep exactly the expected set, penalties and
 * bias change logits as llama.cpp does, and draws follow the softmax (chi-square bound);
 * logprobs match a reference log-softmax of the processed logits, greedy's token first; a mask
 * hook bars tokens from draws and logprobs alike.
 */
#include <math.h>
#include <string.h>

#include "harness.h"
#include "sampler.h"

#define NV 64

static struct exsa_sampling_params plain(void)
{
    struct exsa_sampling_params p;
    memset(&p, 0, sizeof p);
    p.temperature = 1;
    p.top_p = 1;
    p.repeat_penalty = 1;
    p.penalty_last_n = 64;
    p.seed = 1234;
    return p;
}

/* logits[i] = a smooth, non-monotonic function of i (distinct values). */
static void fill(float *l, int n)
{
    for (int i = 0; i < n; i++)
        l[i] = (float)(sin(i * 1.7) * 3.0 + i * 0.01);
}

static int argmax(const float *l, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > l[b])
            b = i;
    return b;
}

static int draw_seq(const struct exsa_sampling_params *p, int32_t *out, int n)
{
    struct sampler *s;
    if (sampler_create(p, NV, &s))
        return -1;
    float l[NV];
    for (int i = 0; i < n; i++) {
        fill(l, NV);
        out[i] = sampler_sample(s, l);
    }
    sampler_free(s);
    return 0;
}

static void test_seeded_repeatable(void)
{
    struct exsa_sampling_params p = plain();
    int32_t a[50], b[50], c[50];
    CHECK(draw_seq(&p, a, 50) == 0, "create");
    CHECK(draw_seq(&p, b, 50) == 0, "create");
    p.seed = 99;
    CHECK(draw_seq(&p, c, 50) == 0, "create");
    CHECK(memcmp(a, b, sizeof a) == 0, "same seed, same tokens");
    CHECK(memcmp(a, c, sizeof a) != 0, "another seed gives another sequence");
    int distinct = 0;
    for (int i = 1; i < 50; i++)
        distinct += a[i] != a[0];
    CHECK(distinct > 0, "temperature 1 draws vary");
    /* A fixed reference: the first draws of seed 1234 on these logits never change. */
    p.seed = 1234;
    int32_t d[5];
    draw_seq(&p, d, 5);
    int32_t want[5] = {1, 56, 48, 56, 8};
    CHECK(memcmp(d, want, sizeof d) == 0, "seed 1234 draws %d %d %d %d %d", d[0], d[1], d[2], d[3],
          d[4]);
}

static void test_greedy_and_topk1(void)
{
    float l[NV], l2[NV];
    fill(l, NV);
    int best = argmax(l, NV);
    struct exsa_sampling_params p = plain();
    p.temperature = 0;
    struct sampler *s;
    CHECK(sampler_create(&p, NV, &s) == 0, "create");
    for (int i = 0; i < 5; i++) {
        memcpy(l2, l, sizeof l);
        CHECK(sampler_sample(s, l2) == best, "greedy is the argmax");
    }
    sampler_free(s);
    p = plain();
    p.top_k = 1;
    p.temperature = 5;
    CHECK(sampler_create(&p, NV, &s) == 0, "create");
    for (int i = 0; i < 20; i++) {
        memcpy(l2, l, sizeof l);
        CHECK(sampler_sample(s, l2) == best, "top-k 1 equals greedy");
    }
    sampler_free(s);
}

static int in_set(const struct sampler_cand *c, int n, int id)
{
    for (int i = 0; i < n; i++)
        if (c[i].id == id)
            return 1;
    return 0;
}

/* Logits log(p) for probabilities p (already normalised). */
static void from_probs(float *l, const double *pr, int n)
{
    for (int i = 0; i < n; i++)
        l[i] = (float)log(pr[i]);
}

static void test_top_p_cut(void)
{
    double pr[8] = {0.05, 0.4, 0.02, 0.25, 0.15, 0.08, 0.03, 0.02};
    float l[8];
    struct exsa_sampling_params p = plain();
    struct sampler *s;
    const struct sampler_cand *c;
    /* sorted: 1 (.40) 3 (.25) 4 (.15) 5 (.08) 0 (.05) ... cumulative .40 .65 .80 .88 .93 */
    struct {
        float top_p;
        int n;
    } cases[] = {{0.3f, 1}, {0.6f, 2}, {0.7f, 3}, {0.85f, 4}, {0.9f, 5}};
    for (int k = 0; k < 5; k++) {
        p.top_p = cases[k].top_p;
        sampler_create(&p, 8, &s);
        from_probs(l, pr, 8);
        int n = sampler_filter(s, l, &c);
        CHECK(n == cases[k].n, "top_p %.2f kept %d, want %d", cases[k].top_p, n, cases[k].n);
        int order[5] = {1, 3, 4, 5, 0};
        for (int i = 0; i < n && i < 5; i++)
            CHECK(c[i].id == order[i], "top_p survivor %d is %d, want %d", i, c[i].id, order[i]);
        double sum = 0;
        for (int i = 0; i < n; i++)
            sum += c[i].p;
        CHECK(fabs(sum - 1) < 1e-5, "survivors renormalised (%f)", sum);
        sampler_free(s);
    }
}

static void test_min_p_cut(void)
{
    double pr[8] = {0.05, 0.4, 0.02, 0.25, 0.15, 0.08, 0.03, 0.02};
    float l[8];
    struct exsa_sampling_params p = plain();
    struct sampler *s;
    const struct sampler_cand *c;
    /* min_p 0.2 of max .40 = .08: keeps .40 .25 .15 .08 (ids 1 3 4 5) */
    p.min_p = 0.2f;
    sampler_create(&p, 8, &s);
    from_probs(l, pr, 8);
    int n = sampler_filter(s, l, &c);
    CHECK(n == 4, "min_p 0.2 kept %d, want 4", n);
    CHECK(in_set(c, n, 1) && in_set(c, n, 3) && in_set(c, n, 4) && in_set(c, n, 5), "set");
    sampler_free(s);
    /* min_p 0.5 -> threshold .20: ids 1 3 */
    p.min_p = 0.5f;
    sampler_create(&p, 8, &s);
    from_probs(l, pr, 8);
    n = sampler_filter(s, l, &c);
    CHECK(n == 2 && in_set(c, n, 1) && in_set(c, n, 3), "min_p 0.5 kept %d", n);
    sampler_free(s);
    /* min_p with top-p: the smaller prefix wins (top_p .7 -> 3, min_p .2 -> 4) */
    p.min_p = 0.2f;
    p.top_p = 0.7f;
    sampler_create(&p, 8, &s);
    from_probs(l, pr, 8);
    n = sampler_filter(s, l, &c);
    CHECK(n == 3, "top_p .7 + min_p .2 kept %d, want 3", n);
    sampler_free(s);
    /* top-k 2 then top-p .9: top-p probabilities are over the two left (.4/.65, .25/.65) */
    p = plain();
    p.top_k = 2;
    p.top_p = 0.6f;
    sampler_create(&p, 8, &s);
    from_probs(l, pr, 8);
    n = sampler_filter(s, l, &c);
    CHECK(n == 1 && c[0].id == 1, "top_k 2 + top_p .6 kept %d (0.615 >= 0.6)", n);
    sampler_free(s);
}

static void test_top_k_large_vocab(void)
{
    enum { N = 65536, K = 40 };
    static float l[N], ref[N];
    for (int i = 0; i < N; i++)
        l[i] = (float)((i * 2654435761u) % 100003) / 1000.0f;
    memcpy(ref, l, sizeof l);
    struct exsa_sampling_params p = plain();
    p.top_k = K;
    struct sampler *s;
    const struct sampler_cand *c;
    CHECK(sampler_create(&p, N, &s) == 0, "create");
    int n = sampler_filter(s, l, &c);
    CHECK(n == K, "top-k kept %d", n);
    /* the K-th largest value of ref */
    float thr = -1;
    int above = 0;
    for (int i = 0; i < n; i++)
        thr = (thr < 0 || ref[c[i].id] < thr) ? ref[c[i].id] : thr;
    for (int i = 0; i < N; i++)
        above += ref[i] > thr;
    CHECK(above == K - 1, "the %d kept are the largest (%d strictly above the smallest kept)", K,
          above);
    sampler_free(s);
}

static int cmp_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x > y ? -1 : x < y;
}

/* top-p over many survivors (its partial sort works in slices of 64, 256, ...): the kept set
 * is the shortest prefix of the fully sorted list whose mass reaches top_p. */
static void test_top_p_many(void)
{
    enum { N = 5000 };
    static float l[N], sorted[N];
    float tps[3] = {0.2f, 0.6f, 0.97f};
    for (int t = 0; t < 3; t++) {
        for (int i = 0; i < N; i++)
            l[i] = (float)((i * 7919) % N) / 1000.0f;
        memcpy(sorted, l, sizeof l);
        qsort(sorted, N, sizeof *sorted, cmp_desc);
        double z = 0, cum = 0;
        for (int i = 0; i < N; i++)
            z += exp(sorted[i] - sorted[0]);
        int want = N;
        for (int i = 0; i < N; i++) {
            cum += exp(sorted[i] - sorted[0]) / z;
            if (cum >= tps[t]) {
                want = i + 1;
                break;
            }
        }
        struct exsa_sampling_params p = plain();
        p.top_p = tps[t];
        struct sampler *s;
        const struct sampler_cand *c;
        sampler_create(&p, N, &s);
        int n = sampler_filter(s, l, &c);
        CHECK(n == want, "top_p %.2f kept %d, want %d", tps[t], n, want);
        int ok = 1;
        for (int i = 0; i < n && ok; i++)
            ok = fabsf(c[i].logit - sorted[i]) < 1e-6f;
        CHECK(ok, "survivors are the sorted prefix");
        sampler_free(s);
    }
}

static void test_penalties(void)
{
    float l[NV];
    for (int i = 0; i < NV; i++)
        l[i] = 1.0f;
    l[3] = 2.0f, l[4] = -2.0f, l[5] = 0.0f;
    struct exsa_sampling_params p = plain();
    p.repeat_penalty = 2.0f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    p.penalty_last_n = 4;
    struct sampler *s;
    sampler_create(&p, NV, &s);
    int32_t hist[] = {9, 3, 4, 4, 5}; /* 9 falls out of the window of 4 */
    for (int i = 0; i < 5; i++)
        sampler_accept(s, hist[i]);
    sampler_apply_penalties(s, l);
    CHECK(fabsf(l[3] - (2.0f / 2 - 0.25f - 0.5f)) < 1e-6, "positive logit divided: %f", l[3]);
    CHECK(fabsf(l[4] - (-2.0f * 2 - 2 * 0.25f - 0.5f)) < 1e-6, "negative multiplied, count 2: %f",
          l[4]);
    CHECK(fabsf(l[5] - (0.0f - 0.25f - 0.5f)) < 1e-6, "zero logit: %f", l[5]);
    CHECK(l[9] == 1.0f, "token 9 left the window: %f", l[9]);
    CHECK(l[10] == 1.0f, "unseen token untouched");
    sampler_reset(s);
    for (int i = 0; i < NV; i++)
        l[i] = 1.0f;
    sampler_apply_penalties(s, l);
    CHECK(l[3] == 1.0f && l[4] == 1.0f, "reset empties the window");
    sampler_free(s);
    /* penalty_last_n 0: off */
    p.penalty_last_n = 0;
    sampler_create(&p, NV, &s);
    sampler_accept(s, 3);
    l[3] = 2;
    sampler_apply_penalties(s, l);
    CHECK(l[3] == 2.0f, "window 0 disables penalties");
    sampler_free(s);
}

static void test_bias_and_greedy_penalty(void)
{
    float l[NV];
    fill(l, NV);
    int best = argmax(l, NV);
    int32_t id = 7;
    float b = 100;
    struct exsa_sampling_params p = plain();
    p.temperature = 0;
    p.n_logit_bias = 1;
    p.logit_bias_id = &id;
    p.logit_bias = &b;
    struct sampler *s;
    CHECK(sampler_create(&p, NV, &s) == 0, "create");
    CHECK(sampler_sample(s, l) == 7, "bias +100 forces the token");
    sampler_free(s);
    b = -INFINITY;
    id = best;
    fill(l, NV);
    sampler_create(&p, NV, &s);
    CHECK(sampler_sample(s, l) != best, "bias -inf bans the argmax");
    sampler_free(s);
    id = NV; /* out of range */
    CHECK(sampler_create(&p, NV, &s) == EXSA_EINVAL, "bias id out of range rejected");
    p = plain();
    p.temperature = NAN;
    CHECK(sampler_create(&p, NV, &s) == EXSA_EINVAL, "NaN temperature rejected");
}

/* Draws follow softmax(l / T): a chi-square statistic over 8 tokens stays under the 99.9%
 * quantile for 7 degrees of freedom (24.3). */
static void test_distribution(void)
{
    enum { N = 8, DRAWS = 200000 };
    float base[N] = {1.0f, 0.5f, 0.0f, -0.5f, 2.0f, 1.5f, -1.0f, 0.2f};
    float temps[2] = {1.0f, 0.7f};
    for (int t = 0; t < 2; t++) {
        struct exsa_sampling_params p = plain();
        p.temperature = temps[t];
        p.seed = 42 + (uint64_t)t;
        struct sampler *s;
        sampler_create(&p, N, &s);
        double pr[N], z = 0;
        for (int i = 0; i < N; i++)
            z += pr[i] = exp(base[i] / temps[t]);
        long cnt[N] = {0};
        for (int d = 0; d < DRAWS; d++) {
            float l[N];
            memcpy(l, base, sizeof l);
            cnt[sampler_sample(s, l)]++;
        }
        double chi = 0;
        for (int i = 0; i < N; i++) {
            double e = DRAWS * pr[i] / z;
            chi += (cnt[i] - e) * (cnt[i] - e) / e;
        }
        CHECK(chi < 24.3, "T=%.1f chi-square %.2f over 7 dof", temps[t], chi);
        sampler_free(s);
    }
}

/* ---- logprobs and the mask hook ------------------------------------------------------------- */

/* log-softmax of l / t over n logits, -INFINITY entries excluded (the reference). */
static void log_softmax(const float *l, int n, double t, double *out)
{
    double max = -INFINITY, sum = 0;
    for (int i = 0; i < n; i++)
        max = l[i] > max ? l[i] : max;
    for (int i = 0; i < n; i++)
        sum += l[i] > -INFINITY ? exp((l[i] - max) / t) : 0;
    for (int i = 0; i < n; i++)
        out[i] = l[i] > -INFINITY ? (l[i] - max) / t - log(sum) : -INFINITY;
}

/* The logprobs agree with the reference, are sorted, and their top is the best token. */
static void check_logprobs(struct sampler *s, const float *processed, double t, int32_t tok,
                           int n_top, const char *what)
{
    double ref[NV];
    log_softmax(processed, NV, t, ref);
    struct sampler_logprob c;
    const struct sampler_logprob *top;
    int n = sampler_logprobs(s, &c, &top);
    CHECK(n == n_top, "%s: %d alternatives, want %d", what, n, n_top);
    CHECK(c.id == tok && fabs(c.logprob - ref[tok]) < 1e-5, "%s: chosen %d lp %f vs %f", what, c.id,
          c.logprob, ref[tok]);
    for (int i = 0; i < n; i++) {
        CHECK(fabs(top[i].logprob - ref[top[i].id]) < 1e-5, "%s: top %d lp", what, i);
        CHECK(i == 0 || top[i].logprob <= top[i - 1].logprob, "%s: sorted at %d", what, i);
    }
    int best = argmax(processed, NV);
    CHECK(n == 0 || top[0].id == best, "%s: top[0] %d is the best %d", what, top[0].id, best);
}

/* At temperature 0 the chosen token is first in top_logprobs; the distribution is the one after
 * bias and penalties (the logits as the sampler left them). */
static void test_logprobs_greedy(void)
{
    struct exsa_sampling_params p = plain();
    p.temperature = 0;
    p.repeat_penalty = 1.3f;
    int32_t bias_id[1] = {5};
    float bias[1] = {4};
    p.n_logit_bias = 1, p.logit_bias_id = bias_id, p.logit_bias = bias;
    struct sampler *s;
    CHECK(sampler_create(&p, NV, &s) == 0, "create");
    CHECK(sampler_set_logprobs(s, 21) == EXSA_EINVAL && sampler_set_logprobs(s, -2) == EXSA_EINVAL,
          "top_logprobs range 0..20");
    struct sampler_logprob c;
    const struct sampler_logprob *top;
    CHECK(sampler_logprobs(s, &c, &top) == -1, "off by default");
    CHECK(sampler_set_logprobs(s, 20) == 0, "on");
    CHECK(sampler_logprobs(s, &c, &top) == -1, "nothing drawn yet");
    float l[NV];
    for (int step = 0; step < 6; step++) {
        fill(l, NV);
        for (int i = 0; i < NV; i++)
            l[i] += (float)((step * 7 + i * 13) % 11) * 0.3f;
        int32_t tok = sampler_sample(s, l); /* l now holds the processed logits */
        sampler_accept(s, tok);
        CHECK(tok == argmax(l, NV), "greedy");
        check_logprobs(s, l, 1.0, tok, 20, "greedy");
    }
    sampler_set_logprobs(s, 0);
    fill(l, NV);
    int32_t tok = sampler_sample(s, l);
    CHECK(sampler_logprobs(s, &c, &top) == 0 && c.id == tok, "0 alternatives: the chosen only");
    sampler_free(s);
}

/* With temperature and top-k the logprobs are the whole softmax of logits / T, not the cut. */
static void test_logprobs_temperature(void)
{
    struct exsa_sampling_params p = plain();
    p.temperature = 2;
    p.top_k = 3;
    struct sampler *s;
    CHECK(sampler_create(&p, NV, &s) == 0 && sampler_set_logprobs(s, 5) == 0, "create");
    float l[NV];
    for (int i = 0; i < 10; i++) {
        fill(l, NV);
        int32_t tok = sampler_sample(s, l);
        check_logprobs(s, l, 2.0, tok, 5, "T=2");
    }
    sampler_free(s);
}

struct even_mask {
    int applied, accepted;
    int32_t last;
};

static void even_apply(void *ctx, float *l, int n)
{
    ((struct even_mask *)ctx)->applied++;
    for (int i = 1; i < n; i += 2)
        l[i] = -INFINITY;
}

static void even_accept(void *ctx, int32_t tok)
{
    struct even_mask *m = ctx;
    m->accepted++;
    m->last = tok;
}

/* The sampler draws only tokens the mask allows, tells it each draw, and reports logprobs of
 * the masked distribution. */
static void test_mask_hook(void)
{
    struct even_mask em = {0, 0, -1};
    struct sampler_mask m = {even_apply, even_accept, &em};
    struct exsa_sampling_params p = plain();
    struct sampler *s;
    CHECK(sampler_create(&p, NV, &s) == 0 && sampler_set_logprobs(s, 20) == 0, "create");
    sampler_set_mask(s, &m);
    float l[NV];
    int odd = 0;
    for (int i = 0; i < 200; i++) {
        fill(l, NV);
        int32_t tok = sampler_sample(s, l);
        odd += tok & 1;
        CHECK(em.last == tok, "accept got the drawn token");
        struct sampler_logprob c;
        const struct sampler_logprob *top;
        int n = sampler_logprobs(s, &c, &top);
        for (int k = 0; k < n; k++)
            odd += top[k].id & 1;
        if (i == 0)
            check_logprobs(s, l, 1.0, tok, 20, "masked");
    }
    CHECK(odd == 0, "%d odd tokens drawn or listed", odd);
    CHECK(em.applied == 200 && em.accepted == 200, "applied %d accepted %d", em.applied,
          em.accepted);
    /* greedy under the mask: the best even token, first in the list */
    sampler_free(s);
    p.temperature = 0;
    CHECK(sampler_create(&p, NV, &s) == 0 && sampler_set_logprobs(s, 3) == 0, "create");
    sampler_set_mask(s, &m);
    fill(l, NV);
    int32_t tok = sampler_sample(s, l);
    check_logprobs(s, l, 1.0, tok, 3, "greedy masked");
    CHECK(!(tok & 1), "even");
    sampler_set_mask(s, NULL);
    fill(l, NV);
    CHECK(sampler_sample(s, l) == argmax(l, NV), "mask removed");
    sampler_free(s);
}

int main(void)
{
    RUN(test_seeded_repeatable);
    RUN(test_greedy_and_topk1);
    RUN(test_top_p_cut);
    RUN(test_min_p_cut);
    RUN(test_top_k_large_vocab);
    RUN(test_top_p_many);
    RUN(test_penalties);
    RUN(test_bias_and_greedy_penalty);
    RUN(test_distribution);
    RUN(test_logprobs_greedy);
    RUN(test_logprobs_temperature);
    RUN(test_mask_hook);
    TEST_END();
}
