/*
 * fuzz_chat.c: a libFuzzer target over chat rendering from JSON messages: each input is a chat
 * request body, parsed by job_parse (the server's parser: roles, text parts, tool_calls,
 * tools), a message's "thinking" string read beside it, then rendered with every LFM2-family
 * template (the three real ones in ../shared/fixtures/templates and the tiny model's own) and
 * tokenized on the tiny model's vocabulary. Rendering may refuse (a tool call that is not
 * well-formed) with a negative code, and then tokenizing refuses too; what renders tokenizes,
 * with exactly one BOS, first, whatever the contents say (no control-token injection), and
 * every id inside the vocabulary.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "chat-util.h"
#include "server/server.h"
#include "tokenizer.h"

#define N_TMPL 4
static struct chat_template *tmpl[N_TMPL];
static struct tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const char *const names[3] = {"LFM2-8B-A1B.jinja", "LFM2.5-Instruct.jinja",
                                         "LFM2.5-8B-A1B.jinja"};
    char path[512], err[256] = "";
    struct gguf_file *f = NULL;
    snprintf(path, sizeof path, "%s/lfm2-tiny-F32.gguf", fixtures_dir());
    if (gguf_open(path, &f, err, sizeof err) || tok_load(f, 0, &tok, err, sizeof err) ||
        chat_template_load(f, &tmpl[3], NULL, 0)) {
        fprintf(stderr, "fuzz_chat: %s: %s\n", path, err);
        abort();
    }
    gguf_close(f);
    for (int i = 0; i < 3; i++)
        if (!(tmpl[i] = load_fixture_tmpl(names[i], NULL, 0)))
            abort();
    return 0;
}

/* Sets each message's thinking from its "thinking" string (the parser leaves it NULL). */
static void add_thinking(struct job *j)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j->body, "messages"), *m;
    int i = 0;
    cJSON_ArrayForEach (m, arr) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(m, "thinking");
        if (i < j->n_msgs && cJSON_IsString(t))
            j->msgs[i].thinking = t->valuestring;
        i++;
    }
}

/* Renders and tokenizes j with t; aborts when an invariant breaks. */
static void check_render(const struct chat_template *t, const struct job *j)
{
    char *text = NULL;
    int32_t *ids = NULL;
    int n = 0;
    int rc = chat_render(t, j->msgs, j->n_msgs, j->tools, true, &text);
    if (rc > 0 || (rc == 0 && !text))
        abort();
    int rc2 = chat_tokenize(t, tok, j->msgs, j->n_msgs, j->tools, true, &ids, &n);
    if ((rc == 0) != (rc2 == 0))
        abort();
    int n_bos = 0;
    for (int i = 0; rc2 == 0 && i < n; i++) {
        if (ids[i] < 0 || ids[i] >= tok_n_vocab(tok))
            abort();
        n_bos += ids[i] == tok_bos(tok);
    }
    if (rc2 == 0 && (n < 1 || ids[0] != tok_bos(tok) || n_bos != 1))
        abort();
    free(text);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct job j;
    struct srv_err e;
    if (job_parse(JOB_CHAT, (const char *)data, size, &j, &e) == 0) {
        add_thinking(&j);
        for (int i = 0; i < N_TMPL; i++)
            check_render(tmpl[i], &j);
    }
    job_free(&j);
    return 0;
}
