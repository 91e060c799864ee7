/*
 * faultshim.c: an LD_PRELOAD library that injects faults into the
 * warmfork server, for tests/test_reliability.py and tools/soak.py.
 *
 * It acts only in the server process itself: a process whose command line
 * runs "warmfork.server", and only in the pid that loaded the library (the
 * server's children inherit the library but not the role).  At load time
 * it also removes LD_PRELOAD and WF_FAULT from the environment, so that
 * nothing the server runs later loads it again.
 *
 * WF_FAULT is a comma-separated list of rules, each
 *
 *     CALL:NTH[+COUNT]:ACTION
 *
 * CALL    accept4, socketpair, fork, recvmsg, sendmsg, read, poll, or
 *         "tracker": a read()/recvmsg() on the resource tracker channel
 *         (the pipe whose write end is in packet mode, or an unnamed
 *         SOCK_SEQPACKET socket in the pre-pipe server), counted apart
 *         from other reads.
 * NTH     the first call the rule acts on, counting from 1 in this process.
 * COUNT   how many calls from NTH on (default 1; "*" for all later ones).
 * ACTION  an errno name (ENOMEM, EAGAIN, EMFILE, ENOBUFS, EINTR, EIO,
 *         EINVAL, ENFILE) or number: fail the call with it, without making
 *         it; or kill-before / kill-after: SIGKILL this process just before
 *         the call, or just after it returned.
 *
 * fork is glibc's fork() as the C core calls it (wf_fork); kill-after acts
 * in the server, never in the new child.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

enum call { C_ACCEPT4, C_SOCKETPAIR, C_FORK, C_RECVMSG, C_SENDMSG, C_READ,
            C_POLL, C_TRACKER, NCALLS };
static const char *call_names[NCALLS] = {
    "accept4", "socketpair", "fork", "recvmsg", "sendmsg", "read", "poll",
    "tracker"};

enum action { A_NONE, A_ERRNO, A_KILL_BEFORE, A_KILL_AFTER };

#define MAX_RULES 16
static struct rule {
    enum call call;
    long first, count;          /* count < 0: every call from first on */
    enum action action;
    int err;
} rules[MAX_RULES];
static int nrules;
static pid_t server_pid;        /* 0: not the server, do nothing */
static long counts[NCALLS];

static const struct { const char *name; int value; } errnos[] = {
    {"ENOMEM", ENOMEM}, {"EAGAIN", EAGAIN}, {"EMFILE", EMFILE},
    {"ENFILE", ENFILE}, {"ENOBUFS", ENOBUFS}, {"EINTR", EINTR},
    {"EIO", EIO}, {"EINVAL", EINVAL}, {"EPERM", EPERM},
    {"ECONNABORTED", ECONNABORTED}, {NULL, 0}};

static int is_server(void)
{
    char buf[4096];
    ssize_t n;
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    for (ssize_t i = 0; i < n; i++)
        if (buf[i] == '\0')
            buf[i] = ' ';
    buf[n] = '\0';
    return strstr(buf, "warmfork.server") != NULL;
}

static void parse_rule(char *text)
{
    char *call = strtok(text, ":");
    char *when = strtok(NULL, ":");
    char *action = strtok(NULL, ":");
    struct rule r;

    if (!call || !when || !action || nrules >= MAX_RULES)
        return;
    memset(&r, 0, sizeof(r));
    r.call = NCALLS;
    for (int i = 0; i < NCALLS; i++)
        if (strcmp(call, call_names[i]) == 0)
            r.call = i;
    if (r.call == NCALLS)
        return;
    r.first = strtol(when, &when, 10);
    r.count = 1;
    if (*when == '+')
        r.count = when[1] == '*' ? -1 : strtol(when + 1, NULL, 10);
    if (strcmp(action, "kill-before") == 0) {
        r.action = A_KILL_BEFORE;
    } else if (strcmp(action, "kill-after") == 0) {
        r.action = A_KILL_AFTER;
    } else {
        r.action = A_ERRNO;
        r.err = atoi(action);
        for (int i = 0; errnos[i].name; i++)
            if (strcmp(action, errnos[i].name) == 0)
                r.err = errnos[i].value;
        if (r.err <= 0)
            return;
    }
    rules[nrules++] = r;
}

__attribute__((constructor))
static void faultshim_init(void)
{
    const char *spec = getenv("WF_FAULT");
    char *copy, *save = NULL;

    if (spec && is_server()) {
        copy = strdup(spec);
        for (char *tok = strtok_r(copy, ",", &save); tok;
             tok = strtok_r(NULL, ",", &save)) {
            char rule_text[256];
            strncpy(rule_text, tok, sizeof(rule_text) - 1);
            rule_text[sizeof(rule_text) - 1] = '\0';
            parse_rule(rule_text);
        }
        free(copy);
        server_pid = getpid();
    }
    unsetenv("WF_FAULT");
    unsetenv("LD_PRELOAD");
}

