/*
 * wf_server.c: the server's event loop, shaped after AFL's fork server.
 *
 * One poll() over: the listener, the authenticated clients, the owner's
 * "alive" pipe, the SIGCHLD self-pipe and the tracker channel.  A START
 * request is served entirely here (receive, fork, reply with the pid);
 * a reaped child's exit code goes down its status pipe, which is the
 * parent's sentinel.  The loop returns to Python only when Python has work:
 * in a new child, at shutdown, or with a notice to report.
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
#include <unistd.h>

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

static int notice(struct wf_server *srv, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(srv->notice, sizeof(srv->notice), fmt, ap);
    va_end(ap);
    return WF_EV_NOTICE;
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
    if (srv->pool_target < 0 || srv->pool_target > WF_MAX_IDLE) {
        errno = EINVAL;
        return -1;
    }
    srv->clients = calloc(WF_MAX_CLIENTS, sizeof(*srv->clients));
    srv->children = calloc(WF_MAX_CHILDREN, sizeof(*srv->children));
    srv->tracked = calloc(WF_MAX_TRACKED, sizeof(*srv->tracked));
    if (!srv->clients || !srv->children || !srv->tracked)
        goto nomem;
    if (pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) < 0)
        goto fail;
    srv->sigchld_r = pipe_fds[0];
    srv->sigchld_w = pipe_fds[1];
    if (srv->tracker_fd >= 0 && fcntl(srv->tracker_fd, F_SETFL, O_NONBLOCK) < 0)
        goto fail;
    if (fcntl(srv->listen_fd, F_SETFL, O_NONBLOCK) < 0)
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

void wf_server_close(struct wf_server *srv)
{
    close_server_fds(srv);
    close_fd(&srv->tracker_client_fd);
    free(srv->clients);
    free(srv->children);
    free(srv->tracked);
    srv->clients = NULL;
    srv->children = NULL;
    srv->tracked = NULL;
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
        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
            return 0;
        if (errno == EMFILE || errno == ENFILE) {
            /* The pending connection would keep poll() spinning: give up
               the spare fd, accept it, and hang up at once. */
            int err = errno;
            close_fd(&srv->spare_fd);
            fd = accept4(srv->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0)
                close(fd);
            srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
            return notice(srv, "refused a connection: %s", strerror(err));
        }
        return -1;
    }
    /* Drop a peer of another user before reading a byte from it. */
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0
        || cred.uid != srv->uid) {
        close(fd);
        srv->rejected_peers++;
        return notice(srv, "rejected a connection from uid %ld (pid %ld)",
                      (long)cred.uid, (long)cred.pid);
    }
    if (srv->nclients >= WF_MAX_CLIENTS) {
        close(fd);
        return notice(srv, "rejected a connection: %d clients already",
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

/* The child of a direct start: fds = [data_r, status_w, inherited...]. */
static void become_child(struct wf_server *srv, int *fds, int nfds)
{
    close_server_fds(srv);     /* shed everything of the server's */
    /* The status pipe is the server's to write; the child never holds it. */
    close(fds[1]);
    srv->child_fds[0] = fds[0];
    for (int i = 2; i < nfds; i++)
        srv->child_fds[i - 1] = fds[i];
    srv->child_nfds = nfds - 1;
}

int wf_idle_wait(struct wf_server *srv)
{
    struct wf_frame frame;
    int nfds = 0;
    int rc;

    rc = wf_recv_frame(srv->handoff_fd, &frame, srv->child_fds, WF_MAX_FDS,
                       &nfds);
    close_fd(&srv->handoff_fd);
    if (rc != 1 || frame.type != WF_START || nfds < 1)
        _exit(0);      /* never ran user code: nothing to flush or report */
    srv->child_nfds = nfds;
    /* Sleep again until the parent's data arrives.  Running Python now
       would take the CPU from the server (the wake-up preempts it) before
       it has even replied to the parent: measured, 1 ms per start. */
    struct pollfd data = { srv->child_fds[0], POLLIN, 0 };
    while (poll(&data, 1, -1) < 0 && errno == EINTR)
        ;
    return WF_EV_CHILD;
}

/* Fork one idle child into the pool.  Returns WF_EV_IDLE in the child,
   0 in the server, or a notice. */
static int spawn_idle(struct wf_server *srv)
{
    int sv[2];
    pid_t pid;

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return notice(srv, "cannot refill the warm pool: %s", strerror(errno));
    pid = wf_fork();
    if (pid == 0) {
        close(sv[0]);
        close_server_fds(srv);     /* shed everything of the server's */
        srv->handoff_fd = sv[1];
        return WF_EV_IDLE;
    }
    close(sv[1]);
    if (pid < 0) {
        int err = errno;
        close(sv[0]);
        srv->pool_target = 0;    /* do not retry in a tight loop */
        return notice(srv, "cannot refill the warm pool (pool disabled): %s",
                      strerror(err));
    }
    srv->idle[srv->nidle].pid = pid;
    srv->idle[srv->nidle].sock = sv[0];
    srv->nidle++;
    return 0;
}

/* Give a start to an idle child.  Returns its pid, or -1 if no idle
   child took it (each one that failed is dropped from the pool). */
static pid_t hand_off(struct wf_server *srv, int *fds, int nfds)
{
    struct wf_frame frame;
    int handed[WF_MAX_FDS];

    memset(&frame, 0, sizeof(frame));
    frame.magic = WF_MAGIC;
    frame.type = WF_START;
    frame.nfds = nfds - 1;
    handed[0] = fds[0];                     /* everything but status_w */
    for (int i = 2; i < nfds; i++)
        handed[i - 1] = fds[i];
    while (srv->nidle > 0) {
        struct wf_idle child = srv->idle[--srv->nidle];
        int rc = wf_send_frame(child.sock, &frame, handed, nfds - 1);
        close(child.sock);
        if (rc == 0) {
            srv->handoffs++;
            return child.pid;
        }
        /* That idle child died; it is reaped like any other. */
    }
    return -1;
}

/* Serve one START: fork, reply with the pid.  Returns WF_EV_CHILD in the
   child, 0 in the server. */
static int start_child(struct wf_server *srv, int client_index,
                       int *fds, int nfds)
{
    int client_fd = srv->clients[client_index].fd;
    pid_t pid;

    if (nfds < 2) {
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        reply(client_fd, WF_ERROR, EINVAL);
        return 0;
    }
    if (srv->nchildren >= WF_MAX_CHILDREN) {
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        reply(client_fd, WF_ERROR, EAGAIN);
        return 0;
    }
    pid = hand_off(srv, fds, nfds);
    if (pid < 0)
        pid = wf_fork();
    if (pid == 0) {
        become_child(srv, fds, nfds);
        return WF_EV_CHILD;
    }
    if (pid < 0) {
        int err = errno;
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        reply(client_fd, WF_ERROR, err);
        return 0;
    }
    /* Keep the status pipe for the exit code; the rest is the child's. */
    srv->children[srv->nchildren].pid = pid;
    srv->children[srv->nchildren].status_fd = fds[1];
    srv->nchildren++;
    srv->starts++;
    close(fds[0]);
    for (int i = 2; i < nfds; i++)
        close(fds[i]);
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
    if (rc < 0 && errno == EMSGSIZE && srv->clients[index].authenticated) {
        /* The record arrived whole but its fds did not (our fd table is
           full, or too many were sent): refuse this start, keep the client. */
        srv->bad_frames++;
        reply(fd, WF_ERROR, EMSGSIZE);
        return notice(srv, "refused a start: its fds did not all arrive "
                           "(fd table full?)");
    }
    if (rc < 0) {
        int err = errno;
        srv->bad_frames++;
        reply(fd, WF_ERROR, err);
        drop_client(srv, index);
        return notice(srv, "dropped a client after a bad frame: %s",
                      strerror(err));
    }
    if (!srv->clients[index].authenticated) {
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        if (frame.type != WF_HELLO || nfds != 0
            || !secrets_equal(frame.data, srv->secret)) {
            srv->rejected_peers++;
            reply(fd, WF_ERROR, EACCES);
            drop_client(srv, index);
            return notice(srv, "dropped a client that did not prove the "
                               "server's secret");
        }
        srv->clients[index].authenticated = 1;
        reply(fd, WF_OK, getpid());
        return 0;
    }
    if (frame.type == WF_START)
        return start_child(srv, index, fds, nfds);

    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    srv->bad_frames++;
    reply(fd, WF_ERROR, EBADMSG);
    drop_client(srv, index);
    return notice(srv, "dropped a client after a frame of unknown type %u",
                  (unsigned)frame.type);
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
            /* 8 bytes into an empty pipe never block; EPIPE means the
               parent is gone and nobody is listening. */
            if (write(srv->children[i].status_fd, &code, sizeof(code)) < 0) {
                /* nothing to do */
            }
            close_fd(&srv->children[i].status_fd);
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

/* Read every record waiting on the tracker channel. */
static int read_tracker(struct wf_server *srv)
{
    char buf[WF_NAME_MAX + 64];
    for (;;) {
        struct iovec iov = { buf, sizeof(buf) - 1 };
        struct msghdr msg;
        ssize_t n;

        memset(&msg, 0, sizeof(msg));
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        n = recvmsg(srv->tracker_fd, &msg, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return 0;
            return -1;
        }
        if (n == 0) {
            srv->tracker_eof = 1;       /* every holder of the channel gone */
            close_fd(&srv->tracker_fd);
            return 0;
        }
        if (msg.msg_flags & MSG_TRUNC) {
            srv->bad_tracker_messages++;
            return notice(srv, "resource tracker: ignored a message longer "
                               "than %d bytes", (int)sizeof(buf) - 1);
        }
        if (wf_tracker_handle(srv, buf, (size_t)n) == WF_EV_NOTICE)
            return WF_EV_NOTICE;
    }
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

int wf_server_run(struct wf_server *srv)
{
    struct pollfd pfd[WF_MAX_CLIENTS + 4];

    for (;;) {
        int n = 0, rc;
        int listen_at = -1, alive_at = -1, tracker_at = -1, sigchld_at;
        int clients_at;

        if (srv->owner_gone && srv->nidle > 0) {
            /* Idle children see EOF and exit; they are reaped as they go. */
            for (int i = 0; i < srv->nidle; i++)
                close_fd(&srv->idle[i].sock);
            srv->nidle = 0;
        }
        if (srv->owner_gone && srv->nchildren == 0) {
            if (srv->tracker_client_fd >= 0 || srv->listen_fd >= 0)
                start_shutdown(srv);
            if (srv->tracker_eof)
                return WF_EV_EXIT;
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
            listen_at = n;
            pfd[n].fd = srv->listen_fd; pfd[n++].events = POLLIN;
        }
        clients_at = n;
        for (int i = 0; i < srv->nclients; i++) {
            pfd[n].fd = srv->clients[i].fd; pfd[n++].events = POLLIN;
        }

        /* Refill the pool only when nothing else is waiting: a request
           that is already here goes first. */
        int refill = !srv->owner_gone && srv->nidle < srv->pool_target;
        rc = poll(pfd, n, refill ? 0 : -1);
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (rc == 0 && refill) {
            rc = spawn_idle(srv);
            if (rc != 0)
                return rc;
            continue;
        }

        /* Reap first: a freed slot and a prompt exit code matter most. */
        if (pfd[sigchld_at].revents)
            reap_children(srv);
        if (alive_at >= 0 && pfd[alive_at].revents) {
            char byte;
            ssize_t got = read(srv->alive_fd, &byte, 1);
            if (got <= 0 && !(got < 0 && (errno == EINTR || errno == EAGAIN))) {
                srv->owner_gone = 1;
                close_fd(&srv->alive_fd);
            }
        }
        if (tracker_at >= 0 && pfd[tracker_at].revents) {
            rc = read_tracker(srv);
            if (rc != 0)
                return rc;
        }
        if (listen_at >= 0 && pfd[listen_at].revents) {
            rc = accept_client(srv);
            if (rc != 0)
                return rc;
        }
        /* Walk clients from the end: serving one may drop it (swap-remove),
           which moves only entries we have already visited. */
        for (int i = n - clients_at - 1; i >= 0; i--) {
            if (i >= srv->nclients || !pfd[clients_at + i].revents)
                continue;
            if (srv->clients[i].fd != pfd[clients_at + i].fd)
                continue;
            rc = serve_client(srv, i);
            if (rc != 0)
                return rc;
        }
    }
}
