/*
 * cmd_run.c: `exsa run` (one reply to one prompt, streamed to stdout) and `exsa chat` (a
 * multi-turn chat on stdin/stdout that keeps its cache between turns).
 *
 * Both share the options (struct run_opts) and a struct session: the model, an engine with one
 * sequence, and the logits row of the last token fed. Invariant of a session: ids[0..n_ids) are
 * exactly the tokens held in the sequence's cache (n_ids == exsa_seq_len), and logits is the row
 * after ids[n_ids - 1] while nothing has sampled from it. A token is in ids only once it was fed:
 * the token that ends a reply (EOG, or the last one when -n or the context stops it) is not.
 * `exsa run` ends its output with a newline. `exsa chat` renders the whole conversation each
 * turn, keeps the cache's longest common prefix with it (snapshots taken after each turn's prompt
 * let it roll the conv state back) and feeds only the rest. Called by main.c with argv[0] =
 * "run" / "chat"; returns 0, 1 (error) or 2 (usage).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chat.h"
#include "cli.h"
#include "exsa.h"
#include "gen.h"
#include "sampler.h"
#include "tokenizer.h"

/* ---- options --------------------------------------------------------------------------------- */

struct run_opts {
    const char *cmd; /* "run" or "chat" */
    const char *model, *prompt, *system;
    int n_predict; /* <= 0: until EOG or the context ends */
    int n_ctx, n_batch, n_threads, backend, gpu_layers, kv_type;
    bool raw, ids, verbose, ignore_eos, no_cache;
    bool temp_set, penalty_set;
    struct gen_params gp; /* gen_params_default() with the sampling flags given applied */
};

static void run_usage(FILE *f, const char *cmd)
{
    bool chat = !strcmp(cmd, "chat");
    fprintf(f, "usage: exsa %s -m MODEL %s[options]\n", cmd, chat ? "" : "-p PROMPT ");
    if (!chat)
        fprintf(f, "  -p TEXT             the prompt: one user message in the chat template\n"
                   "  --raw               feed the prompt as-is (BOS added, specials parsed)\n"
                   "  --ids               print the generated token ids instead of text\n");
    fprintf(f,
            "  --system TEXT       a system message first\n"
            "  -n N                reply tokens at most (default: until EOG or the context "
            "ends)\n"
            "  --temp T            temperature (default 0.3; 0: greedy, which also turns the\n"
            "                      repeat penalty off unless --repeat-penalty is given)\n"
            "  --top-k K           keep the K best tokens (default 0: off)\n"
            "  --top-p P           nucleus sampling (default 1: off)\n"
            "  --min-p P           drop tokens below P x the best (default 0.15)\n"
            "  --repeat-penalty R  over the last 64 tokens (default 1.05; 1: off)\n"
            "  --seed S            sampling seed (default: from the clock)\n"
            "  --ignore-eos        go on past end-of-generation tokens (with -n)\n"
            "  -c N                context size (default: min(4096, the model's))\n"
            "  -b N                prefill chunk, the engine's batch size (default 512)\n"
            "  -t N                threads (default: all CPUs)\n"
            "  --backend B         ref, cpu (default) or cuda (every layer on the GPU)\n"
            "  -ngl N              layers on the GPU: the last N and the output head\n"
            "  --kv-type T         K/V cache: f32 or f16 (default f16 on the GPU, f32 on\n"
            "                      the CPU)\n"
            "  --verbose           %s\n"
            "%s"
            "MODEL may also come from $MODEL_PATH.\n",
            chat ? "per-turn token counts and speeds on stderr" : "(no effect: stats always)",
            chat ? "  --no-cache          process the whole conversation every turn\n" : "");
}

/* Parses a float in [lo, hi]; 0 or -1 with a message on stderr. */
static int opt_float(const char *opt, const char *s, float lo, float hi, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "exsa: %s expects a number in [%g, %g], got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int opt_seed(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v == SAMPLER_SEED_RANDOM) {
        fprintf(stderr, "exsa: --seed expects an integer in [0, 2^64-2], got '%s'\n", s);
        return -1;
    }
    *out = v;
    return 0;
}

