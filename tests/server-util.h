/*
 * server-util.h: what the end-to-end server tests share (test_server.c, test_server_api.c,
 * test_server_tools.c): starting the real `exsa serve` binary on a free loopback port with
 * environment assignments and flags, stopping it with SIGTERM, requests through curl, shell
 * commands, the checks on bodies, and GGUF copies with extra metadata. Header-only (each test
 * is one translation unit); the globals are the test's.
 */
#ifndef EXSA_SERVER_UTIL_H
#define EXSA_SERVER_UTIL_H

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

/* Paths here are short (a mkdtemp folder, the build folder); truncation cannot happen. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

static char g_build[PATH_MAX], g_exsa[PATH_MAX], g_model[PATH_MAX], g_tmp[PATH_MAX];

struct srv {
    pid_t pid;
    int port;
    char url[64];
    char log[PATH_MAX];
};

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        return 0;
    close(fd);
    return ntohs(a.sin_port);
}

/* Runs a shell command, returns its stdout (malloc'd, NUL-terminated). */
static char *sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    size_t len = 0, cap = 4096;
    char *out = malloc(cap);
    if (!p || !out)
        return out ? (out[0] = 0, out) : NULL;
    size_t n;
    while ((n = fread(out + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (cap - len < 2048)
            out = realloc(out, cap *= 2);
    }
    out[len] = 0;
    pclose(p);
    return out;
}

/* curl: method, path, body (or NULL), its Content-Type ("" sends none), extra curl args; *status
 * gets the HTTP status; returns the body (malloc'd). Safe from several threads: each call has
 * its own files. */
static char *req_ct(const struct srv *s, const char *method, const char *path, const char *body,
                    const char *ctype, const char *extra, int *status)
{
    static _Atomic int calls;
    int k = calls++;
    char bfile[PATH_MAX], ofile[PATH_MAX];
    snprintf(bfile, sizeof bfile, "%s/req-%d.json", g_tmp, k);
    snprintf(ofile, sizeof ofile, "%s/resp-%d.out", g_tmp, k);
    if (body) {
        FILE *f = fopen(bfile, "w");
        fputs(body, f);
        fclose(f);
    }
    char *code = sh("curl -s -m 30 -X %s %s%s -H 'Content-Type:%s' %s -o %s "
                    "-w '%%{http_code}' '%s%s'",
                    method, body ? "--data-binary @" : "", body ? bfile : "", ctype,
                    extra ? extra : "", ofile, s->url, path);
    *status = atoi(code);
    free(code);
    char *out = sh("cat %s 2>/dev/null", ofile);
    unlink(ofile);
    if (body)
        unlink(bfile);
    return out;
}

/* req_ct with a JSON body. */
static char *req(const struct srv *s, const char *method, const char *path, const char *body,
                 const char *extra, int *status)
{
    return req_ct(s, method, path, body, " application/json", extra, status);
}

/* Starts exsa serve with env assignments (NULL-terminated "K=V") and extra flags; returns 0 once
 * /v1/health answers 200 (any_status: answers at all, as it does with 503 with no model). */
static int start_opt(struct srv *s, const char *const *env, const char *flags, bool any_status)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        s->port = free_port();
        snprintf(s->url, sizeof s->url, "http://127.0.0.1:%d", s->port);
        snprintf(s->log, sizeof s->log, "%s/server-%d.log", g_tmp, s->port);
        s->pid = fork();
        if (s->pid == 0) {
            for (int i = 0; env && env[i]; i++)
                putenv((char *)env[i]);
            char port[16];
            snprintf(port, sizeof port, "%d", s->port);
            setenv("PORT", port, 1);
            freopen(s->log, "w", stderr);
            freopen("/dev/null", "w", stdout);
            char cmd[4096];
            snprintf(cmd, sizeof cmd, "exec '%s' serve %s", g_exsa, flags ? flags : "");
            execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
            _exit(127);
        }
        for (int i = 0; i < 100; i++) {
            int st = 0;
            free(req(s, "GET", "/v1/health", NULL, NULL, &st));
            if (st == 200 || (any_status && st != 0))
                return 0;
            if (waitpid(s->pid, &st, WNOHANG) == s->pid)
                break;
            usleep(100000);
        }
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
    }
    char *log = sh("cat %s", s->log);
    fprintf(stderr, "server did not start:\n%s\n", log);
    free(log);
    return -1;
}

