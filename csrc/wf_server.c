/*
 * wf_server.c: the server's event loop, shaped after AFL's fork server.
 *
 * One poll() over: the listener, the authenticated clients, the owner's
 * "alive" pipe, the SIGCHLD self-pipe and the tracker channel.  A START
 * request is served entirely here (receive, fork or hand off, reply with
 * the pid); a reaped child's exit code goes down its status pipe, which is
 * the parent's sentinel.  The loop returns to Python only when Python has
 * work: in a new child, at shutdown, or with a notice to report.
 *
 * Errors: the loop never ends on an error that may pass.  A client's bad
 * frame drops that client; a resource shortage (ENOMEM, ENOBUFS, EMFILE,
 * EAGAIN from fork) backs the failing source off (struct wf_backoff) with
 * one notice per failure, so neither the CPU nor stderr is flooded.  Only
 * an error that says the loop itself is broken (poll's EINVAL, EFAULT)
 * returns -1, and Python then exits without unlinking any tracked name.
 *
 * Why the warm pool's timing lives here and not in Python: the refill
 * decision is taken on every turn of the loop, and a trip back to Python
 * for it would cost more than the refill saves.  Python sets the numbers
 * (pool_target, retry_min_ms, retry_max_ms); C applies them.
 */
#define _GNU_SOURCE
#include "warmfork.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The status fd comes first so that what the child gets is a contiguous
   tail of a START's fds: hand_off sends fds + 1 as is. */
#if WF_FD_STATUS != 0
#error "WF_FD_STATUS must be slot 0"
#endif

#define DEFAULT_RETRY_MIN_MS 10
#define DEFAULT_RETRY_MAX_MS 1000

/* The one piece of global state: a signal handler can only reach globals.
   The server is single-threaded and runs one loop per process. */
static int sigchld_write_fd = -1;

static void on_sigchld(int sig)
{
    int saved_errno = errno;
    (void)sig;
    /* Nonblocking: a full pipe already means "reap pending". */
    if (write(sigchld_write_fd, "c", 1) < 0) { /* nothing to do */ }
    errno = saved_errno;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        int fd_copy = *fd;
        *fd = -1;       /* before close: a reused number must not be hit */
        close(fd_copy);
    }
}

int64_t wf_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int wf_notice(struct wf_server *srv, const char *fmt, ...)
{
    va_list ap;
    if (srv->notice_pending) {
        srv->notices_dropped++;
        return WF_EV_NOTICE;
    }
    va_start(ap, fmt);
    vsnprintf(srv->notice, sizeof(srv->notice), fmt, ap);
    va_end(ap);
    srv->notice_pending = 1;
    return WF_EV_NOTICE;
}

/* After a failure: wait before the next try, twice as long as last time. */
static void back_off(struct wf_server *srv, struct wf_backoff *b)
{
    b->delay_ms = b->delay_ms ? b->delay_ms * 2 : srv->retry_min_ms;
    if (b->delay_ms > srv->retry_max_ms)
        b->delay_ms = srv->retry_max_ms;
    b->retry_at = wf_now_ms() + b->delay_ms;
}

static void succeeded(struct wf_backoff *b)
{
    b->delay_ms = 0;
    b->retry_at = 0;
}

/* Milliseconds until ``b`` may be tried again (0: now). */
static int wait_for(const struct wf_backoff *b, int64_t now)
{
    return b->retry_at > now ? (int)(b->retry_at - now) : 0;
}

static int set_fd_flags(int fd, int fd_flags, int status_flags)
{
    if (fd < 0)
        return 0;
    if (fd_flags && fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | fd_flags) < 0)
        return -1;
    if (status_flags
        && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | status_flags) < 0)
        return -1;
    return 0;
}

