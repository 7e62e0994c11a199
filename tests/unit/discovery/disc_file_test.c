/* tests/unit/discovery/disc_file_test.c -- the "file" provider (discovery/disc_file.c) on a real
 * libuv loop: what it sees through inotify alone (the stat poll is pushed out of the way), the
 * way Kubernetes updates a ConfigMap volume, a file deleted and created again, a file it may not
 * read, something other than a regular file at its path, and freshness without changes. */
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include <weir/disc.h>
#include <weir/wr.h>
#include <weir/xds.h>

#include "../../../discovery/disc_priv.h"
#include "test.h"

struct seen {
    unsigned views;
    json_t *last;
};

static void on_view(void *arg, struct disc_provider *p, json_t *view)
{
    struct seen *s = arg;

    (void)p;
    s->views++;
    json_decref(s->last);
    s->last = view;
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

/* Runs <loop> until *<counter> reaches <want> or <ms> milliseconds pass; returns the count. */
static unsigned run_until(uv_loop_t *loop, const unsigned *counter, unsigned want, unsigned ms)
{
    uv_timer_t tick;
    uint64_t end = wr_mono_ns() / 1000000u + ms;

    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, on_tick, 10, 10);
    while (*counter < want && wr_mono_ns() / 1000000u < end)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return *counter;
}

/* The port of the first endpoint of the first cluster of the last view. */
static const char *last_address(const struct seen *s)
{
    json_t *c = json_array_get(json_object_get(s->last, "clusters"), 0);
    return json_string_value(
        json_object_get(json_array_get(json_object_get(c, "endpoints"), 0), "address"));
}

static void write_at(const char *path, const char *text, mode_t mode)
{
    char *tmp = wr_xasprintf("%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, mode);

    ASSERT(fd >= 0);
    ASSERT(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    ASSERT(chmod(tmp, mode) == 0);
    ASSERT(rename(tmp, path) == 0);
    free(tmp);
}

static char *services(unsigned port)
{
    return wr_xasprintf("{\"clusters\": [{\"name\": \"svc\", \"endpoints\": [{\"address\": "
                        "\"127.0.0.1:%u\"}]}]}",
                        port);
}

struct fixture {
    uv_loop_t loop;
    char dir[64];
    char *path;
    struct seen seen;
    struct disc_provider *p;
};

static void fx_init(struct fixture *fx, const char *name)
{
    memset(fx, 0, sizeof(*fx));
    strcpy(fx->dir, "/tmp/disc_file_test.XXXXXX");
    ASSERT(mkdtemp(fx->dir) != NULL);
    ASSERT(chmod(fx->dir, 0777) == 0);
    fx->path = wr_xasprintf("%s/%s", fx->dir, name);
    uv_loop_init(&fx->loop);
}

/* Starts the provider; <poll_ms> 0 keeps the default poll, else replaces it (a long one leaves
 * inotify alone to see changes). */
static void fx_start(struct fixture *fx, uint32_t poll_ms)
{
    struct xds_discovery cfg = {.type = XDS_SRC_FILE, .path = fx->path, .stale_after_ms = 300};

    fx->p = disc_provider_new(&fx->loop, &cfg, 0, NULL, on_view, &fx->seen);
    ASSERT(fx->p != NULL);
    fx->p->poll_ms = poll_ms;
    ASSERT_EQ(disc_provider_start(fx->p), 0);
}

static uint64_t errors(struct fixture *fx, enum disc_reason r)
{
    struct disc_status st;

    disc_provider_status(fx->p, &st);
    return st.errors[r];
}

static void fx_done(struct fixture *fx)
{
    char *cmd = wr_xasprintf("rm -rf '%s'", fx->dir);

    disc_provider_close(fx->p);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&fx->loop), 0);
    json_decref(fx->seen.last);
    ASSERT_EQ(system(cmd), 0);
    free(cmd);
    free(fx->path);
}

#define NO_POLL 3600000u

