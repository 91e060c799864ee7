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

/* Frame types. */
#define WF_HELLO 1     /* client -> server: data = secret */
#define WF_START 2     /* client -> server: fds = [data_r, status_w, ...] */
#define WF_OK 3        /* server -> client: arg = pid (START) or server pid */
#define WF_ERROR 4     /* server -> client: arg = errno */

/* What wf_server_run hands back to Python. */
#define WF_EV_CHILD 1   /* we are a freshly forked child: see child_fds */
#define WF_EV_EXIT 2    /* owner gone, children reaped, tracker closed */
#define WF_EV_NOTICE 3  /* something to report: see notice */
#define WF_EV_IDLE 4    /* we are a new idle child: warm up, wf_idle_wait */

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
};

struct wf_idle {
    pid_t pid;
    int sock;          /* server end of the hand-off socketpair */
};

struct wf_client {
    int fd;
    int authenticated;
};

struct wf_tracked {
    int kind;
    int unlink_errno;  /* set by wf_tracker_unlink_all: 0 or errno */
    char name[WF_NAME_MAX + 1];
};

struct wf_server {
    /* Set by Python before wf_server_init. */
    int listen_fd;          /* SOCK_SEQPACKET listener, in a 0700 dir */
    int alive_fd;           /* read end: EOF when the owner is gone */
    int tracker_fd;         /* server end of the tracker channel */
    int tracker_client_fd;  /* end that children inherit; closed at shutdown */
    unsigned char secret[WF_SECRET_SIZE];
    int pool_target;        /* idle pre-forked children to keep (0: none) */
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
    struct wf_idle idle[WF_MAX_IDLE];
    int nidle;

    /* Filled for WF_EV_CHILD: the fds the parent sent, data pipe first. */
    int child_fds[WF_MAX_FDS];
    int child_nfds;
    /* Filled for WF_EV_NOTICE. */
    char notice[WF_NOTICE_SIZE];
    /* Counters, for tests and statistics. */
    uint64_t starts, handoffs, rejected_peers, bad_frames, bad_tracker_messages;
};

/* Send one frame with nfds descriptors.  Returns 0 or -1 and errno. */
int wf_send_frame(int sock, const struct wf_frame *frame,
                  const int *fds, int nfds);

/* Receive one frame and up to maxfds descriptors (close-on-exec).
   Returns 1 for a frame, 0 for end of file, -1 and errno on error:
   EBADMSG for a frame of the wrong size or magic, EMSGSIZE when fds were
   truncated (MSG_CTRUNC) or more than maxfds arrived.  On every error and
   on EOF all descriptors that arrived are closed. */
int wf_recv_frame(int sock, struct wf_frame *frame,
                  int *fds, int maxfds, int *nfds);

/* Client side of one request: send frame+fds, wait for the reply frame.
   Returns 0 or -1 and errno (ECONNRESET when the server hung up). */
int wf_request(int sock, const struct wf_frame *request,
               const int *fds, int nfds, struct wf_frame *reply);

/* fork() with Python's semantics: takes the GIL, runs PyOS_BeforeFork and
   PyOS_AfterFork_Child/Parent (so os.register_at_fork hooks run), releases
   the GIL.  Must be called with the GIL released (as cffi does). */
pid_t wf_fork(void);

/* Allocate the tables and the SIGCHLD self-pipe.  Returns 0 or -1. */
int wf_server_init(struct wf_server *srv);
/* Run until Python has something to do: returns WF_EV_* or -1 and errno. */
int wf_server_run(struct wf_server *srv);
/* In an idle child (after WF_EV_IDLE): wait for the one start it serves,
   then for the parent's data.  Returns WF_EV_CHILD (see child_fds); exits
   the process if the server hangs up first. */
int wf_idle_wait(struct wf_server *srv);
/* Unlink every name still tracked, recording each errno.  Returns count. */
int wf_tracker_unlink_all(struct wf_server *srv);
/* Free the tables and close the server's fds.  Safe to call twice. */
void wf_server_close(struct wf_server *srv);
/* CDEF-END */

/* Internal, shared between the core's files. */
int wf_tracker_handle(struct wf_server *srv, const char *msg, size_t len);

#endif /* WARMFORK_H */
