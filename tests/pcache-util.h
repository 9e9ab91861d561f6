/*
 * pcache-util.h: feeding a sequence, filling the prompt cache and restoring from it, for
 * test_pcache.c and tests/gpu/test_cuda.c. The includer defines V (the model's vocabulary) and
 * CHUNK (entries a feed step at most).
 */
#ifndef EXSA_TEST_PCACHE_UTIL_H
#define EXSA_TEST_PCACHE_UTIL_H

#include <stdlib.h>
#include <string.h>

#include "exsa.h"
#include "harness.h"
#include "pcache.h"

/* Feeds toks[p0..p0 + n) to seq in chunks of `chunk`; the last one's logits into out. */
static inline int feed(struct exsa_engine *e, int seq, const int32_t *toks, int p0, int n,
                       int chunk, float *out)
{
    int32_t pos[CHUNK], sq[CHUNK];
    for (int off = 0; off < n; off += chunk) {
        int m = n - off < chunk ? n - off : chunk;
        for (int i = 0; i < m; i++)
            pos[i] = p0 + off + i, sq[i] = seq;
        struct exsa_batch b = {m, toks + p0 + off, pos, sq, NULL, NULL};
        int rc = exsa_decode(e, &b, out);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* A fixed pseudo-random token sequence (seeded), ids 10..1009. */
static inline void tokens(int32_t *t, int n, unsigned seed)
{
    for (int i = 0; i < n; i++)
        t[i] = (int32_t)((i + 1) * 7919u * (seed * 2 + 1) % 1000u) + 10;
}

static inline struct exsa_snapshot *snap(struct exsa_engine *e, int seq)
{
    struct exsa_snapshot *s = NULL;
    CHECK(exsa_seq_snapshot(e, seq, &s) == 0, "snapshot");
    return s;
}

/* Puts toks[0..n) into pc through a sequence with checkpoints at lengths cut[0..n_cut)
 * (ascending, the last == n), fed in chunks of `chunk`. */
static inline void put(struct exsa_engine *e, struct pcache *pc, const int32_t *toks,
                       const int *cut, int n_cut, int chunk)
{
    struct exsa_snapshot *ss[8];
    float *lg = malloc(sizeof(float) * V);
    int seq = exsa_seq_new(e), at = 0;
    for (int i = 0; i < n_cut; i++) {
        CHECK(feed(e, seq, toks, at, cut[i] - at, chunk, lg) == 0, "feed to %d", cut[i]);
        at = cut[i];
        ss[i] = snap(e, seq);
    }
    CHECK(pcache_insert(pc, seq, toks, at, ss, n_cut) == 0, "insert");
    exsa_seq_free(e, seq);
    free(lg);
}

/* Logits after toks[0..n) from a restore (expecting `want` positions restored) then the rest
 * fed in CHUNK chunks. */
static inline void warm(struct exsa_engine *e, struct pcache *pc, const int32_t *toks, int n,
                        int want, float *out)
{
    int seq = exsa_seq_new(e);
    int got = pcache_restore(pc, seq, toks, n - 1);
    CHECK(got == want, "restored %d positions, expected %d", got, want);
    CHECK(exsa_seq_len(e, seq) == (got > 0 ? got : 0), "length %d", exsa_seq_len(e, seq));
    if (got >= 0)
        CHECK(feed(e, seq, toks, got, n - got, CHUNK, out) == 0, "feed rest");
    exsa_seq_free(e, seq);
}

static inline void cold(struct exsa_engine *e, const int32_t *toks, int n, float *out)
{
    int seq = exsa_seq_new(e);
    CHECK(feed(e, seq, toks, 0, n, CHUNK, out) == 0, "cold");
    exsa_seq_free(e, seq);
}

/* The two hits of a cached 100-token prompt (checkpoints at 70, a message start, and 100, its
 * end): the prompt continued to 150 tokens (restores 100) and another that shares its first 85
 * tokens, to 160 (restores 70). cold_lg[i], warm_lg[i]: the last logits of a cold run and of
 * the run from the restored prefix. */
static inline void two_hits(struct exsa_engine *e, struct pcache *pc, float *cold_lg[2],
                            float *warm_lg[2])
{
    int32_t t[200], u[200];
    tokens(t, 200, 1);
    put(e, pc, t, (const int[]){70, 100}, 2, CHUNK);
    cold(e, t, 150, cold_lg[0]);
    warm(e, pc, t, 150, 100, warm_lg[0]);
    memcpy(u, t, sizeof u);
    tokens(u + 85, 115, 2);
    cold(e, u, 160, cold_lg[1]);
    warm(e, pc, u, 160, 70, warm_lg[1]);
}

#endif
