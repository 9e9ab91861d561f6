/*
 * test_pcache.c: the prompt cache (src/pcache.c) over a real engine on lfm2-tiny-F32 (conv and
 * attention layers). A restored prefix gives exactly the logits of a cold run of the same
 * tokens on the reference backend (restored where the prompt, or a reply fed token by token,
 * left a checkpoint), and exactly those of the sequence it was taken from on the fast CPU
 * backend; a lookup restores the longest checkpoint whose whole prefix matches and none past
 * n_max or past a differing token; under a small bound the least recently used checkpoints go
 * first, the cache never holds more than its bound, and what it keeps still restores exactly.
 */
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "harness.h"
#include "pcache.h"

#define V 1024 /* the fixture's vocabulary */
#define CHUNK 64

#include "pcache-util.h" /* uses V and CHUNK */

static struct exsa_model *g_model;

static struct exsa_engine *engine(enum exsa_backend_kind kind)
{
    struct exsa_engine_params p;
    exsa_engine_params_default(&p);
    p.backend = kind, p.n_threads = 2, p.n_ctx = 512, p.n_seq_max = 4, p.n_batch = CHUNK;
    struct exsa_engine *e = NULL;
    char err[256];
    CHECK(exsa_engine_create(g_model, &p, &e, err, sizeof err) == 0, "engine: %s", err);
    return e;
}

/* Reference backend: a hit gives the cold run's logits, bit for bit. */
static void test_hit_equals_cold(void)
{
    struct exsa_engine *e = engine(EXSA_BACKEND_REF);
    struct pcache *pc = e ? pcache_new(e, 64u << 20) : NULL;
    CHECK(pc != NULL, "pcache_new");
    if (!pc)
        return;
    float *a[2] = {malloc(sizeof(float) * V), malloc(sizeof(float) * V)};
    float *b[2] = {malloc(sizeof(float) * V), malloc(sizeof(float) * V)};
    two_hits(e, pc, a, b);
    CHECK(!memcmp(a[0], b[0], sizeof(float) * V), "restored at 100: logits differ from a cold run");
    CHECK(!memcmp(a[1], b[1], sizeof(float) * V), "restored at 70: logits differ from a cold run");
    int32_t t[200];
    tokens(t, 200, 1);
    /* a reply: positions 100..131 fed one token at a time (decode steps), checkpoint at 132 */
    put(e, pc, t, (const int[]){100, 132}, 2, 1);
    cold(e, t, 170, a[0]);
    warm(e, pc, t, 170, 132, b[0]);
    CHECK(!memcmp(a[0], b[0], sizeof(float) * V), "restored after a reply: logits differ");
    free(a[0]), free(a[1]), free(b[0]), free(b[1]);
    pcache_free(pc);
    exsa_engine_free(e);
}

/* Fast CPU backend: a restored sequence goes on exactly as the one the checkpoint came from. */
static void test_hit_equals_source_cpu(void)
{
    struct exsa_engine *e = engine(EXSA_BACKEND_CPU);
    struct pcache *pc = e ? pcache_new(e, 64u << 20) : NULL;
    CHECK(pc != NULL, "pcache_new");
    if (!pc)
        return;
    int32_t t[200];
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
    tokens(t, 200, 3);
    int src = exsa_seq_new(e);
    CHECK(feed(e, src, t, 0, 96, CHUNK, a) == 0, "prefill");
    struct exsa_snapshot *s = snap(e, src);
    CHECK(pcache_insert(pc, src, t, 96, &s, 1) == 0, "insert");
    CHECK(feed(e, src, t, 96, 60, CHUNK, a) == 0, "source goes on");
    warm(e, pc, t, 156, 96, b);
    CHECK(!memcmp(a, b, sizeof(float) * V), "restored sequence differs from its source");
    exsa_seq_free(e, src);
    free(a), free(b);
    pcache_free(pc);
    exsa_engine_free(e);
}

