/* cli.h: what the exsa command files share: the commands of main.c and option helpers. */
#ifndef EXSA_CLI_H
#define EXSA_CLI_H

#include "exsa.h"

int cmd_logits(int argc, char **argv);
int cmd_inspect(int argc, char **argv);

/* Parses "ref", "cpu" or "cuda"; returns -1 for anything else. */
int cli_parse_backend(const char *s);
/* Parses "f32" or "f16" into an enum exsa_kv_type; returns -1 for anything else. */
int cli_parse_kv_type(const char *s);
/* Parses a decimal int in [lo, hi] into *out; returns 0 or -1 (with a message on stderr). */
int cli_int(const char *opt, const char *s, long lo, long hi, int *out);

#endif