/* The options that take a value; returns 0, or -1 when bad or unknown. */
static int opt_value(struct run_opts *o, const char *a, const char *v, bool chat)
{
    struct exsa_sampling_params *sp = &o->gp.sp;
    if (!strcmp(a, "-m") || !strcmp(a, "--model"))
        o->model = v;
    else if (!chat && (!strcmp(a, "-p") || !strcmp(a, "--prompt")))
        o->prompt = v;
    else if (!strcmp(a, "--system"))
        o->system = v;
    else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict"))
        return cli_int("-n", v, 0, 1 << 24, &o->n_predict);
    else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size"))
        return cli_int("-c", v, 0, 1 << 24, &o->n_ctx);
    else if (!strcmp(a, "-b") || !strcmp(a, "--batch-size"))
        return cli_int("-b", v, 1, 1 << 16, &o->n_batch);
    else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
        return cli_int("-t", v, 1, 1024, &o->n_threads);
    else if (!strcmp(a, "--backend"))
        return (o->backend = cli_parse_backend(v)) < 0 ? -1 : 0;
    else if (!strcmp(a, "-ngl") || !strcmp(a, "--gpu-layers"))
        return cli_int("-ngl", v, 0, 1 << 20, &o->gpu_layers);
    else if (!strcmp(a, "--kv-type"))
        return (o->kv_type = cli_parse_kv_type(v)) < 0 ? -1 : 0;
    else if (!strcmp(a, "--temp") && (o->temp_set = true))
        return opt_float(a, v, 0, 100, &sp->temperature);
    else if (!strcmp(a, "--top-k"))
        return cli_int(a, v, 0, 1 << 30, &sp->top_k);
    else if (!strcmp(a, "--top-p"))
        return opt_float(a, v, 0, 1, &sp->top_p);
    else if (!strcmp(a, "--min-p"))
        return opt_float(a, v, 0, 1, &sp->min_p);
    else if (!strcmp(a, "--repeat-penalty") && (o->penalty_set = true))
        return opt_float(a, v, 0.01f, 100, &sp->repeat_penalty);
    else if (!strcmp(a, "--seed"))
        return opt_seed(v, &sp->seed);
    else
        return -1;
    return 0;
}

/* Fills o from argv. Returns 0, 1 (help was printed: exit 0) or 2 (usage error, printed). */
static int parse_opts(int argc, char **argv, struct run_opts *o)
{
    memset(o, 0, sizeof *o);
    o->cmd = !strcmp(argv[0], "chat") ? "chat" : "run";
    bool chat = !strcmp(o->cmd, "chat");
    o->backend = EXSA_BACKEND_CPU;
    o->n_batch = 512;
    gen_params_default(&o->gp);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            run_usage(stdout, o->cmd);
            return 1;
        }
        bool *flag = !strcmp(a, "--verbose")            ? &o->verbose
                     : !strcmp(a, "--ignore-eos")       ? &o->ignore_eos
                     : chat && !strcmp(a, "--no-cache") ? &o->no_cache
                     : !chat && !strcmp(a, "--raw")     ? &o->raw
                     : !chat && !strcmp(a, "--ids")     ? &o->ids
                                                        : NULL;
        if (flag) {
            *flag = true;
            continue;
        }
        if (!v || opt_value(o, a, v, chat) < 0) {
            fprintf(stderr, "exsa %s: bad or unknown option: %s%s%s\n", o->cmd, a, v ? " " : "",
                    v ? v : "");
            run_usage(stderr, o->cmd);
            return 2;
        }
        i++;
    }
    if (!o->model)
        o->model = getenv("MODEL_PATH");
    if (!o->model || !o->model[0] || (!chat && !o->prompt)) {
        fprintf(stderr, "exsa %s: -m MODEL%s is required\n", o->cmd, chat ? "" : " and -p PROMPT");
        run_usage(stderr, o->cmd);
        return 2;
    }
    /* Greedy means the model's argmax, as `--temp 0` does in llama.cpp (whose repeat penalty
     * defaults to 1); Liquid's 1.05 would otherwise still bend it. */
    if (o->temp_set && o->gp.sp.temperature <= 0 && !o->penalty_set)
        o->gp.sp.repeat_penalty = 1.0f;
    o->gp.max_tokens = o->n_predict;
    o->gp.ignore_eog = o->ignore_eos;
    return 0;
}

/* ---- session: model, engine, one sequence ---------------------------------------------------- */

