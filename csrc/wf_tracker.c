/*
 * wf_tracker.c: the table of named semaphores and shared memory segments.
 *
 * Why: a named POSIX semaphore or shared memory segment outlives its
 * creator.  If the creator is SIGKILLed before it unlinks the name, the
 * name stays in /dev/shm until reboot, and Linux caps how many there can
 * be.  The stdlib runs a separate resource-tracker process for this; we
 * keep its table inside the server, which already outlives every process
 * of the tree.  Clients speak the stdlib tracker's line protocol
 * ("REGISTER:name:rtype\n"), so the stdlib's own ResourceTracker client
 * works unchanged.
 *
 * The channel is a pipe in packet mode (O_DIRECT), as the stdlib's is a
 * pipe: every holder (the parent, each child) has the write end.
 * - End of file means what it says: the last write end is closed, so no
 *   process is left that could use a tracked name.  A holder cannot fake
 *   it: a write of 0 bytes to a pipe is a no-op, and shutdown() does not
 *   apply to pipes (on a shared socket, both did end the channel).
 * - Each write() is one packet, so a holder that writes half a record
 *   spoils only that record, never the next one of another holder.
 * Names are unlinked only at shutdown, once the channel's last holder is
 * gone.  Lookups are O(1) (an open-addressing index), and the loop reads
 * at most WF_TRACKER_BATCH records per wake-up (and stops at a bad one, so
 * that each is reported), so a flooding holder cannot stall the starts.
 */
#define _GNU_SOURCE
#include "warmfork.h"

#include <errno.h>
#include <limits.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Index size: a power of two, at least twice the table, so that probe
   sequences stay short even when the table is full. */
#define INDEX_SLOTS 32768
#define INDEX_MASK (INDEX_SLOTS - 1)
#if INDEX_SLOTS < 2 * WF_MAX_TRACKED
#error "the tracker index must be at least twice WF_MAX_TRACKED"
#endif

static int kind_of(const char *rtype, size_t len)
{
    if (len == 9 && memcmp(rtype, "semaphore", 9) == 0)
        return WF_KIND_SEMAPHORE;
    if (len == 13 && memcmp(rtype, "shared_memory", 13) == 0)
        return WF_KIND_SHARED_MEMORY;
    if (len == 5 && memcmp(rtype, "dummy", 5) == 0)
        return WF_KIND_DUMMY;
    return 0;
}

static uint32_t hash_of(int kind, const char *name)
{
    uint32_t h = 2166136261u ^ (uint32_t)kind;      /* FNV-1a */
    for (; *name; name++)
        h = (h ^ (unsigned char)*name) * 16777619u;
    return h;
}

int wf_tracker_init(struct wf_server *srv)
{
    srv->tracked = calloc(WF_MAX_TRACKED, sizeof(*srv->tracked));
    srv->tracked_index = calloc(INDEX_SLOTS, sizeof(*srv->tracked_index));
    srv->ntracked = 0;
    if (!srv->tracked || !srv->tracked_index) {
        errno = ENOMEM;
        return -1;
    }
    return 0;
}

/* The index slot holding (kind, name), or the empty slot where it would
   go (then *found is 0). */
static uint32_t find_slot(struct wf_server *srv, int kind, const char *name,
                          uint32_t hash, int *found)
{
    uint32_t slot = hash & INDEX_MASK;
    for (;; slot = (slot + 1) & INDEX_MASK) {
        int32_t at = srv->tracked_index[slot];
        if (at == 0) {
            *found = 0;
            return slot;
        }
        struct wf_tracked *t = &srv->tracked[at - 1];
        if (t->hash == hash && t->kind == kind && strcmp(t->name, name) == 0) {
            *found = 1;
            return slot;
        }
    }
}

/* Empty an index slot, moving later entries of the same probe run back
   (linear probing without tombstones). */
static void clear_slot(struct wf_server *srv, uint32_t hole)
{
    uint32_t next = hole;
    srv->tracked_index[hole] = 0;
    for (;;) {
        next = (next + 1) & INDEX_MASK;
        int32_t at = srv->tracked_index[next];
        if (at == 0)
            return;
        uint32_t home = srv->tracked[at - 1].hash & INDEX_MASK;
        /* May the entry at `next` move to `hole`?  Only if its home is not
           in the cyclic range (hole, next]. */
        int home_between = hole <= next ? (home > hole && home <= next)
                                        : (home > hole || home <= next);
        if (!home_between) {
            srv->tracked_index[hole] = at;
            srv->tracked_index[next] = 0;
            hole = next;
        }
    }
}

static void remove_tracked(struct wf_server *srv, uint32_t slot)
{
    int32_t gone = srv->tracked_index[slot] - 1;
    int32_t last = srv->ntracked - 1;
    clear_slot(srv, slot);
    if (gone != last) {
        /* Keep the table dense (Python walks it): move the last entry into
           the hole, and point its index slot at the new place. */
        struct wf_tracked *moved = &srv->tracked[last];
        int found;
        uint32_t moved_slot = find_slot(srv, moved->kind, moved->name,
                                        moved->hash, &found);
        srv->tracked[gone] = *moved;
        srv->tracked_index[moved_slot] = gone + 1;
    }
    srv->ntracked--;
}

