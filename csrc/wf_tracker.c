/*
 * wf_tracker.c: the table of named semaphores and shared memory segments.
 *
 * Why: a named POSIX semaphore or shared memory segment outlives its
 * creator.  If the creator is SIGKILLed before it unlinks the name, the
 * name stays in /dev/shm until reboot, and Linux caps how many there can
 * be.  The stdlib runs a separate resource-tracker process for this; we
 * keep its table inside the server, which already outlives every process
 * of the tree.  Clients speak the stdlib tracker's line protocol
 * ("REGISTER:name:rtype\n") over a SOCK_SEQPACKET channel, one record per
 * message, so the stdlib's own ResourceTracker client works unchanged and
 * a writer that dies mid-message cannot corrupt the next record.
 * Names are unlinked only at shutdown, once the channel's last holder is
 * gone: no live process of the tree can still use them.
 */
#define _GNU_SOURCE
#include "warmfork.h"

#include <errno.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

static int tracker_notice(struct wf_server *srv, const char *fmt, ...)
{
    va_list ap;
    srv->bad_tracker_messages++;
    va_start(ap, fmt);
    vsnprintf(srv->notice, sizeof(srv->notice), fmt, ap);
    va_end(ap);
    return WF_EV_NOTICE;
}

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

static int find(struct wf_server *srv, int kind, const char *name)
{
    for (int i = 0; i < srv->ntracked; i++)
        if (srv->tracked[i].kind == kind
            && strcmp(srv->tracked[i].name, name) == 0)
            return i;
    return -1;
}

/* Handle one record.  Returns 0, or WF_EV_NOTICE with srv->notice set. */
int wf_tracker_handle(struct wf_server *srv, const char *msg, size_t len)
{
    char name[WF_NAME_MAX + 1];
    const char *first_colon, *last_colon;
    size_t cmd_len, name_len, rtype_len;
    int kind, index;

    if (len > 0 && msg[len - 1] == '\n')
        len--;
    if (memchr(msg, '\0', len))
        return tracker_notice(srv, "resource tracker: ignored a message "
                                   "containing a NUL byte");
    first_colon = memchr(msg, ':', len);
    last_colon = first_colon ? memrchr(msg, ':', len) : NULL;
    if (!first_colon || last_colon == first_colon)
        return tracker_notice(srv, "resource tracker: ignored a malformed "
                                   "message %.*s", (int)(len > 80 ? 80 : len),
                              msg);
    cmd_len = first_colon - msg;
    name_len = last_colon - first_colon - 1;
    rtype_len = msg + len - last_colon - 1;

    if (cmd_len == 5 && memcmp(msg, "PROBE", 5) == 0)
        return 0;                       /* a liveness check */
    kind = kind_of(last_colon + 1, rtype_len);
    if (!kind)
        return tracker_notice(srv, "resource tracker: cannot register %.*s "
                                   "for automatic cleanup: unknown resource "
                                   "type %.*s", (int)(name_len > 80 ? 80
                                   : name_len), first_colon + 1,
                              (int)(rtype_len > 40 ? 40 : rtype_len),
                              last_colon + 1);
    if (name_len == 0 || name_len > WF_NAME_MAX
        || memchr(first_colon + 1 + 1, '/', name_len - 1))
        return tracker_notice(srv, "resource tracker: ignored an invalid "
                                   "name (empty, longer than %d bytes, or "
                                   "with '/' after the first byte)",
                              WF_NAME_MAX);
    memcpy(name, first_colon + 1, name_len);
    name[name_len] = '\0';
    index = find(srv, kind, name);

    if (cmd_len == 8 && memcmp(msg, "REGISTER", 8) == 0) {
        if (index >= 0)
            return 0;                   /* a set, as in the stdlib */
        if (srv->ntracked >= WF_MAX_TRACKED)
            return tracker_notice(srv, "resource tracker: table full (%d "
                                       "names); %s will not be cleaned up",
                                  WF_MAX_TRACKED, name);
        srv->tracked[srv->ntracked].kind = kind;
        srv->tracked[srv->ntracked].unlink_errno = 0;
        memcpy(srv->tracked[srv->ntracked].name, name, name_len + 1);
        srv->ntracked++;
        return 0;
    }
    if (cmd_len == 10 && memcmp(msg, "UNREGISTER", 10) == 0) {
        if (index < 0)
            return tracker_notice(srv, "resource tracker: cannot unregister "
                                       "%s: not registered", name);
        srv->tracked[index] = srv->tracked[--srv->ntracked];
        return 0;
    }
    return tracker_notice(srv, "resource tracker: unrecognized command %.*s",
                          (int)(cmd_len > 20 ? 20 : cmd_len), msg);
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
