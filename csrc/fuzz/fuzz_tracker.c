/*
 * fuzz_tracker.c: libFuzzer harness for the tracker's record parser,
 * wf_tracker_handle (csrc/wf_tracker.c).
 *
 * The input is a sequence of packets, split at each 0xff byte, as the
 * tracker pipe (packet mode) delivers one write() per read(); a packet may
 * hold any number of '\n'-separated lines.  Each packet is copied into a
 * heap block of exactly its size, so ASan sees any read past it, and handed
 * to wf_tracker_handle.
 *
 * Deliberately thin: the harness uses only wf_tracker_init, wf_tracker_handle
 * and what the rest of the core reads (ntracked, the dense tracked[] table
 * that Python walks, the notice).  It never calls wf_tracker_unlink_all:
 * that unlinks real names in /dev/shm.
 *
 * Checked after every packet (a broken check aborts = a crash to libFuzzer):
 *   - the return value is 0 or WF_EV_NOTICE, and a notice was made (one,
 *     NUL-terminated, not empty) exactly when it says so;
 *   - ntracked stays in [0, WF_MAX_TRACKED] and moves by at most one per
 *     line: up only if the packet has a REGISTER, down only if it has an
 *     UNREGISTER, and as many entries as it grew by have names that occur
 *     in the packet;
 *   - every entry has a known kind and a name that is NUL-terminated,
 *     non-empty, at most WF_NAME_MAX bytes, free of '/' after its first
 *     byte, and no (kind, name) pair is in the table twice;
 *   - the commands are a set's, so a packet is idempotent: handled again,
 *     it leaves ntracked as it was.
 * At the end of each input, through wf_tracker_handle again: every entry
 * is found (REGISTER changes nothing), then each is removed (UNREGISTER),
 * is gone after (a second UNREGISTER is refused), and can be added back.
 * So each input starts from an empty table, and a stale index slot shows.
 */
#define _GNU_SOURCE
#include "../warmfork.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FAIL(...) do { fprintf(stderr, "fuzz_tracker: " __VA_ARGS__); \
    fputc('\n', stderr); abort(); } while (0)

/* wf_server.c is linked for wf_notice; the tracker never forks. */
pid_t wf_fork(void) { abort(); }

/* One server for the run: wf_tracker_init's tables are megabytes, and a
   fresh calloc per input costs more than the parsing.  Each input leaves
   the table empty (checked), so inputs stay independent. */
static struct wf_server *srv;

static const char *kind_name(int kind)
{
    switch (kind) {
    case WF_KIND_SEMAPHORE: return "semaphore";
    case WF_KIND_SHARED_MEMORY: return "shared_memory";
    case WF_KIND_DUMMY: return "dummy";
    }
    FAIL("kind %d", kind);
}

static int has_line_starting(const char *msg, size_t len, const char *cmd)
{
    size_t n = strlen(cmd);
    for (size_t at = 0; at < len; ) {
        const char *nl = memchr(msg + at, '\n', len - at);
        size_t end = nl ? (size_t)(nl - msg) : len;
        if (end - at >= n && memcmp(msg + at, cmd, n) == 0)
            return 1;
        at = end + 1;
    }
    return 0;
}

static void check_entry(int i)
{
    const struct wf_tracked *t = &srv->tracked[i];
    size_t n = strnlen(t->name, sizeof(t->name));

    kind_name(t->kind);
    if (n == sizeof(t->name))
        FAIL("entry %d: name not NUL-terminated", i);
    if (n == 0 || n > WF_NAME_MAX)
        FAIL("entry %d: name of %zu bytes", i, n);
    if (n > 1 && memchr(t->name + 1, '/', n - 1))
        FAIL("entry %d: '/' after the first byte of %s", i, t->name);
}

/* Entry i against every other one: O(ntracked). */
static void check_unique(int i)
{
    for (int j = 0; j < srv->ntracked; j++)
        if (j != i && srv->tracked[j].kind == srv->tracked[i].kind
            && strcmp(srv->tracked[j].name, srv->tracked[i].name) == 0)
            FAIL("entries %d and %d are both %d:%s", i, j,
                 srv->tracked[i].kind, srv->tracked[i].name);
}

