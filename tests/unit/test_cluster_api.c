/* The API node's side of the cluster (cluster/api.h) against a real redis-server started here
 * on a loopback port, with this test playing the worker through hiredis: cluster_execute (the
 * blocking seam) gets the answer a worker writes, a cancelled wait takes its job off the stream
 * and sets its cancel flag, and Redis going away is a prompt error that names it. Skipped when
 * redis-server is not installed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cluster/api.h"
#include "cluster/keys.h"
#include "cluster/registry.h"
#include "pipeline/config.h"

static pid_t redis_pid = -1;
static int redis_port;
static char url[64];

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        return -1;
    close(fd);
    return ntohs(a.sin_port);
}

static redisContext *connect_redis(void)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    return c;
}

static int start_redis(void)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", redis_port);
    redis_pid = fork();
    if (redis_pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
            _exit(127);
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", "/tmp", "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) {
        redisContext *c = connect_redis();
        if (c) {
            redisFree(c);
            return 0;
        }
        int st;
        if (waitpid(redis_pid, &st, WNOHANG) == redis_pid) {
            redis_pid = -1;
            return -1;
        }
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

static void stop_redis(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGKILL);
        while (waitpid(redis_pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    redis_pid = -1;
}

static const char *lookup(const char *name)
{
    return strcmp(name, "REDIS_URL") == 0 ? url : NULL;
}

static struct ev_config cfg;

static int setup(void **state)
{
    (void)state;
    redis_port = free_port();
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", redis_port);
    struct ev_err err;
    if (config_load(&cfg, lookup, &err) < 0)
        return -1;
    return start_redis() < 0 ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    stop_redis();
    return 0;
}

/* The worker's part: takes one job, checks its fields, answers it. */
static void *fake_worker(void *arg)
{
    (void)arg;
    redisContext *c = connect_redis();
    assert_non_null(c);
    freeReplyObject(redisCommand(c, "XGROUP CREATE %s %s 0 MKSTREAM", KEY_JOBS, JOBS_GROUP));
    redisReply *r = NULL;
    for (int i = 0; i < 50; i++) {
        r = redisCommand(c, "XREADGROUP GROUP %s w COUNT 1 BLOCK 100 STREAMS %s >", JOBS_GROUP,
                         KEY_JOBS);
        if (r && r->type == REDIS_REPLY_ARRAY)
            break;
        freeReplyObject(r);
        r = NULL;
    }
    assert_non_null(r);
    redisReply *e = r->element[0]->element[1]->element[0];
    redisReply *f = e->element[1];
    const char *job = NULL, *reply = NULL;
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        const char *k = f->element[i]->str;
        const char *v = f->element[i + 1]->str;
        if (strcmp(k, "job") == 0)
            job = v;
        else if (strcmp(k, "reply") == 0)
            reply = v;
        else if (strcmp(k, "rid") == 0)
            assert_string_equal(v, "rid-1");
        else if (strcmp(k, "flags") == 0)
            assert_string_equal(v, "is_project,");
        else if (strcmp(k, "body") == 0)
            assert_memory_equal(v, "hello\0body", 10);
    }
    assert_non_null(job);
    assert_non_null(reply);
    freeReplyObject(
        redisCommand(c, "XADD %s * job %s status 200 body %s", reply, job, "{\"ok\":true}"));
    freeReplyObject(r);
    redisFree(c);
    return NULL;
}

static void execute_gets_the_workers_answer(void **state)
{
    (void)state;
    struct ev_err err;
    struct cluster_api *a = cluster_api_start(&cfg, &err);
    assert_non_null(a);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, fake_worker, NULL), 0);
    int status = 0;
    char *json = NULL;
    size_t len = 0;
    int rc = cluster_execute(a, "rid-1", "is_project,", "hello\0body", 10, NULL, NULL, &status,
                             &json, &len, &err);
    pthread_join(th, NULL);
    assert_int_equal(rc, 0);
    assert_int_equal(status, 200);
    assert_string_equal(json, "{\"ok\":true}");
    assert_int_equal(len, strlen("{\"ok\":true}"));
    free(json);
    cluster_api_stop(a);
}

static int polls;

static bool cancel_at_second_poll(void *ctx)
{
    (void)ctx;
    return ++polls >= 2;
}

static void cancelled_wait_takes_the_job_away(void **state)
{
    (void)state;
    struct ev_err err;
    struct cluster_api *a = cluster_api_start(&cfg, &err);
    assert_non_null(a);
    redisContext *c = connect_redis();
    assert_non_null(c);
    freeReplyObject(redisCommand(c, "DEL %s", KEY_JOBS));
    int status;
    char *json = NULL;
    size_t len;
    polls = 0;
    int rc = cluster_execute(a, "rid-2", "", "body", 4, cancel_at_second_poll, NULL, &status, &json,
                             &len, &err);
    assert_int_equal(rc, -1);
    assert_int_equal(err.errnum, ECANCELED);
    redisReply *r = redisCommand(c, "XLEN %s", KEY_JOBS);
    assert_int_equal(r->integer, 0); /* never delivered */
    freeReplyObject(r);
    r = redisCommand(c, "KEYS %s*", KEY_CANCEL_PREFIX);
    assert_int_equal(r->elements, 1); /* and flagged, for a worker that had it */
    freeReplyObject(r);
    redisFree(c);
    cluster_api_stop(a);
}