struct session {
    struct exsa_model *m;
    struct exsa_engine *e;
    int seq, n_ctx, n_batch, n_vocab;
    int32_t *ids; /* cap: n_ctx; the tokens in the cache, in order */
    int n_ids;
    float *logits;     /* n_vocab: the row after the last token fed */
    int32_t *pos, *sq; /* n_batch each: batch scratch */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void session_close(struct session *s)
{
    exsa_engine_free(s->e);
    exsa_model_free(s->m);
    free(s->ids);
    free(s->logits);
    free(s->pos);
    free(s->sq);
    memset(s, 0, sizeof *s);
}

/* Loads the model and makes an engine with one sequence. Returns 0 or a negative code, with a
 * sentence on stderr that names the file. */
static int session_open(struct session *s, const struct run_opts *o)
{
    char err[512] = "";
    memset(s, 0, sizeof *s);
    int rc = exsa_model_load(o->model, &s->m, err, sizeof err);
    if (rc) {
        fprintf(stderr, "exsa %s: cannot load model %s: %s\n", o->cmd, o->model, err);
        return rc;
    }
    const struct exsa_model_info *mi = exsa_model_info(s->m);
    struct exsa_engine_params ep;
    exsa_engine_params_default(&ep);
    ep.backend = (enum exsa_backend_kind)o->backend;
    ep.gpu_layers = o->gpu_layers;
    ep.kv_type = (enum exsa_kv_type)o->kv_type;
    ep.n_ctx = o->n_ctx > 0                                    ? o->n_ctx
               : mi->n_ctx_train > 0 && mi->n_ctx_train < 4096 ? mi->n_ctx_train
                                                               : 4096;
    ep.n_batch = o->n_batch;
    ep.n_threads = o->n_threads;
    s->n_ctx = ep.n_ctx, s->n_batch = ep.n_batch, s->n_vocab = mi->vocab_size;
    rc = exsa_engine_create(s->m, &ep, &s->e, err, sizeof err);
    if (rc) {
        fprintf(stderr, "exsa %s: cannot create an engine for %s: %s\n", o->cmd, o->model, err);
        return rc;
    }
    s->ids = malloc(sizeof(int32_t) * (size_t)s->n_ctx);
    s->logits = malloc(sizeof(float) * (size_t)s->n_vocab);
    s->pos = malloc(sizeof(int32_t) * (size_t)s->n_batch);
    s->sq = malloc(sizeof(int32_t) * (size_t)s->n_batch);
    s->seq = exsa_seq_new(s->e);
    if (!s->ids || !s->logits || !s->pos || !s->sq || s->seq < 0) {
        fprintf(stderr, "exsa %s: out of memory\n", o->cmd);
        return EXSA_ENOMEM;
    }
    return 0;
}

/* Empties the sequence (a fresh one: the conv state cannot be cut back without a snapshot). */
static int session_clear(struct session *s)
{
    exsa_seq_free(s->e, s->seq);
    s->seq = exsa_seq_new(s->e);
    s->n_ids = 0;
    return s->seq < 0 ? s->seq : 0;
}

/* Appends toks[0..n) to the cache in chunks of n_batch; afterwards s->logits is the row after
 * the last one. Returns 0, EXSA_ERANGE when they do not fit the context (nothing fed), or the
 * engine's error. */
static int session_feed(struct session *s, const int32_t *toks, int n)
{
    if (n > s->n_ctx - s->n_ids)
        return EXSA_ERANGE;
    for (int done = 0; done < n;) {
        int k = n - done < s->n_batch ? n - done : s->n_batch;
        for (int i = 0; i < k; i++)
            s->pos[i] = s->n_ids + i, s->sq[i] = s->seq;
        struct exsa_batch b = {.n = k, .token = toks + done, .pos = s->pos, .seq = s->sq};
        int rc = exsa_decode(s->e, &b, s->logits); /* only the chunk's last entry: one row */
        if (rc)
            return rc;
        memcpy(s->ids + s->n_ids, toks + done, sizeof(int32_t) * (size_t)k);
        s->n_ids += k, done += k;
    }
    return 0;
}

/* ---- one reply ------------------------------------------------------------------------------- */

struct text {
    char *p;
    size_t n, cap;
};

static int text_add(struct text *t, const char *s, size_t n)
{
    if (t->n + n + 1 > t->cap) {
        size_t c = t->cap ? t->cap : 256;
        while (c < t->n + n + 1)
            c *= 2;
        char *q = realloc(t->p, c);
        if (!q)
            return EXSA_ENOMEM;
        t->p = q, t->cap = c;
    }
    memcpy(t->p + t->n, s, n);
    t->n += n;
    t->p[t->n] = 0;
    return 0;
}

static void show(const char *s, size_t n, struct text *keep)
{
    if (n) {
        fwrite(s, 1, n, stdout);
        fflush(stdout);
    }
    if (keep)
        text_add(keep, s, n);
}

/* Samples from s->logits on, feeding each token back, until g says the reply is over or the
 * context is full (then it ends as "length"). Streams the text (or, with ids, the token ids,
 * space-separated) to stdout, flushing each piece, and ends the line; keeps the text in keep
 * when not NULL. Returns 0 or the engine's error. */
static int generate(struct session *s, struct gen *g, bool ids, struct text *keep)
{
    int rc = 0;
    for (;;) {
        const char *t;
        size_t n;
        int32_t tok = gen_next(g, s->logits, &t, &n);
        if (ids)
            printf(gen_n_tokens(g) > 1 ? " %d" : "%d", (int)tok), fflush(stdout);
        else
            show(t, n, keep);
        if (gen_finished(g) != GEN_RUNNING)
            break;
        if (s->n_ids >= s->n_ctx) {
            gen_end(g, GEN_LENGTH);
            break;
        }
        if ((rc = session_feed(s, &tok, 1)) != 0) {
            gen_end(g, GEN_CANCELLED);
            break;
        }
    }
    const char *t;
    size_t n;
    gen_flush(g, &t, &n);
    if (!ids)
        show(t, n, keep);
    putchar('\n');
    fflush(stdout);
    return rc;
}

/* Prints why the reply ended and, when it was empty, why that was. */
static void report_finish(const char *cmd, const struct gen *g)
{
    const char *why = gen_empty_reason(g);
    fprintf(stderr, "finish: %s\n", gen_finish_reason(gen_finished(g)));
    if (why)
        fprintf(stderr, "exsa %s: empty reply: %s\n", cmd, why);
}

static double rate(int n, double secs)
{
    return secs > 0 ? n / secs : 0;
}

/* ---- exsa run -------------------------------------------------------------------------------- */

/* The prompt's ids (malloc'd into *out): raw text with BOS and specials, or one user message
 * (after the system one, if any) in the chat template with the generation prompt. */
static int prompt_ids(const struct run_opts *o, const struct exsa_model *m, int32_t **out, int *n)
{
    if (!o->raw) {
        struct exsa_chat_msg msgs[2] = {{.role = "system", .content = o->system},
                                        {.role = "user", .content = o->prompt}};
        int first = o->system ? 0 : 1;
        return chat_tokenize(chat_of_model(m), tok_of_model(m), msgs + first, 2 - first, NULL, true,
                             out, n);
    }
    size_t len = strlen(o->prompt);
    int cap = (int)(len < (1u << 24) ? len : (1u << 24)) + 8;
    *out = malloc(sizeof(int32_t) * (size_t)cap);
    if (!*out)
        return EXSA_ENOMEM;
    int k = exsa_tokenize(m, o->prompt, len, true, true, *out, cap);
    if (k > cap) /* more ids than bytes + 8 cannot happen; guard anyway */
        k = EXSA_ERANGE;
    *n = k;
    return k < 0 ? k : 0;
}

/* Prefills the prompt, streams the reply, prints finish and speeds. Returns the exit code. */
static int run_once(const struct run_opts *o, struct session *s)
{
    int32_t *ids = NULL;
    int n = 0, rc = prompt_ids(o, s->m, &ids, &n);
    if (rc) {
        fprintf(stderr, "exsa run: cannot tokenize the prompt: %s\n", exsa_strerror(rc));
        free(ids);
        return 1;
    }
    if (n == 0 || n > s->n_ctx) {
        if (n == 0)
            fprintf(stderr, "exsa run: the prompt is empty\n");
        else
            fprintf(stderr,
                    "exsa run: the prompt is %d tokens, longer than the context of %d "
                    "tokens (-c)\n",
                    n, s->n_ctx);
        free(ids);
        return 1;
    }
    struct gen *g = NULL;
    if ((rc = gen_create(tok_of_model(s->m), s->n_vocab, &o->gp, &g)) != 0) {
        fprintf(stderr, "exsa run: bad sampling parameters: %s\n", exsa_strerror(rc));
        free(ids);
        return 1;
    }
    gen_prompt(g, ids, n);
    double t0 = now_s();
    rc = session_feed(s, ids, n);
    double t1 = now_s();
    if (!rc)
        rc = generate(s, g, o->ids, NULL);
    double t2 = now_s();
    if (rc) {
        fprintf(stderr, "exsa run: decoding failed: %s\n", exsa_strerror(rc));
    } else {
        report_finish("run", g);
        fprintf(stderr, "prompt: %d tokens, %.1f tok/s; reply: %d tokens, %.1f tok/s\n", n,
                rate(n, t1 - t0), gen_n_tokens(g), rate(gen_n_tokens(g), t2 - t1));
    }
    gen_free(g);
    free(ids);
    return rc ? 1 : 0;
}

int cmd_run(int argc, char **argv)
{
    struct run_opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc)
        return rc == 1 ? 0 : 2;
    struct session s;
    rc = session_open(&s, &o) ? 1 : run_once(&o, &s);
    session_close(&s);
    return rc;
}

