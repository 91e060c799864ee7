/*
 * test_core.c: the C core without Python, for valgrind and ASan.
 *
 * Builds with a plain fork() in place of wf_fork() (which needs a Python
 * runtime) and drives the real server loop in a child process: HELLO,
 * a START through the warm pool and one without it, exit codes through
 * the status pipes, tracker records, and shutdown when the owner is gone.
 *
 *   make -C csrc/tests check        (valgrind, leak check, error exit code)
 */
#define _GNU_SOURCE
#include "../warmfork.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

pid_t wf_fork(void) { return fork(); }

static int failures;
#define CHECK(cond) do { if (!(cond)) { failures++; \
    fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    } } while (0)

static void test_frames(void)
{
    int sv[2], p[2], fds[WF_MAX_FDS], nfds = -1;
    struct wf_frame out, in;

    CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
    CHECK(pipe(p) == 0);
    memset(&out, 0, sizeof(out));
    out.magic = WF_MAGIC;
    out.type = WF_START;
    out.nfds = 2;
    CHECK(wf_send_frame(sv[0], &out, p, 2) == 0);
    CHECK(wf_recv_frame(sv[1], &in, fds, WF_MAX_FDS, &nfds) == 1);
    CHECK(nfds == 2 && in.type == WF_START);
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    /* More fds than the receiver takes: error, and none stay open. */
    CHECK(wf_send_frame(sv[0], &out, p, 2) == 0);
    CHECK(wf_recv_frame(sv[1], &in, fds, 1, &nfds) == -1 && errno == EMSGSIZE);
    /* Bad magic. */
    out.magic = 0;
    out.nfds = 0;
    CHECK(wf_send_frame(sv[0], &out, NULL, 0) == 0);
    CHECK(wf_recv_frame(sv[1], &in, fds, 1, &nfds) == -1 && errno == EBADMSG);
    close(sv[0]);
    CHECK(wf_recv_frame(sv[1], &in, fds, 1, &nfds) == 0);       /* EOF */
    close(sv[1]);
    close(p[0]);
    close(p[1]);
}

static void test_tracker_parsing(void)
{
    struct wf_server srv;
    static const char *bad[] = {
        "REGISTER:/a/b:semaphore\n", "REGISTER:/x:frob\n", "REGISTER:/half",
        "UNREGISTER:/nope:semaphore\n", "SHOUT:/x:semaphore\n",
    };
    memset(&srv, 0, sizeof(srv));
    CHECK(wf_tracker_init(&srv) == 0);
    CHECK(wf_tracker_handle(&srv, "REGISTER:/wf-test-c:dummy\n", 26) == 0);
    CHECK(wf_tracker_handle(&srv, "REGISTER:/wf-test-c:dummy\n", 26) == 0);
    CHECK(srv.ntracked == 1);
    CHECK(wf_tracker_handle(&srv, "PROBE:0:noop\n", 13) == 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(wf_tracker_handle(&srv, bad[i], strlen(bad[i])) == WF_EV_NOTICE);
    CHECK(wf_tracker_handle(&srv, "UNREGISTER:/wf-test-c:dummy\n", 28) == 0);
    CHECK(srv.ntracked == 0);
    /* Two lines in one packet are two records. */
    CHECK(wf_tracker_handle(&srv, "REGISTER:/a:dummy\nREGISTER:/b:dummy\n",
                            36) == 0);
    CHECK(srv.ntracked == 2);
    CHECK(wf_tracker_handle(&srv, "UNREGISTER:/a:dummy\nUNREGISTER:/b:dummy",
                            39) == 0);
    CHECK(srv.ntracked == 0);
    free(srv.tracked);
    free(srv.tracked_index);
}

/* The index under churn: fill the table, remove in another order, and
   check that every name is found exactly while it is registered. */
static void test_tracker_index(void)
{
    struct wf_server srv;
    char rec[64];
    int n;

    memset(&srv, 0, sizeof(srv));
    CHECK(wf_tracker_init(&srv) == 0);
    for (int i = 0; i < WF_MAX_TRACKED; i++) {
        n = snprintf(rec, sizeof(rec), "REGISTER:/n%d:dummy\n", i);
        CHECK(wf_tracker_handle(&srv, rec, n) == 0);
    }
    CHECK(srv.ntracked == WF_MAX_TRACKED);
    CHECK(wf_tracker_handle(&srv, "REGISTER:/over:dummy\n", 21)
          == WF_EV_NOTICE);                         /* table full */
    for (int i = 0; i < WF_MAX_TRACKED; i += 2) {   /* every other one */
        n = snprintf(rec, sizeof(rec), "UNREGISTER:/n%d:dummy\n",
                     (i * 7919) % WF_MAX_TRACKED);  /* a scrambled order */
        if (((i * 7919) % WF_MAX_TRACKED) % 2 == 0)
            CHECK(wf_tracker_handle(&srv, rec, n) == 0);
    }
    CHECK(srv.ntracked == WF_MAX_TRACKED / 2);
    for (int i = 0; i < WF_MAX_TRACKED; i++) {
        /* Registered ones are a set (0), removed ones unregister once. */
        n = snprintf(rec, sizeof(rec), "UNREGISTER:/n%d:dummy\n", i);
        CHECK(wf_tracker_handle(&srv, rec, n) == (i % 2 ? 0 : WF_EV_NOTICE));
    }
    CHECK(srv.ntracked == 0);
    free(srv.tracked);
    free(srv.tracked_index);
}

/* Run the server in a child: exits 0 after WF_EV_EXIT, or runs a started
   child's "program": read one byte from the data pipe, exit with it. */
static pid_t run_server(int listen_fd, int alive[2], int pool)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    close(alive[1]);            /* only the owner holds the write end */
    struct wf_server *srv = calloc(1, sizeof(*srv));
    srv->listen_fd = listen_fd;
    srv->alive_fd = alive[0];
    srv->tracker_fd = -1;
    srv->tracker_client_fd = -1;
    srv->pool_target = pool;
    memset(srv->secret, 7, WF_SECRET_SIZE);
    if (wf_server_init(srv) < 0)
        _exit(90);
    for (;;) {
        int ev = wf_server_run(srv);
        if (ev == WF_EV_NOTICE)
            continue;
        if (ev == WF_EV_IDLE)
            ev = wf_idle_wait(srv);
        if (ev == WF_EV_CHILD) {
            unsigned char code = 0;
            ssize_t n = read(srv->child_fds[WF_FD_DATA], &code, 1);
            CHECK(srv->child_fds[WF_FD_STATUS] == -1);
            wf_close_fds(srv->child_fds, srv->child_nfds);
            wf_server_close(srv);
            free(srv);
            _exit(n == 1 ? code : 91);
        }
        int ok = ev == WF_EV_EXIT;
        wf_server_close(srv);
        free(srv);
        _exit(ok ? 0 : 92);
    }
}

