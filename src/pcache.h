/*
 * pcache.h: the prompt cache (src/pcache.c). LFM2's short-conv layers keep a rolling state that
 * cannot be rolled back, so a sequence can only be resumed where its conv state was saved: a
 * checkpoint (exsa_snapshot: conv state + length) at a chosen prefix length, with the K/V rows
 * of every position before it. The cache keeps those in host memory, in a radix tree keyed by
 * the exact token prefix: a node holds a run of tokens, their K/V rows (kv_export's layout)
 * and, when a checkpoint falls at its end, that snapshot; sequences that share a prefix (turns
 * of one chat, a common system prompt, a retried request) share its nodes. A lookup restores,
 * into a fresh sequence, the longest checkpoint whose whole prefix matches: K/V rows copied in
 * (never recomputed), then the conv state.
 *
 * Memory is bounded by max_bytes (node tokens, K/V rows and snapshots): after an insert the
 * least recently used leaves go first. Why host copies rather than shared KV blocks: the pool
 * has no reference counts, it is sized for the running sequences (n_seq x n_ctx), and a copy of
 * a prefix's rows costs a small fraction of computing them (PERF-NOTES.md, "Prompt cache").
 * One pcache belongs to one engine and is used by the thread that owns the engine (the
 * scheduler's); not thread-safe.
 */
#ifndef EXSA_PCACHE_H
#define EXSA_PCACHE_H

#include <stddef.h>
#include <stdint.h>

struct exsa_engine;
struct exsa_snapshot;
struct pcache;

struct pcache_stats {
    unsigned long long hits, misses;  /* restores that found a checkpoint / found none */
    unsigned long long reused_tokens; /* positions restored instead of computed */
    unsigned long long evictions;     /* checkpoints dropped to stay under max_bytes */
    size_t bytes, max_bytes;          /* held now; the bound */
    int nodes, checkpoints;
};

/* A cache for sequences of engine e, holding at most max_bytes (> 0). NULL when out of memory. */
struct pcache *pcache_new(struct exsa_engine *e, size_t max_bytes);
void pcache_free(struct pcache *pc);

/* Restores into seq (a new sequence: length 0, zero state) the longest cached checkpoint whose
 * prefix equals toks[0..c) with c <= n_max. Returns c (0 when none: a miss), or a negative code
 * (out of KV blocks, a backend error), after which seq's state is undefined: free it. */
int pcache_restore(struct pcache *pc, int seq, const int32_t *toks, int n_max);

/* Records seq, whose cache holds toks[0..n), with its checkpoints snaps[0..n_snaps) (lengths
 * ascending, each <= n, taken from seq at those lengths). Takes every snapshot (keeps or frees
 * it). K/V rows up to the last checkpoint are copied from seq where the tree does not hold them
 * yet. Then evicts down to max_bytes. Returns 0 or a negative code (nothing was added then). */
int pcache_insert(struct pcache *pc, int seq, const int32_t *toks, int n,
                  struct exsa_snapshot **snaps, int n_snaps);

void pcache_get_stats(const struct pcache *pc, struct pcache_stats *st);

#endif