int wf_server_init(struct wf_server *srv)
{
    int pipe_fds[2];
    struct sigaction sa;

    srv->uid = geteuid();
    srv->sigchld_r = srv->sigchld_w = -1;
    srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    srv->nclients = srv->nchildren = srv->ntracked = srv->nidle = 0;
    srv->owner_gone = srv->tracker_eof = 0;
    srv->notice_pending = srv->notices_dropped = 0;
    if (srv->retry_min_ms <= 0)
        srv->retry_min_ms = DEFAULT_RETRY_MIN_MS;
    if (srv->retry_max_ms < srv->retry_min_ms)
        srv->retry_max_ms = srv->retry_min_ms > DEFAULT_RETRY_MAX_MS
                            ? srv->retry_min_ms : DEFAULT_RETRY_MAX_MS;
    if (srv->pool_target < 0 || srv->pool_target > WF_MAX_IDLE) {
        errno = EINVAL;
        return -1;
    }
    srv->clients = calloc(WF_MAX_CLIENTS, sizeof(*srv->clients));
    srv->children = calloc(WF_MAX_CHILDREN, sizeof(*srv->children));
    if (!srv->clients || !srv->children)
        goto nomem;
    if (wf_tracker_init(srv) < 0)
        goto fail;
    if (pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) < 0)
        goto fail;
    srv->sigchld_r = pipe_fds[0];
    srv->sigchld_w = pipe_fds[1];
    /* The fds Python passed were inherited across exec, so they are not
       close-on-exec: a preloaded module that runs a program must not hand
       it our listener, the tracker channel or the owner's alive pipe. */
    if (set_fd_flags(srv->listen_fd, FD_CLOEXEC, O_NONBLOCK) < 0
        || set_fd_flags(srv->alive_fd, FD_CLOEXEC, 0) < 0
        || set_fd_flags(srv->tracker_fd, FD_CLOEXEC, O_NONBLOCK) < 0
        || set_fd_flags(srv->tracker_client_fd, FD_CLOEXEC, 0) < 0)
        goto fail;

    sigchld_write_fd = srv->sigchld_w;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigchld;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGCHLD, &sa, NULL) < 0)
        goto fail;
    return 0;

nomem:
    errno = ENOMEM;
fail:
    {
        int saved_errno = errno;
        wf_server_close(srv);
        errno = saved_errno;
    }
    return -1;
}

/* Close every fd of the server's own: all but the tracker channel's client
   end, which children keep.  Leaves the tables allocated. */
static void close_server_fds(struct wf_server *srv)
{
    if (sigchld_write_fd == srv->sigchld_w && srv->sigchld_w >= 0) {
        signal(SIGCHLD, SIG_DFL);
        sigchld_write_fd = -1;
    }
    close_fd(&srv->sigchld_r);
    close_fd(&srv->sigchld_w);
    close_fd(&srv->spare_fd);
    close_fd(&srv->listen_fd);
    close_fd(&srv->alive_fd);
    close_fd(&srv->tracker_fd);
    for (int i = 0; srv->clients && i < srv->nclients; i++)
        close_fd(&srv->clients[i].fd);
    for (int i = 0; srv->children && i < srv->nchildren; i++)
        close_fd(&srv->children[i].status_fd);
    for (int i = 0; i < srv->nidle; i++)
        close_fd(&srv->idle[i].sock);
    srv->nclients = srv->nchildren = srv->nidle = 0;
}

/* In a new child: shed everything of the server's.  (fork_child has
   already given it back the default SIGTERM and SIGINT.) */
static void leave_server(struct wf_server *srv)
{
    close_server_fds(srv);
}

/* wf_fork for a child (a start's or the pool's).  The server ignores
   SIGTERM and SIGINT, and a signal sent to a process that ignores it is
   lost: a Process.terminate() right after start() (the parent has the pid
   as soon as we reply) would vanish if it reached the child before the
   child took the defaults back.  So both are blocked across the fork --
   a blocked signal is kept pending even while ignored -- and the child
   restores the defaults before it unblocks them.  Python installs its own
   SIGINT handler later, in the child's Python code. */
static pid_t fork_child(void)
{
    sigset_t block, saved;
    pid_t pid;
    int saved_errno;

    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &saved);
    pid = wf_fork();
    saved_errno = errno;
    if (pid == 0) {
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
    }
    sigprocmask(SIG_SETMASK, &saved, NULL);
    errno = saved_errno;
    return pid;
}

void wf_server_close(struct wf_server *srv)
{
    close_server_fds(srv);
    close_fd(&srv->tracker_client_fd);
    free(srv->clients);
    free(srv->children);
    free(srv->tracked);
    free(srv->tracked_index);
    srv->clients = NULL;
    srv->children = NULL;
    srv->tracked = NULL;
    srv->tracked_index = NULL;
    srv->ntracked = 0;
}

