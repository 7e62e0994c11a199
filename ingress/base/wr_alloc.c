/* ingress/base/wr_alloc.c -- allocation helpers that abort on control-path OOM. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weir/wr.h>

static void oom(size_t n)
{
    fprintf(stderr, "weir: out of memory allocating %zu bytes\n", n);
    abort();
}

void *wr_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (p == NULL)
        oom(n);
    return p;
}

void *wr_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);

    if (p == NULL)
        oom(n * size);
    return p;
}

void *wr_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);

    if (q == NULL)
        oom(n);
    return q;
}

char *wr_xstrdup(const char *s)
{
    return wr_xstrndup(s, strlen(s));
}

char *wr_xstrndup(const char *s, size_t n)
{
    char *p = wr_xmalloc(n + 1);

    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *wr_xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *p = NULL;

    va_start(ap, fmt);
    int n = vasprintf(&p, fmt, ap);
    va_end(ap);
    if (n < 0)
        oom(0);
    return p;
}
