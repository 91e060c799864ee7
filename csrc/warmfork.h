/*
 * warmfork.h: the C core of warmfork, one umbrella header.
 *
 * The core owns the syscalls of the hot path: passing a fixed-format frame
 * plus file descriptors over an AF_UNIX SOCK_SEQPACKET socket, forking with
 * Python's at-fork semantics, and the server's event loop (accept, check the
 * peer, start children, reap them, keep the table of named semaphores and
 * shared memory segments).  Python owns policy: it configures the server,
 * runs the forked child, and reports what the loop hands back.
 *
 * Every function returns -1 and sets errno on error unless said otherwise.
 * cffi reads the declarations between the CDEF markers (see build_core.py),
 * so this header is the only place they are written.
 */
#ifndef WARMFORK_H
#define WARMFORK_H

#include <stdint.h>
#include <sys/types.h>

/* CDEF-BEGIN */
#define WF_MAGIC 0x57464b31            /* "WFK1": protocol version 1 */
#define WF_SECRET_SIZE 32
#define WF_MAX_FDS 250                  /* below Linux's SCM_MAX_FD (253) */
#define WF_NAME_MAX 255                 /* longest tracked name, without NUL */
#define WF_MAX_CLIENTS 256
#define WF_MAX_CHILDREN 16384
#define WF_MAX_TRACKED 16384
#define WF_NOTICE_SIZE 512
#define WF_MAX_IDLE 64                  /* largest pre-forked pool */
#define WF_TRACKER_BATCH 64             /* tracker records read per wake-up */

/* Frame types. */
#define WF_HELLO 1     /* client -> server: data = secret */
#define WF_START 2     /* client -> server: fds in the WF_FD_* slots below */
#define WF_OK 3        /* server -> client: arg = pid (START) or server pid */
#define WF_ERROR 4     /* server -> client: arg = errno */
#define WF_READY 5     /* idle child -> server: warmed up and parked */

/* The fds of a START, by slot.  The server keeps the status pipe and
   passes the rest to the child unchanged, so a slot names the same fd on
   the parent's side, in the server and in the child (where the status
   slot holds -1).  The process object's own fds follow WF_FD_INHERITED. */
#define WF_FD_STATUS 0      /* write end of the status pipe: the server's */
#define WF_FD_DATA 1        /* read end of the data pipe (the pickle) */
#define WF_FD_TRACKER 2     /* resource tracker channel the child uses */
#define WF_FD_INHERITED 3   /* first of the fds the process object needs */

/* What wf_server_run hands back to Python. */
#define WF_EV_CHILD 1   /* we are a freshly forked child: see child_fds */
#define WF_EV_EXIT 2    /* owner gone, children reaped, tracker closed */
#define WF_EV_NOTICE 3  /* something to report: see notice */
#define WF_EV_IDLE 4    /* we are a new idle child: warm up, wf_idle_wait */

/* Flags in a START frame's arg. */
#define WF_START_DAEMON 1   /* SIGTERM the child if its owner dies first */

/* Kinds of tracked names. */
#define WF_KIND_SEMAPHORE 1
#define WF_KIND_SHARED_MEMORY 2
#define WF_KIND_DUMMY 3     /* the stdlib tests' never-unlinked kind */

struct wf_frame {
    uint32_t magic;
    uint32_t type;
    int64_t arg;
    uint32_t nfds;     /* must equal the number of fds that came with it */
    uint32_t reserved;
    unsigned char data[WF_SECRET_SIZE];
};

struct wf_child {
    pid_t pid;
    int status_fd;     /* the parent's sentinel pipe; gets the exit code */
    int daemon;        /* started with WF_START_DAEMON */
};

struct wf_idle {
    pid_t pid;
    int sock;          /* server end of the hand-off socketpair */
    int ready;         /* it said WF_READY: a start goes straight on */
};

struct wf_client {
    int fd;
    int authenticated;
};

struct wf_tracked {
    int kind;
    int unlink_errno;  /* set by wf_tracker_unlink_all: 0 or errno */
    uint32_t hash;     /* of kind and name: its home in the index */
    char name[WF_NAME_MAX + 1];
};

/* A source of errors that may pass (accept at ENOMEM, a refill fork at
   EAGAIN): after a failure it is not tried again before retry_at, and the
   delay doubles up to the server's retry_max_ms.  This bounds both the
   CPU spent and the notices printed. */
struct wf_backoff {
    int64_t retry_at;       /* CLOCK_MONOTONIC ms; 0: may try now */
    int delay_ms;           /* 0 after a success */
};