static void drop_client(struct wf_server *srv, int index)
{
    close_fd(&srv->clients[index].fd);
    srv->clients[index] = srv->clients[--srv->nclients];
}

static int accept_client(struct wf_server *srv)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    int fd;

    fd = accept4(srv->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
        int err = errno;
        if (err == EAGAIN || err == EINTR || err == ECONNABORTED)
            return 0;
        if ((err == EMFILE || err == ENFILE) && srv->spare_fd >= 0) {
            /* The pending connection would keep poll() spinning: give up
               the spare fd, accept it, and hang up at once. */
            close_fd(&srv->spare_fd);
            fd = accept4(srv->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0)
                close(fd);
            srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
            return wf_notice(srv, "refused a connection: %s", strerror(err));
        }
        /* ENOMEM, ENOBUFS, EPERM (a firewall), EPROTO, or EMFILE without
           a spare: may pass.  Leave the connection queued and retry. */
        back_off(srv, &srv->accept_backoff);
        return wf_notice(srv, "cannot accept a connection (retrying in %d "
                              "ms): %s", srv->accept_backoff.delay_ms,
                         strerror(err));
    }
    succeeded(&srv->accept_backoff);
    /* Drop a peer of another user before reading a byte from it. */
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0
        || cred.uid != srv->uid) {
        close(fd);
        return wf_notice(srv, "rejected a connection from uid %ld (pid %ld)",
                         (long)cred.uid, (long)cred.pid);
    }
    if (srv->nclients >= WF_MAX_CLIENTS) {
        close(fd);
        return wf_notice(srv, "rejected a connection: %d clients already",
                         WF_MAX_CLIENTS);
    }
    srv->clients[srv->nclients].fd = fd;
    srv->clients[srv->nclients].authenticated = 0;
    srv->nclients++;
    return 0;
}

static void reply(int fd, uint32_t type, int64_t arg)
{
    struct wf_frame frame;
    memset(&frame, 0, sizeof(frame));
    frame.magic = WF_MAGIC;
    frame.type = type;
    frame.arg = arg;
    /* A client that vanished is noticed by its next recv: ignore errors. */
    (void)wf_send_frame(fd, &frame, NULL, 0);
}

static int secrets_equal(const unsigned char *a, const unsigned char *b)
{
    unsigned char diff = 0;      /* constant time: no early exit */
    for (int i = 0; i < WF_SECRET_SIZE; i++)
        diff |= a[i] ^ b[i];
    return diff == 0;
}

/* The status pipe is the server's alone: it writes the exit code there,
   and a child holding it would keep the parent's sentinel from ever seeing
   EOF.  Take it out of a START's fds; the rest (fds + 1) is the child's. */
static int take_status_fd(int *fds)
{
    int fd = fds[WF_FD_STATUS];
    fds[WF_FD_STATUS] = -1;
    return fd;
}

/* The child of a direct start keeps the START's fds, slots unchanged. */
static void become_child(struct wf_server *srv, int *fds, int nfds)
{
    leave_server(srv);
    memcpy(srv->child_fds, fds, sizeof(int) * nfds);
    srv->child_nfds = nfds;
}

int wf_idle_wait(struct wf_server *srv)
{
    struct wf_frame frame;
    int nfds = 0;
    int rc;

    memset(&frame, 0, sizeof(frame));
    frame.magic = WF_MAGIC;
    frame.type = WF_READY;
    do {
        rc = wf_send_frame(srv->handoff_fd, &frame, NULL, 0);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0)
        _exit(0);      /* the server is gone: no start, no user code */
    do {
        rc = wf_recv_frame(srv->handoff_fd, &frame, srv->child_fds + 1,
                           WF_MAX_FDS - 1, &nfds);
    } while (rc < 0 && errno == EINTR);
    if (rc == 0)
        _exit(0);      /* the server retired us: no start, no user code */
    if (rc < 0 || frame.type != WF_START || nfds < WF_FD_INHERITED - 1) {
        /* The server has already told a parent our pid: its start must
           not look like a success. */
        int err = rc < 0 ? errno : EBADMSG;
        char line[160];
        int len = snprintf(line, sizeof(line), "warmfork: idle child %ld "
                           "could not receive its start: %s\n",
                           (long)getpid(), strerror(err));
        if (write(2, line, len) < 0) { /* nothing more we can say */ }
        wf_close_fds(srv->child_fds + 1, nfds);
        _exit(255);
    }
    close_fd(&srv->handoff_fd);
    srv->child_fds[WF_FD_STATUS] = -1;
    srv->child_nfds = nfds + 1;
    /* Sleep again until the parent's data arrives.  Running Python now
       would take the CPU from the server (the wake-up preempts it) before
       it has even replied to the parent: measured, 1 ms per start. */
    struct pollfd data = { srv->child_fds[WF_FD_DATA], POLLIN, 0 };
    /* A data fd we cannot read (a client sent a write end) would never be
       readable: let Python fail on it, as it does in a forked child. */
    int mode = fcntl(data.fd, F_GETFL);
    if (mode < 0 || (mode & O_ACCMODE) == O_WRONLY)
        return WF_EV_CHILD;
    while (poll(&data, 1, -1) < 0 && errno == EINTR)
        ;
    return WF_EV_CHILD;
}