/* Send a request frame and wait for the reply. */
static int request(int sock, const struct wf_frame *req, const int *fds,
                   int nfds, struct wf_frame *reply)
{
    int nreply_fds;
    if (wf_send_frame(sock, req, fds, nfds) < 0)
        return -1;
    return wf_recv_frame(sock, reply, NULL, 0, &nreply_fds) == 1 ? 0 : -1;
}

static int start_child(int sock, unsigned char code)
{
    int data[2], status[2], tracker[2], fds[WF_FD_INHERITED];
    struct wf_frame req, reply;
    int64_t exit_code = -1;

    if (pipe(data) < 0 || pipe(status) < 0 || pipe(tracker) < 0)
        return -1;
    memset(&req, 0, sizeof(req));
    req.magic = WF_MAGIC;
    req.type = WF_START;
    req.nfds = WF_FD_INHERITED;
    fds[WF_FD_STATUS] = status[1];
    fds[WF_FD_DATA] = data[0];
    fds[WF_FD_TRACKER] = tracker[1];
    CHECK(request(sock, &req, fds, WF_FD_INHERITED, &reply) == 0);
    CHECK(reply.type == WF_OK && reply.arg > 0);
    close(data[0]);
    close(status[1]);
    close(tracker[0]);
    close(tracker[1]);
    CHECK(write(data[1], &code, 1) == 1);
    close(data[1]);
    CHECK(read(status[0], &exit_code, sizeof(exit_code)) == sizeof(exit_code));
    close(status[0]);
    return (int)exit_code;
}

static void test_server_loop(int pool)
{
    char dir[] = "/tmp/wf-ctest-XXXXXX";
    struct sockaddr_un addr;
    struct wf_frame hello, reply;
    int alive[2], listen_fd, sock, status;
    pid_t server;

    CHECK(mkdtemp(dir) != NULL);
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/s", dir);
    listen_fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    CHECK(bind(listen_fd, (struct sockaddr *)&addr, sizeof(addr)) == 0);
    CHECK(listen(listen_fd, 8) == 0);
    CHECK(pipe(alive) == 0);
    server = run_server(listen_fd, alive, pool);
    close(listen_fd);
    close(alive[0]);

    sock = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    CHECK(connect(sock, (struct sockaddr *)&addr, sizeof(addr)) == 0);
    memset(&hello, 0, sizeof(hello));
    hello.magic = WF_MAGIC;
    hello.type = WF_HELLO;
    memset(hello.data, 7, WF_SECRET_SIZE);
    CHECK(request(sock, &hello, NULL, 0, &reply) == 0);
    CHECK(reply.type == WF_OK && reply.arg == server);
    for (int i = 0; i < 5; i++)
        CHECK(start_child(sock, (unsigned char)(10 + i)) == 10 + i);

    close(sock);
    close(alive[1]);                /* the owner is gone: server exits */
    CHECK(waitpid(server, &status, 0) == server);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    unlink(addr.sun_path);
    rmdir(dir);
}

static void test_server_loop_without_pool(void) { test_server_loop(0); }
static void test_server_loop_with_pool(void) { test_server_loop(2); }

int main(void)
{
    static const struct { const char *name; void (*run)(void); } tests[] = {
        {"frames", test_frames},
        {"tracker_parsing", test_tracker_parsing},
        {"tracker_index", test_tracker_index},
        {"server_loop_without_pool", test_server_loop_without_pool},
        {"server_loop_with_pool", test_server_loop_with_pool},
    };
    int ntests = sizeof(tests) / sizeof(tests[0]), failed = 0;
    for (int i = 0; i < ntests; i++) {
        int before = failures;
        tests[i].run();
        if (failures != before) {
            failed++;
            fprintf(stderr, "FAILED: %s\n", tests[i].name);
        }
    }
    printf("%d passed, %d failed\n", ntests - failed, failed);
    return failed != 0;
}