/* A ConfigMap volume: services.json -> ..data/services.json, ..data -> ..<timestamp>; an update
 * writes a new timestamped folder, points ..data_tmp at it and renames ..data_tmp over ..data.
 * No event names services.json. */
TEST(configmap_data_flip_seen_by_inotify)
{
    struct fixture fx;
    char *a, *b, *t1, *t2;

    fx_init(&fx, "services.json");
    t1 = wr_xasprintf("%s/..2024_01_01_00_00_00.1", fx.dir);
    t2 = wr_xasprintf("%s/..2024_01_01_00_01_00.2", fx.dir);
    ASSERT(mkdir(t1, 0755) == 0 && mkdir(t2, 0755) == 0);
    a = wr_xasprintf("%s/services.json", t1);
    b = wr_xasprintf("%s/services.json", t2);
    char *s1 = services(9001), *s2 = services(9002);
    write_at(a, s1, 0644);
    write_at(b, s2, 0644);
    char *data = wr_xasprintf("%s/..data", fx.dir),
         *data_tmp = wr_xasprintf("%s/..data_tmp", fx.dir);
    ASSERT(symlink("..2024_01_01_00_00_00.1", data) == 0);
    ASSERT(symlink("..data/services.json", fx.path) == 0);

    fx_start(&fx, NO_POLL);
    ASSERT_EQ(run_until(&fx.loop, &fx.seen.views, 1, 5000), 1);
    ASSERT_STREQ(last_address(&fx.seen), "127.0.0.1:9001");
    ASSERT(symlink("..2024_01_01_00_01_00.2", data_tmp) == 0);
    ASSERT(rename(data_tmp, data) == 0);
    ASSERT_EQ(run_until(&fx.loop, &fx.seen.views, 2, 5000), 2);
    ASSERT_STREQ(last_address(&fx.seen), "127.0.0.1:9002");
    fx_done(&fx);
    free(a);
    free(b);
    free(t1);
    free(t2);
    free(s1);
    free(s2);
    free(data);
    free(data_tmp);
}

/* Deleted: an error, the last view stays (no callback). Created again: the new view. */
TEST(deleted_then_recreated)
{
    struct fixture fx;
    char *s1 = services(9001), *s2 = services(9002);

    fx_init(&fx, "services.json");
    write_at(fx.path, s1, 0644);
    fx_start(&fx, NO_POLL);
    ASSERT_EQ(run_until(&fx.loop, &fx.seen.views, 1, 5000), 1);
    ASSERT(unlink(fx.path) == 0);
    uint64_t gone = 0;
    for (int i = 0; i < 500 && gone == 0; i++) {
        run_until(&fx.loop, &fx.seen.views, 2, 10);
        gone = errors(&fx, DISC_ERR_CONNECT);
    }
    ASSERT_EQ(gone, 1);
    ASSERT_EQ(fx.seen.views, 1);
    write_at(fx.path, s2, 0644);
    ASSERT_EQ(run_until(&fx.loop, &fx.seen.views, 2, 5000), 2);
    ASSERT_STREQ(last_address(&fx.seen), "127.0.0.1:9002");
    fx_done(&fx);
    free(s1);
    free(s2);
}

