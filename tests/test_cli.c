/*
 * test_cli.c: `exsa run` and `exsa chat` through the real binary, spawned with fork+exec (its
 * stdin, stdout and stderr go through temporary files, so no pipe can fill up). The binary is
 * $EXSA_BIN, else $BUILD/exsa (make test sets BUILD), else build/exsa, from the repo root.
 * Checks: greedy ids equal the reference engine's for every prompt of lfm2-tiny-F32.ref.json on
 * the ref and cpu backends; seeds reproduce and differ; chat feeds only new tokens each turn,
 * answers exactly as without its cache, and /reset, /exit work; bad flags exit 2; a missing
 * model or a too-long prompt exits 1 and says why; `exsa bench -np` decodes several sequences.
 */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "exsa.h"
#include "harness.h"

static char model_path[512], ref_path[512];
static struct exsa_model *model; /* for the EOG set */

struct proc {
    int status; /* exit code, 128 + signal, or -1 when it could not run */
    char *out, *err;
};

static const char *exsa_bin(void)
{
    static char buf[512];
    const char *b = getenv("EXSA_BIN"), *dir = getenv("BUILD");
    if (b && *b)
        return b;
    if (dir && *dir) {
        snprintf(buf, sizeof buf, "%s/exsa", dir);
        return buf;
    }
    return "build/exsa";
}

/* The whole of file fd from its start, NUL-terminated (malloc'd), or NULL. */
static char *slurp_fd(int fd)
{
    off_t n = lseek(fd, 0, SEEK_END);
    char *p = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!p || lseek(fd, 0, SEEK_SET) < 0 || pread(fd, p, (size_t)n, 0) != n) {
        free(p);
        return NULL;
    }
    p[n] = 0;
    return p;
}

static int temp_fd(void)
{
    char name[] = "/tmp/exsa-test-cli-XXXXXX";
    int fd = mkstemp(name);
    if (fd >= 0)
        unlink(name);
    return fd;
}

/* Runs `exsa ARGS...` (args NULL-terminated, without the binary) with input on its stdin
 * (NULL: empty) and collects its output. Returns 0, or -1 if it could not be started. */
static int spawn(const char *const *args, const char *input, struct proc *p)
{
    const char *argv[48] = {exsa_bin()};
    int n = 1;
    while (args[n - 1] && n < 47)
        argv[n] = args[n - 1], n++;
    argv[n] = NULL;
    memset(p, 0, sizeof *p);
    p->status = -1;
    int fin = temp_fd(), fout = temp_fd(), ferr = temp_fd();
    if (fin < 0 || fout < 0 || ferr < 0)
        return -1;
    if (input && write(fin, input, strlen(input)) != (ssize_t)strlen(input))
        return -1;
    lseek(fin, 0, SEEK_SET);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fin, 0), dup2(fout, 1), dup2(ferr, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    if (pid > 0 && waitpid(pid, &st, 0) == pid)
        p->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    p->out = slurp_fd(fout);
    p->err = slurp_fd(ferr);
    close(fin), close(fout), close(ferr);
    if (!p->out || !p->err)
        return -1;
    return pid > 0 ? 0 : -1;
}

static void proc_free(struct proc *p)
{
    free(p->out);
    free(p->err);
}

static cJSON *load_ref(void)
{
    char *buf = read_whole_file(ref_path, NULL);
    cJSON *j = buf ? cJSON_Parse(buf) : NULL;
    free(buf);
    return j;
}

/* Parses space-separated ids; returns the count (up to max). */
static int parse_ids(const char *s, int *ids, int max)
{
    int n = 0;
    char *end;
    for (long v = strtol(s, &end, 10); end != s && n < max; v = strtol(s, &end, 10)) {
        ids[n++] = (int)v;
        s = end;
    }
    return n;
}

/* The greedy ids of `exsa run --raw --ids --temp 0 -n 32` on one ref prompt, checked against
 * the reference engine's: equal up to and including the first EOG token (where run stops), and
 * equal in full with --ignore-eos when the reference went past an EOG. */
