/* discovery/disc_file.c -- the "file" provider: a JSON file with "clusters", "routes" and
 * "rollouts" in the config file's schema, applied within a second of any change.
 *
 * Change detection: a uv_fs_event on the file's folder (editors replace the file by a rename,
 * which a watch on the file itself would miss) wakes a check at once; a 500 ms stat poll backs
 * it up where inotify does not work (some network and overlay file systems). Events for other
 * names in the folder wake a check too: a Kubernetes ConfigMap volume changes the file by
 * flipping the "..data" symlink its "services.json" symlink goes through, and no event names
 * the file then. A check compares size, mtime, ctime and inode (of the file the path leads to)
 * with the last read and re-reads only on a difference, or while the file's mtime is within
 * RACY_S of the read: a file system with coarse timestamps shows two same-size writes in one
 * tick as one, so such a "racy" read is confirmed by reading again and comparing the content
 * (as git does for its index). A file that cannot be read or parsed is reported once per
 * distinct problem and the last good view stays; the content itself is validated by the merge
 * in xds/ (a view that does not build is rejected there and the previous one stays as well).
 */
#include <sys/stat.h>

#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "disc_priv.h"

#define POLL_MS   500
#define SETTLE_MS 20
#define RACY_S    2

struct file_impl {
    struct disc_provider *p;
    uv_fs_event_t ev;
    uv_timer_t poll, settle;
    unsigned open_handles;
    bool have_stat;
    bool ev_started;
    bool racy;          /* the last read may not have seen a write in the same timestamp tick */
    bool content_ok;    /* the content last read made a view */
    uint64_t last_hash; /* of the content last read */
    struct stat last;
    char *dir, *base;
    char *last_error; /* the last problem reported (reported again only when it changes) */
};

static void report(struct file_impl *f, enum disc_reason reason, const char *msg)
{
    if (f->last_error != NULL && strcmp(f->last_error, msg) == 0)
        return;
    free(f->last_error);
    f->last_error = wr_xstrdup(msg);
    disc__error(f->p, reason, "%s; the last good view stays", msg);
}

