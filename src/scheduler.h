/*
 * scheduler.h: the scheduler (src/sched.c). Not named sched.h: with -Isrc that name would
 * shadow the system <sched.h> that <pthread.h> includes.
 * One thread owns the model and the engine and runs sched_step() in a loop: admit queued
 * requests (up to max_batch sequences), build ONE batch of prefill chunks (up to n_batch
 * tokens) and one decode token per running sequence, call exsa_decode once, sample each
 * sequence with its struct gen, push the new text to each request's channel, and retire
 * finished or cancelled sequences. Other threads (the HTTP server) submit requests, read their
 * channels, cancel them, and ask for a model load / reload / unload, which the scheduler
 * thread performs between steps (everything in flight then ends with a 503 error).
 *
 * Invariants: the queue never holds more than max_queue requests (sched_submit refuses at once);
 * a request's prompt ids belong to the model generation it was tokenized with (sched_submit
 * refuses a stale one); a request lives until both its submitter and the scheduler put it.
 */
#ifndef EXSA_SCHED_H
#define EXSA_SCHED_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "exsa.h"
#include "gen.h"
#include "pcache.h"

struct sched_params {
    enum exsa_backend_kind backend;
    int n_ctx;     /* context per sequence */
    int n_batch;   /* tokens per forward step (prefill chunks + decode tokens) */
    int n_threads; /* CPU threads (0: all) */
    int gpu_layers;
    enum exsa_kv_type kv_type;
    int max_queue;        /* requests waiting for a free slot; past it sched_submit refuses */
    int max_batch;        /* sequences decoded together (forced to 1 when !continuous) */
    bool continuous;      /* continuous batching on */
    bool deterministic;   /* batch-invariant GPU kernels (exsa_engine_params.deterministic) */
    int batch_timeout_ms; /* how long an idle scheduler waits to fill a batch (0: not at all) */
    int step_delay_ms;    /* test hook: sleep after each step (0: off) */
    size_t cache_bytes;   /* prompt cache bound in bytes (PROMPT_CACHE_MB; 0: no cache) */
};
void sched_params_default(struct sched_params *p);

struct sched;

/* Starts the scheduler thread with no model loaded. Returns 0 or a negative code. */
int sched_create(const struct sched_params *p, struct sched **out);
/* Refuses new requests, lets those in flight run for up to grace_ms, ends the rest with a 503
 * and stops the thread. Every other call stays safe afterwards (and refuses work). */
void sched_close(struct sched *s, int grace_ms);
/* sched_close (if not done yet), then frees everything (the model too). */
void sched_destroy(struct sched *s, int grace_ms);

/* Loads path (NULL: re-read the current file) with these settings (< 0: keep the current
 * ones), replacing the current model. Blocks until done. The new model is loaded beside the
 * current one, which answers meanwhile; requests that arrive during the load are tokenized for
 * the new model and start once the current model's requests are done (those still running
 * SWAP_GRACE_S after the load end with a 503). When the two do not fit together the current
 * model is unloaded first (requests in flight end with a 503) and err says so even on success.
 * Returns 0 or a negative code with a sentence in err. */
int sched_load(struct sched *s, const char *path, int gpu_layers, int n_ctx, char *err,
               size_t errlen);
/* Frees the model; requests then get EXSA_ENOTFOUND from sched_submit until a load. */
int sched_unload(struct sched *s);

/* Borrows the model for tokenizing (NULL when none is loaded); *gen gets its generation, *n_ctx
 * the context size. A load or unload waits until every borrower has called sched_model_release. */
struct exsa_model *sched_model_acquire(struct sched *s, unsigned *gen, int *n_ctx);
void sched_model_release(struct sched *s);

struct sched_stats {
    bool loaded, loading, closing;
    char model_path[PATH_MAX]; /* "" when none */
    int n_ctx, gpu_layers, n_batch, max_batch;
    int active; /* sequences running */
    int queued; /* requests waiting */
    int max_queue;
    bool queue_full;                      /* sched_submit would answer EXSA_ENOMEM now */
    unsigned long long n_cancelled;       /* requests cancelled by their client */
    unsigned long long n_forked;          /* choices (n > 1) that forked the first one's prompt */
    int cache_seqs;                       /* sequences the engine's cache holds */
    int cache_blocks, cache_blocks_total; /* KV blocks in use; in the pool */
    struct pcache_stats pcache;           /* the prompt cache (all 0 when it is off) */
};
void sched_get_stats(struct sched *s, struct sched_stats *st);

/* One running sequence, as of the last step (for /v1/status and /slots). */
struct sched_slot {
    int id;            /* the engine's sequence id */
    const char *state; /* "prefill", "generating" or "embedding" (static strings) */
    int n_prompt;      /* prompt tokens */
    int n_past;        /* tokens in the sequence's cache */
    int n_decoded;     /* tokens generated so far */
    int n_cached;      /* prompt tokens restored from the prompt cache, not computed */
    double seconds;    /* since the request was submitted */
};
/* Copies up to max running sequences into out; returns how many there are. */
int sched_get_slots(struct sched *s, struct sched_slot *out, int max);

/* ---- requests ------------------------------------------------------------------------------- */

struct sched_req;