static void check_greedy_prompt(const cJSON *pr, const char *backend, int idx)
{
    const char *text = cJSON_GetObjectItem(pr, "text")->valuestring;
    const cJSON *greedy = cJSON_GetObjectItem(pr, "greedy_reference_engine");
    int want[32], n_want = 0, n_prompt = cJSON_GetArraySize(cJSON_GetObjectItem(pr, "tokens"));
    const cJSON *it;
    cJSON_ArrayForEach (it, greedy) {
        if (n_want < 32)
            want[n_want++] = it->valueint;
    }
    int stop_at = n_want; /* tokens up to and including the first EOG */
    for (int i = 0; i < n_want; i++)
        if (exsa_token_is_eog(model, want[i])) {
            stop_at = i + 1;
            break;
        }
    for (int ign = 0; ign < 2; ign++) {
        if (ign && stop_at == n_want)
            break; /* the same run as without --ignore-eos */
        const char *args[] = {
            "run",    "-m", model_path, "-p", text,        "--raw", "--ids",
            "--temp", "0",  "-n",       "32", "--backend", backend, ign ? "--ignore-eos" : NULL,
            NULL};
        struct proc p;
        CHECK(spawn(args, NULL, &p) == 0, "cannot run %s", exsa_bin());
        int got[40], n = parse_ids(p.out ? p.out : "", got, 40), expect = ign ? n_want : stop_at;
        int first_bad = -1;
        for (int i = 0; i < n && i < expect && first_bad < 0; i++)
            if (got[i] != want[i])
                first_bad = i;
        CHECK(p.status == 0, "prompt %d (%s): exit %d: %s", idx, backend, p.status, p.err);
        CHECK(n == expect && first_bad < 0, "prompt %d (%s%s): %d ids (want %d), first diff at %d",
              idx, backend, ign ? ", --ignore-eos" : "", n, expect, first_bad);
        char line[64];
        snprintf(line, sizeof line, "prompt: %d tokens", n_prompt);
        CHECK(p.err && strstr(p.err, line), "prompt %d: stderr lacks '%s': %s", idx, line, p.err);
        proc_free(&p);
    }
}

static void test_greedy(const char *backend)
{
    cJSON *ref = load_ref();
    CHECK(ref != NULL, "cannot read %s", ref_path);
    if (!ref)
        return;
    const cJSON *pr;
    int idx = 0, n = 0;
    cJSON_ArrayForEach (pr, cJSON_GetObjectItem(ref, "prompts")) {
        check_greedy_prompt(pr, backend, idx++);
        n++;
    }
    CHECK(n == 5, "expected 5 prompts, found %d", n);
    cJSON_Delete(ref);
}

static void test_greedy_ref(void)
{
    test_greedy("ref");
}
/* The fast backend gives the same 32 tokens on every prompt (checked): test it as well. */
static void test_greedy_cpu(void)
{
    test_greedy("cpu");
}

/* Sampled text through the chat template: same seed, same text; another seed, another text. */
static void test_seed(void)
{
    char *texts[3] = {0};
    const char *seeds[3] = {"42", "42", "43"};
    for (int i = 0; i < 3; i++) {
        const char *args[] = {"run",    "-m",           model_path, "-p",     "Tell me a story.",
                              "--temp", "0.8",          "--seed",   seeds[i], "-n",
                              "24",     "--ignore-eos", NULL};
        struct proc p;
        CHECK(spawn(args, NULL, &p) == 0 && p.status == 0, "seed %s: exit %d: %s", seeds[i],
              p.status, p.err ? p.err : "");
        CHECK(p.err && strstr(p.err, "reply: 24 tokens") && strstr(p.err, "finish: length"),
              "seed %s: stderr: %s", seeds[i], p.err);
        texts[i] = p.out, p.out = NULL;
        proc_free(&p);
    }
    if (texts[0] && texts[1] && texts[2]) {
        CHECK(strlen(texts[0]) > 1, "empty text: '%s'", texts[0]);
        CHECK(!strcmp(texts[0], texts[1]), "seed 42 twice: '%s' vs '%s'", texts[0], texts[1]);
        CHECK(strcmp(texts[0], texts[2]) != 0, "seeds 42 and 43 agree: '%s'", texts[0]);
    }
    for (int i = 0; i < 3; i++)
        free(texts[i]);
}

/* Turn k's (1-based) "conversation: N tokens, cached: C, new: W" from chat's --verbose lines. */
static int turn_stats(const char *err, int k, int *conv, int *cached, int *fresh)
{
    char key[32];
    snprintf(key, sizeof key, "[turn %d]", k);
    const char *s = strstr(err, key);
    return s && sscanf(s + strlen(key), " conversation: %d tokens, cached: %d, new: %d", conv,
                       cached, fresh) == 3
               ? 0
               : -1;
}

static int count(const char *s, const char *needle)
{
    int n = 0;
    for (; (s = strstr(s, needle)) != NULL; s += strlen(needle))
        n++;
    return n;
}

/* Piped chat: one reply per line, the second turn feeds only what the cache lacks, /reset
 * starts over, /exit ends (the line after it is never answered). */