#define SHOW(len, max) (int)((len) > (max) ? (max) : (len))

/* Handle one line, without its newline. */
static int handle_line(struct wf_server *srv, const char *msg, size_t len)
{
    char name[WF_NAME_MAX + 1];
    const char *first_colon, *last_colon;
    size_t cmd_len, name_len, rtype_len;
    uint32_t hash, slot;
    int kind, found;

    if (memchr(msg, '\0', len))
        return wf_notice(srv, "resource tracker: ignored a message "
                              "containing a NUL byte");
    first_colon = memchr(msg, ':', len);
    last_colon = first_colon ? memrchr(msg, ':', len) : NULL;
    if (!first_colon || last_colon == first_colon)
        return wf_notice(srv, "resource tracker: ignored a malformed "
                              "message %.*s", SHOW(len, 80), msg);
    cmd_len = first_colon - msg;
    name_len = last_colon - first_colon - 1;
    rtype_len = msg + len - last_colon - 1;

    if (cmd_len == 5 && memcmp(msg, "PROBE", 5) == 0)
        return 0;                       /* a liveness check */
    kind = kind_of(last_colon + 1, rtype_len);
    if (!kind)
        return wf_notice(srv, "resource tracker: cannot register %.*s for "
                              "automatic cleanup: unknown resource type %.*s",
                         SHOW(name_len, 80), first_colon + 1,
                         SHOW(rtype_len, 40), last_colon + 1);
    if (name_len == 0 || name_len > WF_NAME_MAX
        || memchr(first_colon + 1 + 1, '/', name_len - 1))
        return wf_notice(srv, "resource tracker: ignored an invalid name "
                              "(empty, longer than %d bytes, or with '/' "
                              "after the first byte)", WF_NAME_MAX);
    memcpy(name, first_colon + 1, name_len);
    name[name_len] = '\0';
    hash = hash_of(kind, name);
    slot = find_slot(srv, kind, name, hash, &found);

    if (cmd_len == 8 && memcmp(msg, "REGISTER", 8) == 0) {
        if (found)
            return 0;                   /* a set, as in the stdlib */
        if (srv->ntracked >= WF_MAX_TRACKED)
            return wf_notice(srv, "resource tracker: table full (%d names); "
                                  "%s will not be cleaned up",
                             WF_MAX_TRACKED, name);
        struct wf_tracked *t = &srv->tracked[srv->ntracked];
        t->kind = kind;
        t->unlink_errno = 0;
        t->hash = hash;
        memcpy(t->name, name, name_len + 1);
        srv->tracked_index[slot] = ++srv->ntracked;
        return 0;
    }
    if (cmd_len == 10 && memcmp(msg, "UNREGISTER", 10) == 0) {
        if (!found)
            return wf_notice(srv, "resource tracker: cannot unregister %s: "
                                  "not registered", name);
        remove_tracked(srv, slot);
        return 0;
    }
    return wf_notice(srv, "resource tracker: unrecognized command %.*s",
                     SHOW(cmd_len, 20), msg);
}

/* One packet: the stdlib writes one line per write(), but any number of
   lines is accepted.  A last line without its newline is still a whole
   record: packets never merge.  Returns 0 or WF_EV_NOTICE. */
int wf_tracker_handle(struct wf_server *srv, const char *msg, size_t len)
{
    int event = 0;
    while (len > 0) {
        const char *newline = memchr(msg, '\n', len);
        size_t line_len = newline ? (size_t)(newline - msg) : len;
        if (handle_line(srv, msg, line_len) != 0)
            event = WF_EV_NOTICE;
        line_len += newline != NULL;
        msg += line_len;
        len -= line_len;
    }
    return event;
}

int wf_tracker_read(struct wf_server *srv)
{
    /* PIPE_BUF: a packet-mode pipe splits longer writes, and the stdlib
       refuses records over 512 bytes. */
    char buf[PIPE_BUF];

    for (int i = 0; i < WF_TRACKER_BATCH; i++) {
        ssize_t n = read(srv->tracker_fd, buf, sizeof(buf));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            return -1;
        }
        if (n == 0) {
            /* Every write end is closed: no holder of the channel is left. */
            srv->tracker_eof = 1;
            close(srv->tracker_fd);
            srv->tracker_fd = -1;
            break;
        }
        if (wf_tracker_handle(srv, buf, (size_t)n) != 0)
            return WF_EV_NOTICE;    /* one line on stderr per bad record */
    }
    return 0;
}

int wf_tracker_unlink_all(struct wf_server *srv)
{
    for (int i = 0; i < srv->ntracked; i++) {
        struct wf_tracked *t = &srv->tracked[i];
        int rc = 0;
        if (t->kind == WF_KIND_SEMAPHORE)
            rc = sem_unlink(t->name);
        else if (t->kind == WF_KIND_SHARED_MEMORY)
            rc = shm_unlink(t->name);
        t->unlink_errno = rc < 0 ? errno : 0;
    }
    return srv->ntracked;
}