/* Which checkpoint a lookup finds. */
static void test_longest_match(void)
{
    struct exsa_engine *e = engine(EXSA_BACKEND_REF);
    struct pcache *pc = e ? pcache_new(e, 64u << 20) : NULL;
    if (!pc)
        return;
    int32_t t[300], u[300];
    tokens(t, 300, 4);
    put(e, pc, t, (const int[]){40, 120}, 2, CHUNK);
    memcpy(u, t, sizeof u);
    u[60] = t[60] == 10 ? 11 : 10; /* diverges inside the node [40, 120) */
    put(e, pc, u, (const int[]){100}, 1, CHUNK);
    struct pcache_stats st;
    pcache_get_stats(pc, &st);
    /* [0,40) [40,60) then [60,120) and [60,100): a split where u left t's path */
    CHECK(st.nodes == 4 && st.checkpoints == 3, "nodes %d checkpoints %d", st.nodes,
          st.checkpoints);
    int seq = exsa_seq_new(e);
    CHECK(pcache_restore(pc, seq, t, 119) == 40, "n_max below 120: the checkpoint at 40");
    exsa_seq_free(e, seq), seq = exsa_seq_new(e);
    CHECK(pcache_restore(pc, seq, t, 299) == 120, "t: 120");
    exsa_seq_free(e, seq), seq = exsa_seq_new(e);
    CHECK(pcache_restore(pc, seq, u, 299) == 100, "u: 100");
    exsa_seq_free(e, seq), seq = exsa_seq_new(e);
    int32_t w[300];
    memcpy(w, t, sizeof w);
    w[119] += 1; /* differs in the last token before 120 */
    CHECK(pcache_restore(pc, seq, w, 299) == 40, "a token differs at 119: 40");
    exsa_seq_free(e, seq), seq = exsa_seq_new(e);
    w[0] += 1;
    CHECK(pcache_restore(pc, seq, w, 299) == 0, "differs at 0: a miss");
    CHECK(exsa_seq_len(e, seq) == 0, "a miss leaves the sequence empty");
    exsa_seq_free(e, seq);
    /* the same prefix again adds nothing */
    size_t before = (pcache_get_stats(pc, &st), st.bytes);
    put(e, pc, t, (const int[]){40, 120}, 2, CHUNK);
    pcache_get_stats(pc, &st);
    CHECK(st.bytes == before && st.nodes == 4, "re-insert grew the cache: %zu -> %zu", before,
          st.bytes);
    CHECK(st.hits == 4 && st.misses == 1 && st.reused_tokens == 40 + 120 + 100 + 40,
          "hits %llu misses %llu reused %llu", st.hits, st.misses, st.reused_tokens);
    pcache_free(pc);
    exsa_engine_free(e);
}

/* A small bound: least recently used first, never above the bound, still exact. */
static void test_eviction(void)
{
    struct exsa_engine *e = engine(EXSA_BACKEND_REF);
    const size_t row = e ? kv_row_bytes(engine_kv(e)) : 0;
    const size_t cap = 3 * 100 * (row + 4) + 40000; /* about three 100-token prompts */
    struct pcache *pc = e ? pcache_new(e, cap) : NULL;
    if (!pc)
        return;
    enum { N = 8 };
    int32_t t[N][160];
    struct pcache_stats st;
    for (int k = 0; k < N; k++) {
        tokens(t[k], 160, 10 + k);
        put(e, pc, t[k], (const int[]){100}, 1, CHUNK);
        pcache_get_stats(pc, &st);
        CHECK(st.bytes <= cap, "after insert %d: %zu bytes > bound %zu", k, st.bytes, cap);
        if (k == 3) { /* touch prompt 1: it outlives 2 and 3 */
            int seq = exsa_seq_new(e);
            CHECK(pcache_restore(pc, seq, t[1], 159) == 100, "prompt 1 evicted too early");
            exsa_seq_free(e, seq);
        }
    }
    CHECK(st.evictions >= N - 3 && st.checkpoints <= 3 && st.checkpoints >= 2,
          "evictions %llu checkpoints %d", st.evictions, st.checkpoints);
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
    cold(e, t[N - 1], 150, a);
    warm(e, pc, t[N - 1], 150, 100, b);
    CHECK(!memcmp(a, b, sizeof(float) * V), "the newest prompt, restored: logits differ");
    int seq = exsa_seq_new(e);
    CHECK(pcache_restore(pc, seq, t[0], 159) == 0, "the oldest prompt is still there");
    exsa_seq_free(e, seq);
    /* LRU: restore N-2, insert one more: N-3 goes, N-2 stays */
    warm(e, pc, t[N - 2], 150, 100, b);
    int32_t x[160];
    tokens(x, 160, 99);
    put(e, pc, x, (const int[]){100}, 1, CHUNK);
    seq = exsa_seq_new(e);
    CHECK(pcache_restore(pc, seq, t[N - 2], 159) == 100, "recently used prompt evicted");
    exsa_seq_free(e, seq), seq = exsa_seq_new(e);
    CHECK(pcache_restore(pc, seq, t[N - 3], 159) == 0, "least recently used prompt kept");
    exsa_seq_free(e, seq);
    /* a prompt larger than the whole bound is not kept, and nothing breaks */
    int32_t big[500];
    tokens(big, 500, 77);
    put(e, pc, big, (const int[]){100, 480}, 2, CHUNK);
    pcache_get_stats(pc, &st);
    CHECK(st.bytes <= cap, "%zu bytes > bound %zu", st.bytes, cap);
    seq = exsa_seq_new(e);
    int got = pcache_restore(pc, seq, big, 499);
    CHECK(got == 100, "big prompt: the checkpoint that fits (100), got %d", got);
    exsa_seq_free(e, seq);
    free(a), free(b);
    pcache_free(pc);
    exsa_engine_free(e);
}

int main(void)
{
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/lfm2-tiny-F32.gguf", fixtures_dir());
    CHECK(exsa_model_load(path, &g_model, err, sizeof err) == 0, "load %s: %s", path, err);
    if (!g_model) {
        h_failed++;
        TEST_END();
    }
    RUN(test_hit_equals_cold);
    RUN(test_hit_equals_source_cpu);
    RUN(test_longest_match);
    RUN(test_eviction);
    exsa_model_free(g_model);
    TEST_END();
}