/* Count one call; return the rule that acts on it, or NULL. */
static struct rule *consider(enum call call)
{
    long n;
    if (server_pid == 0 || getpid() != server_pid)
        return NULL;
    n = ++counts[call];
    for (int i = 0; i < nrules; i++) {
        struct rule *r = &rules[i];
        if (r->call == call && n >= r->first
            && (r->count < 0 || n < r->first + r->count))
            return r;
    }
    return NULL;
}

/* Before the call: 1 if it must fail (errno set), 0 to make it. */
static int before(struct rule *r)
{
    if (!r)
        return 0;
    if (r->action == A_KILL_BEFORE)
        kill(getpid(), SIGKILL);
    if (r->action == A_ERRNO) {
        errno = r->err;
        return 1;
    }
    return 0;
}

static void after(struct rule *r)
{
    if (r && r->action == A_KILL_AFTER)
        kill(getpid(), SIGKILL);
}

#define REAL(name) \
    static __typeof__(name) *real_##name; \
    if (!real_##name) \
        real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

/* The inode of the tracker pipe: the one pipe whose write end the server
   holds in packet mode (O_DIRECT shows on the write end only). */
static ino_t tracker_ino;

static ino_t find_tracker_pipe(void)
{
    struct stat st;
    for (int fd = 0; fd < 1024; fd++) {
        int flags = fcntl(fd, F_GETFL);
        if (flags >= 0 && (flags & O_DIRECT) && fstat(fd, &st) == 0
            && S_ISFIFO(st.st_mode))
            return st.st_ino;
    }
    return 0;
}

/* The resource tracker's channel, as the server sees it. */
static int is_tracker(int fd)
{
    struct stat st;
    if (server_pid == 0 || getpid() != server_pid || fstat(fd, &st) < 0)
        return 0;
    if (S_ISFIFO(st.st_mode)) {
        if (tracker_ino == 0)
            tracker_ino = find_tracker_pipe();
        return tracker_ino != 0 && st.st_ino == tracker_ino;
    }
    if (S_ISSOCK(st.st_mode)) {
        struct sockaddr_storage addr;
        socklen_t len = sizeof(addr);
        int type;
        socklen_t tlen = sizeof(type);
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) < 0
            || type != SOCK_SEQPACKET)
            return 0;
        /* Accepted clients are named after the listener; a socketpair's
           ends are unnamed. */
        if (getsockname(fd, (struct sockaddr *)&addr, &len) < 0)
            return 0;
        return len <= sizeof(sa_family_t);
    }
    return 0;
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    REAL(accept4);
    struct rule *r = consider(C_ACCEPT4);
    if (before(r))
        return -1;
    int rc = real_accept4(fd, addr, len, flags);
    after(r);
    return rc;
}

int socketpair(int domain, int type, int protocol, int sv[2])
{
    REAL(socketpair);
    struct rule *r = consider(C_SOCKETPAIR);
    if (before(r))
        return -1;
    int rc = real_socketpair(domain, type, protocol, sv);
    after(r);
    return rc;
}

pid_t fork(void)
{
    REAL(fork);
    struct rule *r = consider(C_FORK);
    if (before(r))
        return -1;
    pid_t pid = real_fork();
    if (pid != 0)
        after(r);       /* in the server only: the child is not it */
    return pid;
}

ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    REAL(recvmsg);
    struct rule *r = consider(is_tracker(fd) ? C_TRACKER : C_RECVMSG);
    if (before(r))
        return -1;
    ssize_t rc = real_recvmsg(fd, msg, flags);
    after(r);
    return rc;
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    REAL(sendmsg);
    struct rule *r = consider(C_SENDMSG);
    if (before(r))
        return -1;
    ssize_t rc = real_sendmsg(fd, msg, flags);
    after(r);
    return rc;
}

ssize_t read(int fd, void *buf, size_t count)
{
    REAL(read);
    struct rule *r = consider(is_tracker(fd) ? C_TRACKER : C_READ);
    if (before(r))
        return -1;
    ssize_t rc = real_read(fd, buf, count);
    after(r);
    return rc;
}

int poll(struct pollfd *fds, nfds_t nfds, int timeout)
{
    REAL(poll);
    struct rule *r = consider(C_POLL);
    if (before(r))
        return -1;
    int rc = real_poll(fds, nfds, timeout);
    after(r);
    return rc;
}
