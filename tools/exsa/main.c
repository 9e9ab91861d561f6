/*
 * main.c: the exsa command line. Dispatches `exsa COMMAND ...` to the command's function; the
 * model commands (logits, inspect) live here, the others in tools/exsa/cmd_*.c. Commands that
 * are not part of this build are declared weak and reported as missing. Only this folder exits.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "exsa.h"

#define WEAK __attribute__((weak))
WEAK int cmd_tokenize(int argc, char **argv);
WEAK int cmd_run(int argc, char **argv);
WEAK int cmd_chat(int argc, char **argv);
WEAK int cmd_serve(int argc, char **argv);
WEAK int cmd_synth(int argc, char **argv);
WEAK int cmd_bench(int argc, char **argv);

struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
};

static int usage(void);

static const struct command *commands(void)
{
    static struct command cmds[16];
    int n = 0;
    cmds[n++] = (struct command){"serve", cmd_serve, "OpenAI-compatible HTTP server"};
    cmds[n++] = (struct command){"run", cmd_run, "generate a reply to one prompt"};
    cmds[n++] = (struct command){"chat", cmd_chat, "interactive chat"};
    cmds[n++] = (struct command){"tokenize", cmd_tokenize, "print token ids of a text"};
    cmds[n++] = (struct command){"logits", cmd_logits, "write the logits of a token sequence"};
    cmds[n++] = (struct command){"inspect", cmd_inspect, "check a GGUF and print what it holds"};
    cmds[n++] = (struct command){"bench", cmd_bench, "prefill and decode speed"};
    cmds[n++] = (struct command){"synth", cmd_synth, "write a random-weight LFM2 GGUF"};
    cmds[n] = (struct command){0};
    return cmds;
}

static int usage(void)
{
    fprintf(stderr,
            "exsa %s: a local inference engine for LFM2 models\nusage: exsa COMMAND "
            "[options]   (exsa COMMAND --help for its options)\n\ncommands:\n",
            EXSA_VERSION);
    for (const struct command *c = commands(); c->name; c++)
        fprintf(stderr, "  %-9s %s%s\n", c->name, c->help, c->fn ? "" : " (not in this build)");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))
        return usage();
    if (!strcmp(argv[1], "--version")) {
        printf("exsa %s\n", EXSA_VERSION);
        return 0;
    }
    for (const struct command *c = commands(); c->name; c++) {
        if (strcmp(argv[1], c->name) != 0)
            continue;
        if (!c->fn) {
            fprintf(stderr, "exsa: command '%s' is not part of this build\n", c->name);
            return 2;
        }
        return c->fn(argc - 1, argv + 1);
    }
    fprintf(stderr, "exsa: unknown command '%s'\n", argv[1]);
    return usage();
}