/* ---- exsa chat ------------------------------------------------------------------------------- */

struct chat {
    struct session s;
    struct exsa_chat_msg *msgs;   /* contents malloc'd; msgs[0] is the system one if any */
    int n_msgs, cap_msgs, n_keep; /* n_keep: messages /reset keeps (the system one) */
    struct exsa_snapshot **snaps; /* after each turn's prompt, oldest first */
    int *snap_len;                /* their lengths (positions) */
    int n_snaps, cap_snaps;
    int turn;
};

static int push_msg(struct chat *c, const char *role, const char *content)
{
    if (c->n_msgs == c->cap_msgs) {
        int cap = c->cap_msgs ? 2 * c->cap_msgs : 8;
        struct exsa_chat_msg *m = realloc(c->msgs, sizeof *m * (size_t)cap);
        if (!m)
            return EXSA_ENOMEM;
        c->msgs = m, c->cap_msgs = cap;
    }
    char *dup = strdup(content);
    if (!dup)
        return EXSA_ENOMEM;
    c->msgs[c->n_msgs++] = (struct exsa_chat_msg){.role = role, .content = dup};
    return 0;
}

static void pop_msgs(struct chat *c, int keep)
{
    while (c->n_msgs > keep)
        free((char *)c->msgs[--c->n_msgs].content);
}