static int start(struct srv *s, const char *const *env, const char *flags)
{
    return start_opt(s, env, flags, false);
}

/* SIGTERM and wait; returns the exit status (or -1 when it had to be killed). */
static int stop(struct srv *s)
{
    kill(s->pid, SIGTERM);
    for (int i = 0; i < 150; i++) {
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        usleep(100000);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    return -1;
}

static bool has(const char *s, const char *sub)
{
    return s && strstr(s, sub) != NULL;
}

static inline bool is_error_shape(const char *b)
{
    return has(b, "\"error\":{") && has(b, "\"message\":") && has(b, "\"type\":") &&
           has(b, "\"param\":") && has(b, "\"code\":");
}

/* Writes a copy of the GGUF at src to dst with extra KV pairs (raw GGUF bytes, count of them)
 * inserted after the header, padded with a string KV so that the tensor data stays aligned. */
static inline bool gguf_with_kvs(const char *src, const char *dst, const unsigned char *kv,
                                 size_t len, uint64_t count)
{
    size_t size;
    unsigned char *f = (unsigned char *)read_whole_file(src, &size);
    if (!f || size < 24)
        return free(f), false;
    unsigned char pad[128];
    const char key[] = "exsa.test.pad";
    size_t plen = 8 + sizeof key - 1 + 4 + 8, fill = (64 - (len + plen) % 64) % 64;
    uint64_t kl = sizeof key - 1, vl = fill;
    uint32_t t = 8; /* STRING */
    memcpy(pad, &kl, 8), memcpy(pad + 8, key, kl), memcpy(pad + 8 + kl, &t, 4);
    memcpy(pad + 12 + kl, &vl, 8), memset(pad + plen, 'x', fill);
    uint64_t n_kv;
    memcpy(&n_kv, f + 16, 8);
    n_kv += count + 1;
    memcpy(f + 16, &n_kv, 8);
    FILE *o = fopen(dst, "wb");
    bool ok = o && fwrite(f, 1, 24, o) == 24 && fwrite(kv, 1, len, o) == len &&
              fwrite(pad, 1, plen + fill, o) == plen + fill &&
              fwrite(f + 24, 1, size - 24, o) == size - 24;
    if (o)
        ok = fclose(o) == 0 && ok;
    free(f);
    return ok;
}

/* Appends a KV (key, GGUF type t, value bytes) to buf at *len. */
static inline void put_kv(unsigned char *buf, size_t *len, const char *key, uint32_t t,
                          const void *v, size_t vlen)
{
    uint64_t kl = strlen(key);
    memcpy(buf + *len, &kl, 8), memcpy(buf + *len + 8, key, kl), *len += 8 + kl;
    memcpy(buf + *len, &t, 4), memcpy(buf + *len + 4, v, vlen), *len += 4 + vlen;
}

#define JSON_CT "-H 'Content-Type: application/json' "
#define CHAT(extra) "{\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}]" extra "}"

/* Finds the binary (BUILD/exsa, from this test's BUILD/tests/NAME) and the tiny fixture, and
 * makes the temporary folder (name: its mkdtemp template). CHECKs what is missing. */
static void find_paths(const char *argv0, const char *name)
{
    char self[PATH_MAX];
    if (!realpath(argv0, self))
        snprintf(self, sizeof self, "%s", argv0);
    for (int i = 0; i < 2; i++) { /* BUILD/tests/test_server -> BUILD */
        char *sl = strrchr(self, '/');
        if (sl)
            *sl = 0;
    }
    snprintf(g_build, sizeof g_build, "%s", self);
    snprintf(g_exsa, sizeof g_exsa, "%s/exsa", g_build);
    char rel[PATH_MAX];
    snprintf(rel, sizeof rel, "%s/lfm2-tiny-F32.gguf", fixtures_dir());
    CHECK(realpath(rel, g_model) != NULL, "fixture %s missing", rel);
    CHECK(access(g_exsa, X_OK) == 0, "%s missing: build it first (make)", g_exsa);
    snprintf(g_tmp, sizeof g_tmp, "/tmp/%s-XXXXXX", name);
    CHECK(mkdtemp(g_tmp) != NULL, "mkdtemp");
}

#endif
