/* tests/unit/test.h -- the unit-test harness: each test file is one executable (one ctest
 * entry); each TEST() runs in its own forked process with a timeout, so a crash or a hang fails
 * that test alone and the others still report. Ends with "N passed, N failed". */
#ifndef WEIR_TEST_H
#define WEIR_TEST_H

#include <sys/wait.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef void (*test_fn)(void);

struct test_case {
    const char *name;
    test_fn fn;
};

#define TEST_MAX 256
static struct test_case test_cases[TEST_MAX];
static int test_count;

#define TEST(name)                                                                                 \
    static void test_##name(void);                                                                 \
    __attribute__((constructor)) static void register_##name(void)                                 \
    {                                                                                              \
        if (test_count < TEST_MAX)                                                                 \
            test_cases[test_count++] = (struct test_case){#name, test_##name};                     \
    }                                                                                              \
    static void test_##name(void)

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                            \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        exit(1);                                                                                   \
    } while (0)

#define ASSERT(cond)                                                                               \
    do {                                                                                           \
        if (!(cond))                                                                               \
            FAIL("assertion failed: %s", #cond);                                                   \
    } while (0)

#define ASSERT_EQ(a, b)                                                                            \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_)                                                                              \
            FAIL("%s == %s: %lld != %lld", #a, #b, a_, b_);                                        \
    } while (0)

#define ASSERT_STREQ(a, b)                                                                         \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                                       \
            FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");    \
    } while (0)

/* Compares a (pointer, length) slice with a C string. */
#define ASSERT_SLICE(p, len, s)                                                                    \
    do {                                                                                           \
        const char *s_ = (s);                                                                      \
        size_t l_ = (size_t)(len);                                                                 \
        if (l_ != strlen(s_) || memcmp((p), s_, l_) != 0)                                          \
            FAIL("%s == \"%s\": got \"%.*s\"", #p, s_, (int)l_, (const char *)(p));                \
    } while (0)

int main(int argc, char **argv)
{
    int passed = 0, failed = 0;

    for (int i = 0; i < test_count; i++) {
        if (argc > 1 && strcmp(argv[1], test_cases[i].name) != 0)
            continue;
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            alarm(60);
            test_cases[i].fn();
            exit(0);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
            passed++;
            printf("ok   %s\n", test_cases[i].name);
        } else {
            failed++;
            printf("FAIL %s (%s %d)\n", test_cases[i].name, WIFSIGNALED(st) ? "signal" : "exit",
                   WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

#endif /* WEIR_TEST_H */