/* Frees the snapshots past the first keep. */
static void drop_snaps(struct chat *c, int keep)
{
    while (c->n_snaps > keep)
        exsa_snapshot_free(c->snaps[--c->n_snaps]);
}

/* Snapshots the sequence now (a failure only costs a later rollback its shortcut). */
static void take_snap(struct chat *c)
{
    if (c->n_snaps == c->cap_snaps) {
        int cap = c->cap_snaps ? 2 * c->cap_snaps : 8;
        struct exsa_snapshot **sn = realloc(c->snaps, sizeof *sn * (size_t)cap);
        int *len = sn ? realloc(c->snap_len, sizeof *len * (size_t)cap) : NULL;
        if (sn)
            c->snaps = sn;
        if (!len)
            return;
        c->snap_len = len, c->cap_snaps = cap;
    }
    struct exsa_snapshot *snap;
    if (exsa_seq_snapshot(c->s.e, c->s.seq, &snap) == 0) {
        c->snaps[c->n_snaps] = snap;
        c->snap_len[c->n_snaps++] = c->s.n_ids;
    }
}

/* Rolls the cache back to at most keep tokens: to the latest snapshot at or before keep, or to
 * nothing. Returns 0 or a negative code. */
static int roll_back(struct chat *c, int keep)
{
    while (c->n_snaps > 0 && c->snap_len[c->n_snaps - 1] > keep)
        drop_snaps(c, c->n_snaps - 1);
    if (c->n_snaps == 0)
        return session_clear(&c->s);
    int rc = exsa_seq_restore(c->s.e, c->s.seq, c->snaps[c->n_snaps - 1]);
    if (rc)
        return rc;
    c->s.n_ids = c->snap_len[c->n_snaps - 1];
    return 0;
}

/* Makes the cache hold exactly ids[0..n) (n <= n_ctx), feeding only what it lacks. *reused
 * gets the number of tokens kept. Returns 0 or a negative code. */
static int sync_cache(struct chat *c, const int32_t *ids, int n, int *reused)
{
    struct session *s = &c->s;
    int lcp = 0;
    while (lcp < s->n_ids && lcp < n && s->ids[lcp] == ids[lcp])
        lcp++;
    if (lcp == n) /* feed at least one token: the logits row was used by the last reply */
        lcp = n - 1;
    /* The rendered conversation is usually the cache plus the new turn, but not always: the
     * template renders the reply as text, whose tokenization need not equal the sampled ids,
     * and may strip it (whitespace, reasoning of past turns). The conv state cannot be cut back
     * to an arbitrary position, so go back to the latest snapshot inside the common prefix (the
     * end of an earlier prompt), or start over when there is none. */
    if (lcp < s->n_ids) {
        int rc = roll_back(c, lcp);
        if (rc)
            return rc;
    }
    *reused = s->n_ids;
    return session_feed(s, ids + s->n_ids, n - s->n_ids);
}