/* One packet, as one turn of the server loop sees it. */
static int handle(const char *msg, size_t len)
{
    int before = srv->ntracked, lines = 1, named = 0, rc;

    for (size_t i = 0; i < len; i++)
        lines += msg[i] == '\n';
    srv->notice_pending = 0;        /* as at the start of a turn */
    srv->notices_dropped = 0;
    srv->notice[0] = '\0';
    memset(srv->notice + 1, 'x', sizeof(srv->notice) - 1);
    rc = wf_tracker_handle(srv, msg, len);

    if (rc != 0 && rc != WF_EV_NOTICE)
        FAIL("returned %d", rc);
    if ((rc == WF_EV_NOTICE) != (srv->notice_pending != 0))
        FAIL("returned %d with notice_pending %d", rc, srv->notice_pending);
    if (rc == WF_EV_NOTICE) {
        if (strnlen(srv->notice, sizeof(srv->notice)) == sizeof(srv->notice))
            FAIL("notice not NUL-terminated");
        if (srv->notice[0] == '\0')
            FAIL("empty notice");
    }
    if (srv->ntracked < 0 || srv->ntracked > WF_MAX_TRACKED)
        FAIL("ntracked %d", srv->ntracked);
    if (srv->ntracked > before + lines || srv->ntracked < before - lines)
        FAIL("ntracked moved from %d to %d in %d lines", before,
             srv->ntracked, lines);
    if (srv->ntracked > before && !has_line_starting(msg, len, "REGISTER:"))
        FAIL("entries added by a packet without REGISTER");
    if (srv->ntracked < before && !has_line_starting(msg, len, "UNREGISTER:"))
        FAIL("entries removed by a packet without UNREGISTER");
    if (srv->ntracked != before) {
        /* Wherever the table put new or moved entries: each is valid, and
           one whose name is in the packet is in the table once. */
        for (int i = 0; i < srv->ntracked; i++) {
            const char *name = srv->tracked[i].name;
            check_entry(i);
            if (memmem(msg, len, name, strlen(name))) {
                named++;
                check_unique(i);
            }
        }
        if (named < srv->ntracked - before)
            FAIL("grew by %d but only %d names are in the packet",
                 srv->ntracked - before, named);
    }
    return rc;
}

/* A record for entry i's name and kind, as the stdlib client writes it. */
static size_t record(char *buf, size_t size, const char *cmd, int kind,
                     const char *name)
{
    int n = snprintf(buf, size, "%s:%s:%s\n", cmd, name, kind_name(kind));
    if (n < 0 || (size_t)n >= size)
        FAIL("record too long");
    return (size_t)n;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    srv = calloc(1, sizeof(*srv));
    if (!srv || wf_tracker_init(srv) < 0)
        FAIL("wf_tracker_init");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char buf[WF_NAME_MAX + 64], name[WF_NAME_MAX + 1];
    size_t pos = 0;

    if (srv->ntracked != 0)
        FAIL("the previous input left %d entries", srv->ntracked);

    while (pos < size) {
        const uint8_t *sep = memchr(data + pos, 0xff, size - pos);
        size_t len = sep ? (size_t)(sep - (data + pos)) : size - pos;
        /* Exactly len bytes, no terminator: the parser gets a length. */
        char *msg = malloc(len ? len : 1);
        int after;

        if (!msg)
            FAIL("malloc");
        memcpy(msg, data + pos, len);
        pos += len + (sep != NULL);

        handle(msg, len);
        after = srv->ntracked;
        handle(msg, len);       /* a set's commands: nothing changes */
        if (srv->ntracked != after)
            FAIL("the same packet again moved ntracked from %d to %d",
                 after, srv->ntracked);
        free(msg);
    }

    /* Every entry once more: valid, unique, and found by the index. */
    for (int i = 0; i < srv->ntracked; i++) {
        int before = srv->ntracked;
        check_entry(i);
        check_unique(i);
        if (handle(buf, record(buf, sizeof(buf), "REGISTER",
                               srv->tracked[i].kind, srv->tracked[i].name))
            != 0 || srv->ntracked != before)
            FAIL("entry %d (%s) not found again", i, srv->tracked[i].name);
    }
    /* Empty the table from the front (the last entry moves into each
       hole): each name is gone after its UNREGISTER, and comes back. */
    while (srv->ntracked > 0) {
        int kind = srv->tracked[0].kind, before = srv->ntracked;
        memcpy(name, srv->tracked[0].name, sizeof(name));
        if (handle(buf, record(buf, sizeof(buf), "UNREGISTER", kind, name))
            != 0 || srv->ntracked != before - 1)
            FAIL("UNREGISTER of %s failed", name);
        if (handle(buf, record(buf, sizeof(buf), "UNREGISTER", kind, name))
            != WF_EV_NOTICE || srv->ntracked != before - 1)
            FAIL("%s still found after its UNREGISTER", name);
        if (handle(buf, record(buf, sizeof(buf), "REGISTER", kind, name))
            != 0 || srv->ntracked != before)
            FAIL("%s not added back", name);
        if (handle(buf, record(buf, sizeof(buf), "UNREGISTER", kind, name))
            != 0 || srv->ntracked != before - 1)
            FAIL("%s not removed again", name);
    }
    return 0;
}