/* Fork one idle child into the pool.  Returns WF_EV_IDLE in the child,
   0 in the server, or a notice (then the refill backs off). */
static int spawn_idle(struct wf_server *srv)
{
    int sv[2];
    pid_t pid;

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        back_off(srv, &srv->refill_backoff);
        return wf_notice(srv, "cannot refill the warm pool (retrying in %d "
                              "ms): %s", srv->refill_backoff.delay_ms,
                         strerror(errno));
    }
    pid = fork_child();
    if (pid == 0) {
        close(sv[0]);
        leave_server(srv);
        srv->handoff_fd = sv[1];
        return WF_EV_IDLE;
    }
    close(sv[1]);
    if (pid < 0) {
        int err = errno;
        close(sv[0]);
        back_off(srv, &srv->refill_backoff);
        return wf_notice(srv, "cannot refill the warm pool (retrying in %d "
                              "ms): %s", srv->refill_backoff.delay_ms,
                         strerror(err));
    }
    succeeded(&srv->refill_backoff);
    srv->idle[srv->nidle].pid = pid;
    srv->idle[srv->nidle].sock = sv[0];
    srv->idle[srv->nidle].ready = 0;
    srv->nidle++;
    return 0;
}

/* Give a start to an idle child: the child's fds, without the status fd.
   The reply has gone out already (the parent then writes its data while
   the child wakes), so on failure there is no other child to try: the
   idle one is killed, and its exit (-SIGKILL) is what the parent learns of
   a start that never ran. */
static int hand_off(struct wf_server *srv, struct wf_idle idle,
                    const int *child_fds, int nfds)
{
    struct wf_frame frame;
    int rc;

    memset(&frame, 0, sizeof(frame));
    frame.magic = WF_MAGIC;
    frame.type = WF_START;
    frame.nfds = nfds;
    do {
        rc = wf_send_frame(idle.sock, &frame, child_fds, nfds);
    } while (rc < 0 && errno == EINTR);
    close(idle.sock);
    srv->last_handoff_ms = wf_now_ms();
    if (rc == 0)
        return 0;
    kill(idle.pid, SIGKILL);
    return wf_notice(srv, "could not hand a start to idle child %ld: %s",
                     (long)idle.pid, strerror(errno));
}

static void add_child(struct wf_server *srv, pid_t pid, int status_fd,
                      const struct wf_frame *request)
{
    /* Never block on a status pipe: a client could hand us a full one. */
    (void)set_fd_flags(status_fd, 0, O_NONBLOCK);
    srv->children[srv->nchildren].pid = pid;
    srv->children[srv->nchildren].status_fd = status_fd;
    srv->children[srv->nchildren].daemon =
        (request->arg & WF_START_DAEMON) != 0;
    srv->nchildren++;
}

/* Serve one START: hand off or fork, reply with the pid.  Returns
   WF_EV_CHILD in the child, a notice or 0 in the server. */
