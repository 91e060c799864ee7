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
    srv.tracked = calloc(WF_MAX_TRACKED, sizeof(*srv.tracked));
    CHECK(wf_tracker_handle(&srv, "REGISTER:/wf-test-c:dummy\n", 26) == 0);
    CHECK(wf_tracker_handle(&srv, "REGISTER:/wf-test-c:dummy\n", 26) == 0);
    CHECK(srv.ntracked == 1);
    CHECK(wf_tracker_handle(&srv, "PROBE:0:noop\n", 13) == 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(wf_tracker_handle(&srv, bad[i], strlen(bad[i])) == WF_EV_NOTICE);
    CHECK(wf_tracker_handle(&srv, "UNREGISTER:/wf-test-c:dummy\n", 28) == 0);
    CHECK(srv.ntracked == 0);
    free(srv.tracked);
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
            ssize_t n = read(srv->child_fds[0], &code, 1);
            close(srv->child_fds[0]);
            free(srv->clients); free(srv->children); free(srv->tracked);
            free(srv);
            _exit(n == 1 ? code : 91);
        }
        int ok = ev == WF_EV_EXIT;
        wf_server_close(srv);
        free(srv);
        _exit(ok ? 0 : 92);
    }
}

static int start_child(int sock, unsigned char code)
{
    int data[2], status[2], fds[2];
    struct wf_frame req, reply;
    int64_t exit_code = -1;

    if (pipe(data) < 0 || pipe(status) < 0)
        return -1;
    memset(&req, 0, sizeof(req));
    req.magic = WF_MAGIC;
    req.type = WF_START;
    req.nfds = 2;
    fds[0] = data[0];
    fds[1] = status[1];
    CHECK(wf_request(sock, &req, fds, 2, &reply) == 0);
    CHECK(reply.type == WF_OK && reply.arg > 0);
    close(data[0]);
    close(status[1]);
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
    CHECK(wf_request(sock, &hello, NULL, 0, &reply) == 0);
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

int main(void)
{
    test_frames();
    test_tracker_parsing();
    test_server_loop(0);
    test_server_loop(2);
    printf("%d passed, %d failed\n", failures ? 0 : 4, failures ? 1 : 0);
    return failures != 0;
}
