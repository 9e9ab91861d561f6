/*
 * chat-util.h: chat templates for tests and fuzz targets, loaded the way a model file gives
 * them: from an in-memory GGUF that holds only tokenizer.chat_template. Used by test_chat.c and
 * fuzz_chat.c (header-only; needs gguf.c, gguf-write.c and chat.c linked).
 */
#ifndef EXSA_CHAT_UTIL_H
#define EXSA_CHAT_UTIL_H

#include <stdio.h>
#include <stdlib.h>

#include "chat.h"
#include "gguf.h"
#include "harness.h"

/* A template loaded from an in-memory GGUF that holds only tmpl (NULL: no template key). */
static inline struct chat_template *load_tmpl(const char *tmpl, char *warn, size_t warnlen)
{
    struct gguf_writer *w = gguf_writer_new();
    gguf_w_str(w, "general.architecture", "lfm2");
    if (tmpl)
        gguf_w_str(w, "tokenizer.chat_template", tmpl);
    uint8_t *mem = NULL;
    size_t size = 0;
    struct gguf_file *f = NULL;
    struct chat_template *t = NULL;
    char err[256];
    if (gguf_writer_to_mem(w, &mem, &size) == 0 &&
        gguf_open_mem(mem, size, &f, err, sizeof err) == 0)
        chat_template_load(f, &t, warn, warnlen);
    gguf_close(f);
    free(mem);
    gguf_writer_free(w);
    return t;
}

/* The template of ../shared/fixtures/templates/name, or NULL. */
static inline struct chat_template *load_fixture_tmpl(const char *name, char *warn, size_t warnlen)
{
    char path[512];
    snprintf(path, sizeof path, "%s/templates/%s", fixtures_dir(), name);
    char *src = read_whole_file(path, NULL);
    struct chat_template *t = src ? load_tmpl(src, warn, warnlen) : NULL;
    free(src);
    return t;
}

#endif