/* The registry's ids, names and versions are Redis's decisions: ids from its counter (never one
 * taken, even by an explicit id above it), a name or an id taken is a conflict that changes
 * nothing, and every change bumps the version the workers watch and records what it was. */
static void registry_ids_names_and_versions(void **state)
{
    (void)state;
    struct ev_err err;
    struct registry *g = registry_open(&cfg, NULL, &err);
    assert_non_null(g);
    const char def[] = "{\"name\": \"a\"}";
    int64_t id = 0;
    long long v = 0;
    enum registry_conflict c;
    assert_int_equal(registry_add(g, "a", def, strlen(def), 0, &id, &v, &c, &err), 0);
    assert_int_equal(c, REGISTRY_OK);
    assert_int_equal(id, 1);
    assert_int_equal(v, 1);
    assert_int_equal(registry_add(g, "b", def, strlen(def), 7, &id, &v, &c, &err), 0);
    assert_int_equal(c, REGISTRY_OK);
    assert_int_equal(id, 7);
    assert_int_equal(registry_add(g, "c", def, strlen(def), 0, &id, &v, &c, &err), 0);
    assert_int_equal(id, 8); /* past the explicit 7 */
    assert_int_equal(v, 3);
    assert_int_equal(registry_add(g, "a", def, strlen(def), 0, &id, &v, &c, &err), 0);
    assert_int_equal(c, REGISTRY_NAME_TAKEN);
    assert_int_equal(registry_add(g, "d", def, strlen(def), 7, &id, &v, &c, &err), 0);
    assert_int_equal(c, REGISTRY_ID_TAKEN);
    bool found;
    assert_int_equal(registry_delete(g, 7, &found, &v, &err), 0);
    assert_true(found);
    assert_int_equal(v, 4);
    assert_int_equal(registry_delete(g, 7, &found, &v, &err), 0);
    assert_false(found);
    json_t *list = registry_list(g, &err);
    assert_non_null(list);
    char *text = json_dumps(list, JSON_COMPACT);
    assert_string_equal(text, "[{\"id\":1,\"name\":\"a\"},{\"id\":8,\"name\":\"c\"}]");
    free(text);
    json_decref(list);
    char *got = NULL, hash[72];
    size_t len;
    assert_int_equal(registry_get(g, 8, &got, &len, hash, &err), 0);
    assert_non_null(got);
    assert_memory_equal(got, def, sizeof(def));
    assert_string_equal(hash, ""); /* no worker has installed it */
    free(got);
    assert_int_equal(registry_get(g, 7, &got, &len, hash, &err), 0);
    assert_null(got);
    /* the name of a deleted runtime is free again */
    assert_int_equal(registry_add(g, "b", def, strlen(def), 0, &id, &v, &c, &err), 0);
    assert_int_equal(c, REGISTRY_OK);
    assert_int_equal(id, 9);
    redisContext *rc = connect_redis();
    assert_non_null(rc);
    redisReply *r = redisCommand(rc, "GET " KEY_RT_CHANGE_PREFIX "4");
    assert_string_equal(r->str, "del 7");
    freeReplyObject(r);
    redisFree(rc);
    registry_close(g);
}

static void redis_away_is_a_prompt_error(void **state)
{
    (void)state;
    struct ev_err err;
    struct cluster_api *a = cluster_api_start(&cfg, &err);
    assert_non_null(a);
    stop_redis();
    int status;
    char *json = NULL;
    size_t len;
    int rc = cluster_execute(a, "rid-3", "", "body", 4, NULL, NULL, &status, &json, &len, &err);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err.msg, "Redis at 127.0.0.1:"));
    assert_non_null(strstr(err.msg, "is unreachable"));
    json_t *h = cluster_health(a, &err);
    assert_null(h);
    assert_non_null(strstr(err.msg, "unreachable"));
    cluster_api_stop(a);
    assert_int_equal(start_redis(), 0); /* for teardown's symmetry */
}

int main(void)
{
    if (system("command -v redis-server >/dev/null 2>&1") != 0) {
        printf("test_cluster_api: skipped (redis-server is not installed)\n");
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(execute_gets_the_workers_answer),
        cmocka_unit_test(cancelled_wait_takes_the_job_away),
        cmocka_unit_test(registry_ids_names_and_versions),
        cmocka_unit_test(redis_away_is_a_prompt_error),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