struct wf_server {
    /* Set by Python before wf_server_init. */
    int listen_fd;          /* SOCK_SEQPACKET listener, in a 0700 dir */
    int alive_fd;           /* read end: EOF when the owner is gone */
    int tracker_fd;         /* read end of the tracker pipe (packet mode) */
    int tracker_client_fd;  /* its write end, which children inherit; the
                               server drops it at shutdown, so EOF on the
                               read end means no holder is left */
    unsigned char secret[WF_SECRET_SIZE];
    int pool_target;        /* idle pre-forked children to keep (0: none) */
    int refill_delay_ms;    /* wait this long after a hand-off before
                               refilling the pool (0 when it is empty) */
    int retry_min_ms;       /* first back-off after a transient error */
    int retry_max_ms;       /* longest back-off */
    int handoff_fd;         /* in an idle child: where its start arrives */

    /* Private to the C core. */
    uid_t uid;
    int sigchld_r, sigchld_w;
    int spare_fd;           /* /dev/null, given up to accept() at EMFILE */
    int owner_gone, tracker_eof;
    int nclients, nchildren, ntracked;
    struct wf_client *clients;
    struct wf_child *children;
    struct wf_tracked *tracked;
    int32_t *tracked_index; /* open addressing: tracked position + 1, or 0 */
    struct wf_idle idle[WF_MAX_IDLE];
    int nidle;
    struct wf_backoff accept_backoff, refill_backoff, poll_backoff;
    int64_t last_handoff_ms;

    /* Filled for WF_EV_CHILD: the START's fds by WF_FD_* slot, with -1
       in WF_FD_STATUS. */
    int child_fds[WF_MAX_FDS];
    int child_nfds;
    /* Filled for WF_EV_NOTICE: the first notice of one turn of the loop;
       later ones in the same turn are counted, not kept. */
    char notice[WF_NOTICE_SIZE];
    int notice_pending, notices_dropped;
};

/* Send one frame with nfds descriptors.  Returns 0 or -1 and errno.
   Neither this nor wf_recv_frame retries EINTR: a client in Python must
   get the chance to run its signal handlers (Ctrl-C) and retry itself. */
int wf_send_frame(int sock, const struct wf_frame *frame,
                  const int *fds, int nfds);

/* Receive one frame and up to maxfds descriptors (close-on-exec).
   Returns 1 for a frame, 0 for end of file, -1 and errno on error:
   EBADMSG for a frame of the wrong size or magic, EMSGSIZE when fds were
   truncated (MSG_CTRUNC) or more than maxfds arrived.  On every error and
   on EOF all descriptors that arrived are closed. */
int wf_recv_frame(int sock, struct wf_frame *frame,
                  int *fds, int maxfds, int *nfds);


/* fork() with Python's semantics: takes the GIL, runs PyOS_BeforeFork and
   PyOS_AfterFork_Child/Parent (so os.register_at_fork hooks run), releases
   the GIL.  Must be called with the GIL released (as cffi does). */
pid_t wf_fork(void);

/* Allocate the tables and the SIGCHLD self-pipe.  Returns 0 or -1. */
int wf_server_init(struct wf_server *srv);
/* Run until Python has something to do: returns WF_EV_* or -1 and errno. */
int wf_server_run(struct wf_server *srv);
/* In an idle child (after WF_EV_IDLE and its warm-up): tell the server it
   is ready, wait for the one start it serves, then for the parent's data.  Returns WF_EV_CHILD (see child_fds); exits
   the process if the server hangs up first. */
int wf_idle_wait(struct wf_server *srv);
/* The private anonymous pages this process has written since it was
   forked (held exclusively), up to max addresses.  Returns the count, or
   -1 and errno.  See wf_prefault.c. */
int wf_written_pages(uint64_t *out, int max);
/* Break copy-on-write on the listed pages ahead of time (pages no longer
   mapped are skipped).  Returns how many were faulted in, or -1. */
int wf_prefault(const uint64_t *pages, int n);
/* Unlink every name still tracked, recording each errno.  Returns count. */
int wf_tracker_unlink_all(struct wf_server *srv);
/* Free the tables and close the server's fds.  Safe to call twice. */
void wf_server_close(struct wf_server *srv);
/* CDEF-END */

/* Internal, shared between the core's files. */
int wf_tracker_init(struct wf_server *srv);
/* Read up to WF_TRACKER_BATCH records, stopping after one that makes a
   notice: 0, WF_EV_NOTICE, or -1 and errno. */
int wf_tracker_read(struct wf_server *srv);
/* Handle one record (one or more lines).  0 or WF_EV_NOTICE. */
int wf_tracker_handle(struct wf_server *srv, const char *msg, size_t len);
int64_t wf_now_ms(void);
/* Format srv->notice; returns WF_EV_NOTICE. */
int wf_notice(struct wf_server *srv, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* close() each of fds[0..nfds), ignoring -1 entries. */
void wf_close_fds(const int *fds, int nfds);

#endif /* WARMFORK_H */