static void test_chat(void)
{
    const char *args[] = {"chat",   "-m",  model_path, "--verbose", "--seed", "7",
                          "--temp", "0.8", "-n",       "16",        NULL};
    const char *input = "Hello there\nHow are you?\n/reset\nHello there\n/exit\nNever answered\n";
    struct proc p;
    CHECK(spawn(args, input, &p) == 0 && p.status == 0, "chat: exit %d: %s", p.status,
          p.err ? p.err : "");
    if (!p.err || !p.out) {
        proc_free(&p);
        return;
    }
    int conv[4] = {0}, cached[4] = {0}, fresh[4] = {0};
    CHECK(count(p.err, "[turn ") == 3, "expected 3 turns: %s", p.err);
    for (int k = 1; k <= 3; k++)
        CHECK(turn_stats(p.err, k, &conv[k], &cached[k], &fresh[k]) == 0, "no turn %d: %s", k,
              p.err);
    CHECK(count(p.out, "\n") >= 3, "expected 3 replies on stdout: '%s'", p.out);
    CHECK(cached[1] == 0 && fresh[1] == conv[1], "turn 1: %d/%d/%d", conv[1], cached[1], fresh[1]);
    CHECK(conv[2] > conv[1], "turn 2 conversation %d <= turn 1's %d", conv[2], conv[1]);
    CHECK(fresh[2] > 0 && fresh[2] < conv[2] && cached[2] >= conv[1],
          "turn 2 fed %d of %d tokens (cached %d; turn 1's prompt was %d)", fresh[2], conv[2],
          cached[2], conv[1]);
    CHECK(conv[3] == conv[1] && cached[3] == 0, "after /reset: %d tokens, %d cached (want %d, 0)",
          conv[3], cached[3], conv[1]);
    proc_free(&p);
}

/* Reusing the cache between turns changes nothing: the same seeded chat gives the same replies
 * as one that processes the whole conversation every turn (--no-cache). */
static void test_chat_cache_exact(void)
{
    const char *input = "Hello there\nHow are you?\nAnd then?\n";
    char *outs[2] = {0};
    for (int i = 0; i < 2; i++) {
        const char *args[] = {"chat", "-m",     model_path, "--backend",
                              "ref",  "--seed", "7",        "--temp",
                              "0.8",  "-n",     "16",       i ? "--no-cache" : NULL,
                              NULL};
        struct proc p;
        CHECK(spawn(args, input, &p) == 0 && p.status == 0, "chat %d: exit %d: %s", i, p.status,
              p.err ? p.err : "");
        outs[i] = p.out, p.out = NULL;
        proc_free(&p);
    }
    if (outs[0] && outs[1]) {
        CHECK(count(outs[0], "\n") >= 3, "expected 3 replies: '%s'", outs[0]);
        CHECK(!strcmp(outs[0], outs[1]), "cached chat '%s' vs fresh '%s'", outs[0], outs[1]);
    }
    free(outs[0]);
    free(outs[1]);
}

static void expect_exit(const char *const *args, int code, const char *needle)
{
    struct proc p;
    CHECK(spawn(args, NULL, &p) == 0, "cannot run %s", exsa_bin());
    CHECK(p.status == code, "%s %s: exit %d, want %d: %s", args[0], args[args[1] ? 1 : 0], p.status,
          code, p.err ? p.err : "");
    if (needle)
        CHECK(p.err && strstr(p.err, needle), "stderr lacks '%s': %s", needle, p.err);
    proc_free(&p);
}

static void test_bad_flags(void)
{
    const char *m = model_path;
    expect_exit((const char *[]){"run", "-m", m, "-p", "x", "--bogus", NULL}, 2, "usage");
    expect_exit((const char *[]){"run", "-m", m, NULL}, 2, "-p");
    expect_exit((const char *[]){"run", "-m", m, "-p", "x", "--temp", "hot", NULL}, 2, "--temp");
    expect_exit((const char *[]){"run", "-m", m, "-p", "x", "-n", "-5", NULL}, 2, "-n");
    expect_exit((const char *[]){"run", "-m", m, "-p", "x", "--top-p", "1.5", NULL}, 2, NULL);
    expect_exit((const char *[]){"run", "-m", m, "-p", "x", "--backend", "gpu9", NULL}, 2, NULL);
    expect_exit((const char *[]){"run", "-m", m, "-p", "x", "--seed", NULL}, 2, "--seed");
    expect_exit((const char *[]){"chat", "-m", m, "--raw", NULL}, 2, "--raw");
    expect_exit((const char *[]){"run", "--help", NULL}, 0, NULL);
    /* a switch's value is checked, not taken as false */
    expect_exit((const char *[]){"serve", "--deterministic=maybe", NULL}, 2,
                "expected true or false");
    expect_exit((const char *[]){"bench", "-m", m, "--deterministic", "-p", "8", "-n", "2", "-r",
                                 "1", "-t", "1", NULL},
                0, NULL);
}

