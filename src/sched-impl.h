/*
 * sched-impl.h: what the scheduler's two files share; private to them (scheduler.h is the
 * interface). sched.c: the queue, the scheduler thread and the control surface; sched-req.c: a
 * request and its channel, which the HTTP threads create and read and the scheduler thread fills
 * through sched_req_push / sched_req_finish.
 *
 * struct sched holds the bounded queue (a linked list under mu), the model and engine (touched
 * only by the scheduler thread, swapped under mu while no borrower holds the model), and the
 * active sequences (scheduler thread only; n_active mirrors their count under mu). A request's
 * channel (text pieces, done flag, error) lives under its own mutex and condition variable; the
 * scheduler pushes, the HTTP connection thread reads. One condition variable (s->cv) wakes the
 * scheduler and the threads waiting on control operations; everyone re-checks its predicate.
 */
#ifndef EXSA_SCHED_IMPL_H
#define EXSA_SCHED_IMPL_H

#include <pthread.h>
#include <stdatomic.h>

#include "scheduler.h"

struct sched_req {
    struct sched *s;
    int32_t *prompt;
    int n_prompt;
    struct gen_params gp; /* stop and logit bias point at the copies below */
    char **stop;
    int32_t *bias_id;
    float *bias;
    unsigned model_gen;
    bool embed; /* an embedding request: no sampler, pooled hidden states */
    enum sched_pool pool;
    double *pooled; /* embed: dim sums (mean) or the chosen row, scheduler thread */
    int dim;        /* embed: floats in pooled, once the first chunk ran */
    /* n > 1 (sched_submit_group): choices[] are the other choices, on the first one only (a
     * reference each); await_fork: a choice waiting for the first one's prefill to fork it
     * (scheduler thread once queued) */
    struct sched_req **choices;
    int n_choices;
    bool await_fork;
    void *attached; /* sched_req_attach: freed with the request */
    void (*attached_free)(void *);
    atomic_int refs;
    atomic_bool cancelled;
    struct sched_req *next; /* queue link, under s->mu */
    /* scheduler thread only */
    struct gen *gen;
    int seq;
    int n_past;   /* tokens in the sequence's cache */
    int step_n;   /* entries this request put into the current batch */
    int n_cached; /* prompt tokens restored from the prompt cache */
    bool pending; /* next_tok is sampled and waits to be fed */
    int32_t next_tok;
    /* the prompt cache (see "the prompt cache" below); scheduler thread after submit */
    bool cache_off;     /* the client asked for no caching */
    bool cache_restore; /* admitted: look the prompt up before its first step */
    int32_t *bounds;    /* message starts in the prompt, ascending */
    int n_bounds;
    int32_t *ck;                  /* checkpoint lengths planned in the prompt, ascending */
    int n_ck, i_ck;               /* planned; the next one to take */
    struct exsa_snapshot **snaps; /* checkpoints taken (n_ck + 1 room: one at retirement) */
    int n_snaps;
    int32_t *sampled; /* tokens sampled, in order: the sequence holds the first n_past - n_prompt */
    int n_sampled, cap_sampled;
    /* channel, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *text;
    size_t len, cap;
    int *pieces, *piece_toks; /* piece_toks: n_toks when each piece was pushed */
    int n_pieces, cap_pieces;
    struct sched_tok *toks; /* logprobs of the tokens sampled since the last read */
    int n_toks, n_top;
    struct sched_lp *lp_top;
    char *lp_bytes;
    size_t n_bytes, cap_toks, cap_top, cap_bytes;
    bool done;
    enum gen_finish finish;
    int status;
    char message[256];
    struct sched_result res;
};

/* CTL_SWAP: install next_model once the current model's requests are done (or at the
 * deadline); CTL_UNLOAD: end everything and free the model at once. */
enum ctl_op { CTL_NONE, CTL_SWAP, CTL_UNLOAD };

struct sched {
    struct sched_params p;
    pthread_t thread;
    pthread_mutex_t mu, ctl_mu;
    pthread_cond_t cv;
    bool stop, closing, loading, started;
    struct sched_req *qhead, *qtail;
    int n_queued, n_active_shared, borrowers;
    int cache_seqs, cache_blocks, cache_blocks_total; /* what the engine holds (count_cache) */
    unsigned gen;
    unsigned long long n_cancelled;
    atomic_ullong n_forked; /* choices that forked the first one's prompt (sched_stats) */
    /* the model; swapped by the scheduler thread under mu */
    struct exsa_model *model;
    struct exsa_engine *engine;
    char *path;
    int n_ctx, gpu_layers, n_vocab;
    /* a replacement that sched_load loaded beside the current model (under mu): new requests
     * are tokenized with it (generation gen + 1) and wait in the queue until the switch */
    struct exsa_model *next_model;
    struct exsa_engine *next_engine;
    char *next_path;
    int next_ngl, next_nctx;
    double swap_deadline;
    bool switching; /* the switch waits for the borrowers: sched_model_acquire waits too */
    /* a control request from sched_load / sched_unload */
    enum ctl_op ctl;
    int ctl_rc;
    bool ctl_done;
    char ctl_err[512];
    /* scheduler thread only */
    struct sched_req **active;
    int n_active;
    int32_t *b_tok, *b_pos, *b_seq, *b_job;
    uint8_t *b_logits;
    struct sched_req **b_row; /* the request of each logits row */
    struct sched_slot *slots; /* what sched_get_slots shows (n_active_shared of them), under mu */
    float *logits;
    float *fork_row; /* n_vocab: the logits row a forked choice draws from (sampling edits it) */
    float *hidden;   /* [n_batch][dim] hidden states of an embedding step (allocated on use) */
    /* the prompt cache of the current engine (NULL: off) */
    struct pcache *pc;
    struct pcache_stats pc_stats; /* its counters as count_cache published them, under mu */
};

/* A sampled token's logprobs as gen_logprobs gives them (bytes owned by the tokenizer). */
struct tok_lp {
    struct gen_logprob chosen;
    struct gen_logprob top[SAMPLER_MAX_TOP_LOGPROBS];
    int n_top;
};

/* The scheduler thread's side of a request's channel (sched-req.c; each takes r->mu).
 * sched_req_push appends one sampled token: its logprobs when lp is set (an allocation failure
 * loses them, not the reply), then its piece of text (if any), and wakes the reader. */
void sched_req_push(struct sched_req *r, const char *text, size_t len, const struct tok_lp *lp);
/* Appends text (if any) as a piece with no logprobs. */
void sched_req_push_text(struct sched_req *r, const char *text, size_t len);
/* Ends r's reply: with finish when status == 0, else with an error of that HTTP status and msg
 * (NULL: none). Only the first call counts; each wakes the reader. */
void sched_req_finish(struct sched_req *r, enum gen_finish finish, int status, const char *msg);

#endif