/* A new request (one reference, the caller's): prompt ids and gen params are copied (stop
 * strings included); model_gen comes from sched_model_acquire. NULL when out of memory. */
struct sched_req *sched_req_new(const int32_t *prompt, int n_prompt, const struct gen_params *gp,
                                unsigned model_gen);
/* An embedding request: the prompt runs through the model in its own sequence (prefill only,
 * in a forward call of its own, so the generating requests' batches are not changed) and the
 * final hidden state (after the output norm) of its positions is pooled. Read it as any
 * request (sched_read until done; no text), then take the vector with sched_embed_vector. */
enum sched_pool { SCHED_POOL_MEAN, SCHED_POOL_FIRST, SCHED_POOL_LAST };
struct sched_req *sched_embed_new(const int32_t *prompt, int n_prompt, enum sched_pool pool,
                                  unsigned model_gen);
/* Copies the pooled vector (dim floats, not normalised) of a finished embedding request into
 * out (room for max floats). Returns dim, or a negative code (not an embedding request, not
 * done, or it ended with an error). */
int sched_embed_vector(struct sched_req *r, float *out, int max);
/* Before sched_submit: whether r may use the prompt cache (true by default: it restores the
 * longest cached prefix of its prompt, and leaves its own checkpoints behind), and where the
 * messages of a rendered chat start in its prompt (positions, ascending; may be NULL): the
 * lengths at which checkpoints are taken, besides every n_batch tokens. Copied. Returns 0 or
 * EXSA_ENOMEM (then no boundaries are kept). */
int sched_req_set_cache(struct sched_req *r, bool use, const int32_t *bounds, int n_bounds);
void sched_req_get(struct sched_req *r); /* one more reference */
void sched_req_put(struct sched_req *r);

/* Queues r. Returns 0; EXSA_ENOMEM when the queue is full (max_queue requests wait beyond
 * those the free sequence slots will take); EXSA_ENOTFOUND when no model is
 * loaded (or r was tokenized for a model since replaced); EXSA_ECANCELLED when shutting down. */
int sched_submit(struct sched *s, struct sched_req *r);
/* The n choices of one request (OpenAI's n > 1), all with the same prompt: queued together
 * (all or none, errors as sched_submit). rs[0] prefills the prompt; each other choice that is
 * running by then forks rs[0]'s sequence after that prefill (exsa_seq_fork) and draws its first
 * token from the same logits, so the prompt is computed once. A choice that is still queued
 * then (fewer free slots than choices) prefills the prompt itself. rs[0] holds a reference to
 * the others, and cancelling rs[0] cancels them all. */
int sched_submit_group(struct sched *s, struct sched_req *const *rs, int n);
/* Cancels r (its client went away): only r (and, for rs[0] of a group, its other choices),
 * wherever it is (queued or running). */
void sched_cancel(struct sched_req *r);
/* Gives r an object to free (free_fn(p)) when its last reference goes: what its gen params
 * point at (a constrained-decoding mask), which must live as long as the request. */
void sched_req_attach(struct sched_req *r, void *p, void (*free_fn)(void *));

/* A token's log-probability in a chunk (gen_logprobs): its bytes are the chunk's
 * lp_bytes[off, off + len) (special tokens as their text). */
struct sched_lp {
    int32_t id;
    float logprob;
    uint32_t off, len;
};
/* A sampled token (gen_params.logprobs on) and its n_top most likely alternatives,
 * lp_top[top, top + n_top). The token that ended the reply (end of generation) has none. */
struct sched_tok {
    struct sched_lp tok;
    int top, n_top;
};

struct sched_chunk {
    char *text; /* new text since the last read, NUL-terminated, malloc'd (caller frees) */
    size_t len;
    int *piece_len; /* n_pieces lengths (malloc'd), one per push; they sum to len */
    int n_pieces;
    /* logprobs (all malloc'd; NULL / 0 when off): the tokens sampled since the last read, in
     * order, and for each piece how many of them were sampled when it was pushed (a token whose
     * text is held back, part of a stop string or of a UTF-8 character, counts towards a later
     * piece, or none) */
    int *piece_toks;
    struct sched_tok *toks;
    int n_toks;
    struct sched_lp *lp_top;
    char *lp_bytes;
    bool done; /* the reply is over: finish (or status/message) is final */
    enum gen_finish finish;
    int status;        /* 0, or the HTTP status of an error the request ended with */
    char message[256]; /* the error's sentence when status != 0 */
};
/* Waits up to timeout_ms for new text or the end, then takes what there is. Returns 1 when
 * something was taken (text or done), 0 on timeout. Free with sched_chunk_free. */
int sched_read(struct sched_req *r, int timeout_ms, struct sched_chunk *out);
void sched_chunk_free(struct sched_chunk *c);

struct sched_result {
    int n_prompt, n_gen; /* tokens in the prompt; tokens sampled (EOG included) */
    int n_cached;        /* prompt tokens restored from the prompt cache */
    double t_submit, t_admit, t_first, t_done; /* monotonic seconds; 0: did not happen */
    char empty_reason[256];                    /* the "0-token" explanation, or "" */
};
/* Counters and times of r (final once a read returned done). */
void sched_req_result(struct sched_req *r, struct sched_result *res);

double sched_now(void); /* monotonic seconds */

#endif
