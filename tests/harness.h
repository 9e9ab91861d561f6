/*
 * harness.h: the tiny test harness. A test is a function; CHECK records a failure with its
 * place and message and lets the test go on; RUN counts the test as passed when no CHECK in it
 * failed. TEST_END prints "N passed, N failed" (the line CI reads) and returns the exit code.
 */
#ifndef EXSA_HARNESS_H
#define EXSA_HARNESS_H

#include <stdio.h>
#include <stdlib.h>

static int h_passed, h_failed, h_cur_failed;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            h_cur_failed++;                                                                        \
            fprintf(stderr, "  FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                      \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        h_cur_failed = 0;                                                                          \
        fn();                                                                                      \
        if (h_cur_failed) {                                                                        \
            h_failed++;                                                                            \
            fprintf(stderr, "[FAIL] %s\n", #fn);                                                   \
        } else {                                                                                   \
            h_passed++;                                                                            \
            fprintf(stderr, "[ ok ] %s\n", #fn);                                                   \
        }                                                                                          \
    } while (0)

#define TEST_END()                                                                                 \
    do {                                                                                           \
        printf("%d passed, %d failed\n", h_passed, h_failed);                                      \
        return h_failed ? 1 : 0;                                                                   \
    } while (0)

/* The fixtures folder: $EXSA_FIXTURES or ../shared/fixtures (tests run from the repo root). */
static inline const char *fixtures_dir(void)
{
    const char *d = getenv("EXSA_FIXTURES");
    return d && *d ? d : "../shared/fixtures";
}

/* The whole file at path, NUL-terminated (malloc'd; caller frees), its length in *size if
 * size is not NULL; NULL if it cannot be read. */
static inline char *read_whole_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) &&
        fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        if (size)
            *size = (size_t)n;
    }
    return buf;
}

#endif