static void test_errors(void)
{
    char missing[600];
    snprintf(missing, sizeof missing, "%s/no-such-model.gguf", fixtures_dir());
    expect_exit((const char *[]){"run", "-m", missing, "-p", "hi", NULL}, 1, "no-such-model.gguf");
    expect_exit((const char *[]){"chat", "-m", missing, NULL}, 1, "no-such-model.gguf");
    /* A prompt longer than the context: both numbers are named. 40 x "hello " is 41+ ids. */
    char prompt[512] = "";
    for (int i = 0; i < 40; i++)
        strcat(prompt, "hello ");
    struct proc p;
    const char *args[] = {"run", "-m", model_path, "-p", prompt, "--raw", "-c", "16", NULL};
    CHECK(spawn(args, NULL, &p) == 0 && p.status == 1, "long prompt: exit %d", p.status);
    int n_tok = 0, n_ctx = 0;
    const char *s = p.err ? strstr(p.err, "the prompt is ") : NULL;
    CHECK(s &&
              sscanf(s, "the prompt is %d tokens, longer than the context of %d", &n_tok, &n_ctx) ==
                  2 &&
              n_tok > 16 && n_ctx == 16,
          "long prompt: %s", p.err);
    proc_free(&p);
}

/* `exsa bench -np N`: the tg test decodes N sequences together; the JSON row names them and
 * its ceiling is N times the one-sequence ceiling (one weight read per step for all); more
 * sequences than a batch holds exit 1 and say why, a count below 1 is a usage error. */
static void test_bench_parallel(void)
{
    double ceiling[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        struct proc p;
        const char *args[] = {"bench", "-m",     model_path, "-p",          "0", "-n",
                              "4",     "-r",     "1",        "-t",          "1", "--bw",
                              "10",    "--json", "-np",      i ? "3" : "1", NULL};
        CHECK(spawn(args, NULL, &p) == 0 && p.status == 0, "bench -np: exit %d %s", p.status,
              p.err ? p.err : "");
        cJSON *j = p.out ? cJSON_Parse(p.out) : NULL, *row = cJSON_GetArrayItem(j, 0);
        const cJSON *np = cJSON_GetObjectItem(row, "n_parallel");
        const cJSON *ts = cJSON_GetObjectItem(row, "avg_ts");
        const cJSON *c = cJSON_GetObjectItem(row, "ceiling_ts");
        CHECK(cJSON_IsNumber(np) && np->valueint == (i ? 3 : 1) && cJSON_IsNumber(ts) &&
                  ts->valuedouble > 0 && cJSON_IsNumber(c),
              "bench -np row: %s", p.out ? p.out : "");
        ceiling[i] = cJSON_IsNumber(c) ? c->valuedouble : 0;
        cJSON_Delete(j);
        proc_free(&p);
    }
    CHECK(ceiling[0] > 0 && ceiling[1] > 2.99 * ceiling[0] && ceiling[1] < 3.01 * ceiling[0],
          "ceilings %g (1 sequence) and %g (3)", ceiling[0], ceiling[1]);
    expect_exit(
        (const char *[]){"bench", "-m", model_path, "-b", "8", "-np", "9", "--bw", "10", NULL}, 1,
        "do not fit");
    expect_exit((const char *[]){"bench", "-m", model_path, "-np", "0", NULL}, 2, "-np");
}

int main(void)
{
    snprintf(model_path, sizeof model_path, "%s/lfm2-tiny-F32.gguf", fixtures_dir());
    snprintf(ref_path, sizeof ref_path, "%s/lfm2-tiny-F32.ref.json", fixtures_dir());
    char err[256] = "";
    if (exsa_model_load(model_path, &model, err, sizeof err) != 0) {
        fprintf(stderr, "cannot load %s: %s\n", model_path, err);
        model = NULL;
    }
    CHECK(model != NULL, "model");
    CHECK(access(exsa_bin(), X_OK) == 0, "no executable %s (make it first)", exsa_bin());
    if (model && access(exsa_bin(), X_OK) == 0) {
        RUN(test_greedy_ref);
        RUN(test_greedy_cpu);
        RUN(test_seed);
        RUN(test_chat);
        RUN(test_chat_cache_exact);
        RUN(test_bad_flags);
        RUN(test_errors);
        RUN(test_bench_parallel);
    } else {
        h_failed++;
    }
    exsa_model_free(model);
    TEST_END();
}