static void chat_reset(struct chat *c)
{
    pop_msgs(c, c->n_keep);
    drop_snaps(c, 0);
    session_clear(&c->s);
}

static void chat_free(struct chat *c)
{
    drop_snaps(c, 0);
    pop_msgs(c, 0);
    free(c->msgs);
    free(c->snaps);
    free(c->snap_len);
    session_close(&c->s);
}

/* One turn: the user's line in, the reply out. Returns 0, or 1 when the turn was refused
 * (the conversation is dropped back to before it), or a negative code (fatal). */
static int chat_turn(struct chat *c, const struct run_opts *o, const char *line)
{
    struct session *s = &c->s;
    int32_t *ids = NULL;
    int n = 0, reused = 0, rc = push_msg(c, "user", line);
    if (!rc)
        rc = chat_tokenize(chat_of_model(s->m), tok_of_model(s->m), c->msgs, c->n_msgs, NULL, true,
                           &ids, &n);
    if (!rc && n >= s->n_ctx) {
        fprintf(stderr,
                "exsa chat: the conversation is %d tokens, as long as the context of %d "
                "or longer; /reset to start over\n",
                n, s->n_ctx);
        free(ids);
        pop_msgs(c, c->n_msgs - 1);
        return 1;
    }
    struct gen *g = NULL;
    double t0 = now_s();
    if (!rc && o->no_cache) {
        drop_snaps(c, 0);
        rc = session_clear(s);
    }
    if (!rc)
        rc = sync_cache(c, ids, n, &reused);
    double t1 = now_s();
    if (!rc) {
        take_snap(c);
        rc = gen_create(tok_of_model(s->m), s->n_vocab, &o->gp, &g);
    }
    struct text reply = {0};
    if (!rc) {
        gen_prompt(g, ids, n);
        rc = generate(s, g, false, &reply);
    }
    double t2 = now_s();
    if (!rc)
        rc = push_msg(c, "assistant", reply.p ? reply.p : "");
    if (!rc) {
        c->turn++;
        const char *why = gen_empty_reason(g);
        if (why)
            fprintf(stderr, "exsa chat: empty reply: %s\n", why);
        if (o->verbose)
            fprintf(stderr,
                    "[turn %d] conversation: %d tokens, cached: %d, new: %d, %.1f tok/s; "
                    "reply: %d tokens, %.1f tok/s; finish: %s\n",
                    c->turn, n, reused, n - reused, rate(n - reused, t1 - t0), gen_n_tokens(g),
                    rate(gen_n_tokens(g), t2 - t1), gen_finish_reason(gen_finished(g)));
    }
    free(reply.p);
    gen_free(g);
    free(ids);
    return rc;
}

/* Reads one line (without its end) into *buf; returns false at EOF. */
static bool read_line(char **buf, size_t *cap, bool tty)
{
    if (tty) {
        fputs("> ", stdout);
        fflush(stdout);
    }
    ssize_t k = getline(buf, cap, stdin);
    if (k < 0)
        return false;
    while (k > 0 && ((*buf)[k - 1] == '\n' || (*buf)[k - 1] == '\r'))
        (*buf)[--k] = 0;
    return true;
}

int cmd_chat(int argc, char **argv)
{
    struct run_opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc)
        return rc == 1 ? 0 : 2;
    struct chat c = {0};
    if (session_open(&c.s, &o)) {
        session_close(&c.s);
        return 1;
    }
    if (o.system && push_msg(&c, "system", o.system) == 0)
        c.n_keep = 1;
    bool tty = isatty(STDIN_FILENO);
    char *line = NULL;
    size_t cap = 0;
    rc = 0;
    while (rc >= 0 && read_line(&line, &cap, tty)) {
        if (!strcmp(line, "/exit"))
            break;
        if (!strcmp(line, "/reset")) {
            chat_reset(&c);
            if (tty)
                fprintf(stderr, "(conversation cleared)\n");
            continue;
        }
        if (line[0])
            rc = chat_turn(&c, &o, line);
    }
    if (rc < 0)
        fprintf(stderr, "exsa chat: %s\n", exsa_strerror(rc));
    free(line);
    chat_free(&c);
    return rc < 0 ? 1 : 0;
}