/* A file the process may not read: an error, the last view stays; readable again: its view. */
TEST(permission_denied_then_granted)
{
    struct fixture fx;
    char *s1 = services(9001), *s2 = services(9002);

    fx_init(&fx, "services.json");
    write_at(fx.path, s1, 0644);
    if (geteuid() == 0) { /* root reads everything: become "nobody" (this test's process) */
        ASSERT(chown(fx.path, 65534, 65534) == 0 && chown(fx.dir, 65534, 65534) == 0);
        ASSERT(setgid(65534) == 0 && setuid(65534) == 0);
    }
    fx_start(&fx, NO_POLL);
    ASSERT_EQ(run_until(&fx.loop, &fx.seen.views, 1, 5000), 1);
    write_at(fx.path, s2, 0);
    uint64_t denied = 0;
    for (int i = 0; i < 500 && denied == 0; i++) {
        run_until(&fx.loop, &fx.seen.views, 2, 10);
        denied = errors(&fx, DISC_ERR_CONNECT);
    }
    ASSERT_EQ(denied, 1);
    ASSERT_EQ(fx.seen.views, 1);
    ASSERT_STREQ(fx.p->last_error ? strstr(fx.p->last_error, "Permission denied") : NULL,
                 "Permission denied; the last good view stays");
    ASSERT(chmod(fx.path, 0644) == 0);
    ASSERT_EQ(run_until(&fx.loop, &fx.seen.views, 2, 5000), 2);
    ASSERT_STREQ(last_address(&fx.seen), "127.0.0.1:9002");
    fx_done(&fx);
    free(s1);
    free(s2);
}

/* A FIFO at the path must not block the loop in open(); a folder is an error, not an empty
 * file. A regular file renamed over either is read. */
TEST(fifo_or_folder_at_the_path)
{
    struct fixture fx;
    char *s1 = services(9001);

    fx_init(&fx, "services.json");
    ASSERT(mkfifo(fx.path, 0644) == 0);
    fx_start(&fx, 50);
    run_until(&fx.loop, &fx.seen.views, 1, 200);
    ASSERT_EQ(fx.seen.views, 0);
    ASSERT(errors(&fx, DISC_ERR_CONNECT) >= 1);
    ASSERT_EQ(errors(&fx, DISC_ERR_PARSE), 0);
    ASSERT(unlink(fx.path) == 0 && mkdir(fx.path, 0755) == 0);
    run_until(&fx.loop, &fx.seen.views, 1, 200);
    ASSERT_EQ(fx.seen.views, 0);
    ASSERT_EQ(errors(&fx, DISC_ERR_PARSE), 0);
    ASSERT(strstr(fx.p->last_error, "Is a directory") != NULL);
    ASSERT(rmdir(fx.path) == 0);
    write_at(fx.path, s1, 0644);
    ASSERT_EQ(run_until(&fx.loop, &fx.seen.views, 1, 5000), 1);
    fx_done(&fx);
    free(s1);
}

/* A file that does not change keeps its provider fresh (stale_after_ms is 300 here), and the
 * same content written again is no new view. */
TEST(unchanged_file_is_fresh_and_not_repeated)
{
    struct fixture fx;
    struct disc_status st;
    char *s1 = services(9001);

    fx_init(&fx, "services.json");
    write_at(fx.path, s1, 0644);
    fx_start(&fx, 50);
    ASSERT_EQ(run_until(&fx.loop, &fx.seen.views, 1, 5000), 1);
    write_at(fx.path, s1, 0644); /* a new inode, the same text */
    run_until(&fx.loop, &fx.seen.views, 2, 1000);
    ASSERT_EQ(fx.seen.views, 1);
    disc_provider_status(fx.p, &st);
    ASSERT(!st.stale);
    ASSERT_EQ(st.updates, 1);
    fx_done(&fx);
    free(s1);
}

/* disc__read_file(): what it refuses, with errno. */
TEST(read_file_errors)
{
    char dir[] = "/tmp/disc_read_test.XXXXXX";
    size_t len;

    ASSERT(mkdtemp(dir) != NULL);
    errno = 0;
    ASSERT(disc__read_file(dir, &len, false) == NULL && errno == EISDIR);
    char *fifo = wr_xasprintf("%s/fifo", dir);
    ASSERT(mkfifo(fifo, 0600) == 0);
    errno = 0;
    ASSERT(disc__read_file(fifo, &len, false) == NULL && errno == EINVAL);
    errno = 0;
    ASSERT(disc__read_file("/nonexistent/x", &len, false) == NULL && errno == ENOENT);
    unlink(fifo);
    rmdir(dir);
    free(fifo);
}