static int start_child(struct wf_server *srv, int client_index,
                       const struct wf_frame *request, int *fds, int nfds)
{
    int client_fd = srv->clients[client_index].fd;
    int status_fd, rc;
    pid_t pid;

    if (nfds < WF_FD_INHERITED || srv->nchildren >= WF_MAX_CHILDREN) {
        wf_close_fds(fds, nfds);
        reply(client_fd, WF_ERROR, nfds < WF_FD_INHERITED ? EINVAL : EAGAIN);
        return 0;
    }
    status_fd = take_status_fd(fds);
    int ready = -1;
    for (int i = 0; i < srv->nidle && ready < 0; i++)
        if (srv->idle[i].ready)
            ready = i;
    /* An idle child still warming up would make this start wait for it:
       then a fork of our own is quicker. */
    if (ready >= 0) {
        /* Reply first: the parent's wait is the critical path, and the
           woken idle child would otherwise take this CPU before it. */
        struct wf_idle idle = srv->idle[ready];
        srv->idle[ready] = srv->idle[--srv->nidle];
        add_child(srv, idle.pid, status_fd, request);
        reply(client_fd, WF_OK, idle.pid);
        rc = hand_off(srv, idle, fds + 1, nfds - 1);
        wf_close_fds(fds, nfds);        /* the child has its copies */
        return rc;
    }
    pid = fork_child();
    if (pid == 0) {
        close(status_fd);
        become_child(srv, fds, nfds);
        return WF_EV_CHILD;
    }
    wf_close_fds(fds, nfds);            /* the child has its copies */
    if (pid < 0) {
        int err = errno;
        close(status_fd);
        reply(client_fd, WF_ERROR, err);
        return 0;
    }
    add_child(srv, pid, status_fd, request);
    reply(client_fd, WF_OK, pid);
    return 0;
}

/* Read one frame from a client and act on it.  Returns an event or 0. */
static int serve_client(struct wf_server *srv, int index)
{
    struct wf_frame frame;
    int fds[WF_MAX_FDS];
    int nfds = 0;
    int fd = srv->clients[index].fd;
    int rc;

    rc = wf_recv_frame(fd, &frame, fds, WF_MAX_FDS, &nfds);
    if (rc < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (rc == 0 || (rc < 0 && (errno == ECONNRESET || errno == EPIPE))) {
        drop_client(srv, index);         /* client went away */
        return 0;
    }
    if (rc < 0 && (errno == ENOMEM || errno == ENOBUFS)) {
        /* The record stays queued: back the whole loop off, then retry. */
        back_off(srv, &srv->poll_backoff);
        return wf_notice(srv, "cannot read a request (retrying in %d ms): "
                              "%s", srv->poll_backoff.delay_ms,
                         strerror(errno));
    }
    if (rc < 0 && errno == EMSGSIZE && srv->clients[index].authenticated) {
        /* The record arrived whole but its fds did not (our fd table is
           full, or too many were sent): refuse this start, keep the client. */
        reply(fd, WF_ERROR, EMSGSIZE);
        return wf_notice(srv, "refused a start: its fds did not all arrive "
                              "(fd table full?)");
    }
    if (rc < 0) {
        int err = errno;
        reply(fd, WF_ERROR, err);
        drop_client(srv, index);
        return wf_notice(srv, "dropped a client after a bad frame: %s",
                         strerror(err));
    }
    if (!srv->clients[index].authenticated) {
        wf_close_fds(fds, nfds);
        if (frame.type != WF_HELLO || nfds != 0
            || !secrets_equal(frame.data, srv->secret)) {
            reply(fd, WF_ERROR, EACCES);
            drop_client(srv, index);
            return wf_notice(srv, "dropped a client that did not prove the "
                                  "server's secret");
        }
        srv->clients[index].authenticated = 1;
        reply(fd, WF_OK, getpid());
        return 0;
    }
    if (frame.type == WF_START)
        return start_child(srv, index, &frame, fds, nfds);

    wf_close_fds(fds, nfds);
    reply(fd, WF_ERROR, EBADMSG);
    drop_client(srv, index);
    return wf_notice(srv, "dropped a client after a frame of unknown type %u",
                     (unsigned)frame.type);
}

/* Send a reaped child's exit code to its parent's sentinel. */
static void report_exit(struct wf_server *srv, struct wf_child *child,
                        int64_t code)
{
    /* Nonblocking: 8 bytes into our own pipe fit unless the client filled
       it on purpose (then it loses the code, not the server its loop);
       EPIPE means the parent is gone and nobody is listening. */
    if (write(child->status_fd, &code, sizeof(code)) < 0 && errno == EAGAIN)
        wf_notice(srv, "could not report the exit code of pid %ld: its "
                       "status pipe is full", (long)child->pid);
    close_fd(&child->status_fd);
}

/* Reap every exited child; send each one's exit code to its sentinel. */
static void reap_children(struct wf_server *srv)
{
    char drain[64];
    int status;
    pid_t pid;

    while (read(srv->sigchld_r, drain, sizeof(drain)) > 0)
        ;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        int64_t code;
        if (WIFEXITED(status))
            code = WEXITSTATUS(status);
        else if (WIFSIGNALED(status))
            code = -WTERMSIG(status);
        else
            continue;
        for (int i = 0; i < srv->nchildren; i++) {
            if (srv->children[i].pid != pid)
                continue;
            report_exit(srv, &srv->children[i], code);
            srv->children[i] = srv->children[--srv->nchildren];
            break;
        }
        for (int i = 0; i < srv->nidle; i++) {
            if (srv->idle[i].pid != pid)
                continue;
            close_fd(&srv->idle[i].sock);   /* an idle child died */
            srv->idle[i] = srv->idle[--srv->nidle];
            break;
        }
    }
}

