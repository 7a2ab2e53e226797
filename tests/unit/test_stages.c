/* Unit tests of the pipeline's shared steps: which runtime scripts are exec'd directly and
 * which go through bash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "pipeline/stages.h"

static void expect_words(const char *script, const char *const *words)
{
    struct script_argv sa;
    script_argv_init(&sa, "bash", script, "/runtime/run.sh");
    size_t i = 0;
    for (; words[i]; i++) {
        assert_non_null(sa.argv[i]);
        assert_string_equal(sa.argv[i], words[i]);
    }
    assert_null(sa.argv[i]);
    script_argv_free(&sa);
}

static void expect_bash(const char *script)
{
    const char *const words[] = {"bash", "-c", script, "/runtime/run.sh", NULL};
    expect_words(script, words);
}

static void test_plain_commands_are_exec_d(void **state)
{
    (void)state;
    expect_words("./main", (const char *const[]){"./main", NULL});
    expect_words("python3 main.py", (const char *const[]){"python3", "main.py", NULL});
    expect_words("  java  -Xss64m\t-cp /box Main ",
                 (const char *const[]){"java", "-Xss64m", "-cp", "/box", "Main", NULL});
    expect_words(
        "gcc -O2 -std=gnu17 -o main main.c -lm",
        (const char *const[]){"gcc", "-O2", "-std=gnu17", "-o", "main", "main.c", "-lm", NULL});
}

static void test_anything_else_goes_through_bash(void **state)
{
    (void)state;
    expect_bash("");
    expect_bash("   ");
    expect_bash("gcc main.c && ./a.out");
    expect_bash("cat *.txt");
    expect_bash("echo $HOME");
    expect_bash("echo hi");         /* a builtin */
    expect_bash("exec ./main");     /* a builtin */
    expect_bash("time ./main");     /* a keyword */
    expect_bash("X=1 ./main");      /* an assignment */
    expect_bash("./main > out");    /* a redirection */
    expect_bash("./main 'quoted'"); /* quoting */
    expect_bash("./main\n./other"); /* two commands */
    expect_bash("~/bin/x");         /* tilde expansion */
    expect_bash("%1");              /* a job */
    expect_bash("./main # comment");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_commands_are_exec_d),
        cmocka_unit_test(test_anything_else_goes_through_bash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