static bool same_stat(const struct stat *a, const struct stat *b)
{
    return a->st_size == b->st_size && a->st_ino == b->st_ino && a->st_dev == b->st_dev &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* True when a write in the same timestamp tick as <st> could still come unseen by a stat. */
static bool is_racy(const struct stat *st)
{
    time_t now = time(NULL);

    return now - st->st_mtim.tv_sec < RACY_S && st->st_mtim.tv_sec - now < RACY_S;
}

static json_t *parse_view(struct file_impl *f, const char *text, size_t len)
{
    static const char *const keys[] = {"clusters", "routes", "rollouts", NULL};
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    const char *key;
    json_t *val;
    char msg[512];

    if (root == NULL) {
        snprintf(msg, sizeof(msg), "%s: line %d column %d: %s", f->p->cfg.path, jerr.line,
                 jerr.column, jerr.text);
        report(f, DISC_ERR_PARSE, msg);
        return NULL;
    }
    if (!json_is_object(root)) {
        snprintf(msg, sizeof(msg), "%s: must be a JSON object", f->p->cfg.path);
        report(f, DISC_ERR_PARSE, msg);
        json_decref(root);
        return NULL;
    }
    json_object_foreach(root, key, val)
    {
        unsigned k = 0;
        while (keys[k] != NULL && strcmp(keys[k], key) != 0)
            k++;
        if (keys[k] == NULL) {
            snprintf(msg, sizeof(msg), "%s: %s: unknown key (only clusters, routes, rollouts)",
                     f->p->cfg.path, key);
            report(f, DISC_ERR_PARSE, msg);
            json_decref(root);
            return NULL;
        }
        if (!json_is_array(val)) {
            snprintf(msg, sizeof(msg), "%s: %s: must be an array", f->p->cfg.path, key);
            report(f, DISC_ERR_PARSE, msg);
            json_decref(root);
            return NULL;
        }
    }
    return root;
}

/* The file is as it was when it last made a view: the provider is fresh (disc__alive()). */
static void confirm(struct file_impl *f)
{
    if (!f->content_ok)
        return;
    wr_free(&f->last_error);
    disc__alive(f->p);
}

static void check(struct file_impl *f)
{
    struct stat st;
    char msg[512];
    size_t len;

    if (f->p->closing)
        return;
    if (stat(f->p->cfg.path, &st) != 0) {
        snprintf(msg, sizeof(msg), "%s: %s", f->p->cfg.path, strerror(errno));
        report(f, DISC_ERR_CONNECT, msg);
        f->have_stat = false;
        return;
    }
    bool unchanged = f->have_stat && same_stat(&st, &f->last);
    if (unchanged && !f->racy) {
        confirm(f);
        return;
    }
    char *text = disc__read_file(f->p->cfg.path, &len, false);
    if (text == NULL) {
        snprintf(msg, sizeof(msg), "%s: %s", f->p->cfg.path, strerror(errno));
        report(f, DISC_ERR_CONNECT, msg);
        return;
    }
    uint64_t hash = wr_hash64(text, len, 0);
    bool same = f->have_stat && hash == f->last_hash;
    f->racy = is_racy(&st);
    f->last = st;
    f->last_hash = hash;
    f->have_stat = true;
    if (same) { /* touched, rewritten as it was, or a racy read confirmed */
        free(text);
        confirm(f);
        return;
    }
    json_t *view = parse_view(f, text, len);
    free(text);
    f->content_ok = view != NULL;
    if (view == NULL)
        return;
    wr_free(&f->last_error);
    disc__publish(f->p, view);
}

static void on_poll(uv_timer_t *t)
{
    check(t->data);
}

static void on_settle(uv_timer_t *t)
{
    check(t->data);
}

static void on_event(uv_fs_event_t *ev, const char *filename, int events, int status)
{
    struct file_impl *f = ev->data;

    (void)events;
    if (status < 0)
        return;
    /* Our file: a writer may still be writing, so look again shortly rather than read a half
     * file (each event pushes the look back). Another name (a ConfigMap's "..data" flip, or
     * anything else in the folder): one look soon, never pushed back, so that a busy folder
     * cannot hold it off. The stat comparison makes the extra looks cheap. */
    if (filename == NULL || strcmp(filename, f->base) == 0)
        uv_timer_start(&f->settle, on_settle, SETTLE_MS, 0);
    else if (!uv_is_active((uv_handle_t *)&f->settle))
        uv_timer_start(&f->settle, on_settle, SETTLE_MS, 0);
}

static int file_init(struct disc_provider *p)
{
    struct file_impl *f = wr_xcalloc(1, sizeof(*f));
    char *a = wr_xstrdup(p->cfg.path), *b = wr_xstrdup(p->cfg.path);

    f->p = p;
    f->dir = wr_xstrdup(dirname(a));
    f->base = wr_xstrdup(basename(b));
    free(a);
    free(b);
    p->impl = f;
    return 0;
}

static int file_start(struct disc_provider *p)
{
    struct file_impl *f = p->impl;

    uv_timer_init(p->loop, &f->poll);
    uv_timer_init(p->loop, &f->settle);
    f->poll.data = f->settle.data = f;
    f->open_handles = 2;
    if (uv_fs_event_init(p->loop, &f->ev) == 0) {
        f->ev.data = f;
        f->open_handles++;
        f->ev_started = uv_fs_event_start(&f->ev, on_event, f->dir, 0) == 0;
        if (!f->ev_started)
            wr_info("discovery[%u]: cannot watch %s; polling it every %d ms", p->index, f->dir,
                    POLL_MS);
    }
    check(f);
    uint32_t every = p->poll_ms ? p->poll_ms : POLL_MS;
    uv_timer_start(&f->poll, on_poll, every, every);
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    struct file_impl *f = h->data;

    if (--f->open_handles > 0)
        return;
    struct disc_provider *p = f->p;
    free(f->dir);
    free(f->base);
    free(f->last_error);
    free(f);
    disc__closed(p);
}

static void file_close(struct disc_provider *p)
{
    struct file_impl *f = p->impl;

    if (f->open_handles == 0) { /* never started */
        free(f->dir);
        free(f->base);
        free(f->last_error);
        free(f);
        disc__closed(p);
        return;
    }
    uv_close((uv_handle_t *)&f->poll, on_closed);
    uv_close((uv_handle_t *)&f->settle, on_closed);
    if (f->open_handles == 3)
        uv_close((uv_handle_t *)&f->ev, on_closed);
}

const struct disc_ops disc__file_ops = {
    .type = "file",
    .init = file_init,
    .start = file_start,
    .close = file_close,
};