/* An idle child spoke: WF_READY, or EOF because it died (it is reaped
   like any other child). */
static void hear_idle(struct wf_server *srv, int index)
{
    struct wf_frame frame;
    int nfds = 0, fds[1];
    int rc = wf_recv_frame(srv->idle[index].sock, &frame, fds, 0, &nfds);
    if (rc < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (rc == 1 && frame.type == WF_READY) {
        srv->idle[index].ready = 1;
        return;
    }
    close_fd(&srv->idle[index].sock);
    srv->idle[index] = srv->idle[--srv->nidle];
}

/* The owner is gone: retire the idle children (they see EOF and exit),
   and terminate the daemonic children, as the owner's own exit would have
   (multiprocessing's atexit handler terminates daemonic children; after a
   SIGKILL nobody runs it). */
static void owner_gone(struct wf_server *srv)
{
    srv->owner_gone = 1;
    close_fd(&srv->alive_fd);
    for (int i = 0; i < srv->nidle; i++)
        close_fd(&srv->idle[i].sock);
    srv->nidle = 0;
    for (int i = 0; i < srv->nchildren; i++)
        if (srv->children[i].daemon)
            kill(srv->children[i].pid, SIGTERM);
}

/* Once the owner is gone and every child reaped, stop serving and give up
   our hold on the tracker channel: its EOF then means no process is left
   that could still use a tracked name. */
static void start_shutdown(struct wf_server *srv)
{
    close_fd(&srv->listen_fd);
    for (int i = srv->nclients - 1; i >= 0; i--)
        drop_client(srv, i);
    close_fd(&srv->tracker_client_fd);
    if (srv->tracker_fd < 0)
        srv->tracker_eof = 1;
}

static int finish_turn(struct wf_server *srv)
{
    if (!srv->notice_pending)
        return 0;
    if (srv->notices_dropped > 0) {
        size_t len = strlen(srv->notice);
        snprintf(srv->notice + len, sizeof(srv->notice) - len,
                 " (and %d more notices)", srv->notices_dropped);
    }
    return WF_EV_NOTICE;
}

int wf_server_run(struct wf_server *srv)
{
    struct pollfd pfd[WF_MAX_CLIENTS + WF_MAX_IDLE + 4];

    srv->notice_pending = srv->notices_dropped = 0;
    for (;;) {
        int n = 0, rc, timeout = -1;
        int listen_at = -1, alive_at = -1, tracker_at = -1, sigchld_at;
        int clients_at, idle_at, nidle_polled;
        int64_t now = wf_now_ms();

        if (srv->owner_gone && srv->nchildren == 0) {
            if (srv->tracker_client_fd >= 0 || srv->listen_fd >= 0)
                start_shutdown(srv);
            if (srv->tracker_eof)
                return WF_EV_EXIT;
        }
        if (wait_for(&srv->poll_backoff, now) > 0) {
            /* A resource shortage: let it pass before polling again. */
            struct timespec ts = { 0, wait_for(&srv->poll_backoff, now)
                                      * 1000000L };
            nanosleep(&ts, NULL);
            succeeded(&srv->poll_backoff);
            continue;
        }

        sigchld_at = n;
        pfd[n].fd = srv->sigchld_r; pfd[n++].events = POLLIN;
        if (srv->alive_fd >= 0) {
            alive_at = n;
            pfd[n].fd = srv->alive_fd; pfd[n++].events = POLLIN;
        }
        if (srv->tracker_fd >= 0) {
            tracker_at = n;
            pfd[n].fd = srv->tracker_fd; pfd[n++].events = POLLIN;
        }
        if (srv->listen_fd >= 0) {
            int wait = wait_for(&srv->accept_backoff, now);
            if (wait == 0) {
                listen_at = n;
                pfd[n].fd = srv->listen_fd; pfd[n++].events = POLLIN;
            } else {
                timeout = wait;
            }
        }
        clients_at = n;
        for (int i = 0; i < srv->nclients; i++) {
            pfd[n].fd = srv->clients[i].fd; pfd[n++].events = POLLIN;
        }
        idle_at = n;
        for (int i = 0; i < srv->nidle; i++) {
            pfd[n].fd = srv->idle[i].ready ? -1 : srv->idle[i].sock;
            pfd[n++].events = POLLIN;
        }
        nidle_polled = srv->nidle;

        /* Refill the pool only when nothing else is waiting (a request
           that is already here goes first), and not right after a hand-off:
           a fork now, and the new child running on the CPU, would delay
           both the parent's reply and the handed-off child (measured
           here: 0.5-1.4 ms on a 2-core VM).  An empty pool refills at
           once: the next start would fork anyway. */
        int refill = 0;
        if (!srv->owner_gone && srv->nidle < srv->pool_target) {
            int wait = wait_for(&srv->refill_backoff, now);
            int64_t settle = srv->last_handoff_ms + srv->refill_delay_ms - now;
            if (srv->nidle > 0 && settle > wait)
                wait = (int)settle;
            refill = wait == 0;
            if (timeout < 0 || wait < timeout)
                timeout = wait;
        }
        rc = poll(pfd, n, timeout);
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            if (errno == ENOMEM) {
                back_off(srv, &srv->poll_backoff);
                wf_notice(srv, "poll failed (retrying in %d ms): %s",
                          srv->poll_backoff.delay_ms, strerror(errno));
                if ((rc = finish_turn(srv)) != 0)
                    return rc;
                continue;
            }
            return -1;          /* EINVAL, EFAULT: the loop itself is wrong */
        }
        if (rc == 0) {
            if (refill && (rc = spawn_idle(srv)) == WF_EV_IDLE)
                return rc;
            if ((rc = finish_turn(srv)) != 0)
                return rc;
            continue;
        }

        /* Reap first: a freed slot and a prompt exit code matter most. */
        if (pfd[sigchld_at].revents)
            reap_children(srv);
        if (alive_at >= 0 && pfd[alive_at].revents) {
            char byte;
            ssize_t got = read(srv->alive_fd, &byte, 1);
            if (got <= 0 && !(got < 0 && (errno == EINTR || errno == EAGAIN)))
                owner_gone(srv);
        }
        if (tracker_at >= 0 && pfd[tracker_at].revents
            && wf_tracker_read(srv) < 0) {
            back_off(srv, &srv->poll_backoff);
            wf_notice(srv, "resource tracker: read failed (retrying in %d "
                           "ms): %s", srv->poll_backoff.delay_ms,
                      strerror(errno));
        }
        if (listen_at >= 0 && pfd[listen_at].revents)
            accept_client(srv);
        /* Walk idle children and clients from the end: hearing or serving
           one may drop it (swap-remove), which moves only entries we have
           already visited. */
        for (int i = nidle_polled - 1; i >= 0; i--) {
            if (i < srv->nidle && pfd[idle_at + i].revents
                && srv->idle[i].sock == pfd[idle_at + i].fd)
                hear_idle(srv, i);
        }
        for (int i = idle_at - clients_at - 1; i >= 0; i--) {
            if (i >= srv->nclients || !pfd[clients_at + i].revents)
                continue;
            if (srv->clients[i].fd != pfd[clients_at + i].fd)
                continue;
            if ((rc = serve_client(srv, i)) == WF_EV_CHILD)
                return rc;
        }
        if ((rc = finish_turn(srv)) != 0)
            return rc;
    }
}
