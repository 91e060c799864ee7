/*
 * fuzz_frame.c: libFuzzer harness for wf_recv_frame (csrc/wf_frame.c).
 *
 * Each input becomes one SOCK_SEQPACKET record, sent over a fresh
 * socketpair with a fuzzer-chosen number of fds attached (SCM_RIGHTS), and
 * is decoded by wf_recv_frame, as the server does with a client's request.
 *
 * Input layout:
 *   byte 0   flags: bit 0 set SO_PASSCRED on the receiver (so a second,
 *            non-SCM_RIGHTS control message arrives with the fds);
 *            bit 1 send nothing, only hang up (end of file);
 *            bit 2 hang up after the record, then receive again (must be EOF)
 *   byte 1   fds to attach, 0..253 (Linux's SCM_MAX_FD); more than
 *            WF_MAX_FDS do not fit the decoder's control buffer (MSG_CTRUNC)
 *   byte 2   maxfds the caller passes, 0..WF_MAX_FDS
 *   rest     the record itself
 *
 * The decoder's contract (warmfork.h) is the oracle:
 *   - it returns 1 exactly for a record of sizeof(struct wf_frame) bytes
 *     with WF_MAGIC whose nfds field equals the number of fds that came
 *     with it, when those fit in maxfds and no other control message came;
 *     then every fd arrived, close-on-exec, and nothing beyond maxfds of
 *     the caller's array was written (it is an exact-size heap block);
 *   - 0 only for a record of no bytes and no fds;
 *   - otherwise -1 with EBADMSG or EMSGSIZE, and every fd that arrived is
 *     closed: the process's fd count is what it was before.
 * A broken contract aborts, which libFuzzer reports as a crash.
 */
#define _GNU_SOURCE
#include "../warmfork.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SCM_MAX_FD 253      /* Linux: sendmsg refuses more with EINVAL */

#define FAIL(...) do { fprintf(stderr, "fuzz_frame: " __VA_ARGS__); \
    fputc('\n', stderr); abort(); } while (0)

static int devnull = -1;

/* Open fds, counted in /proc/self/fd: wf_recv_frame must leave this count
   as it found it on every path but success. */
static int count_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *entry;
    int n = 0;

    if (!dir)
        FAIL("opendir /proc/self/fd: %s", strerror(errno));
    while ((entry = readdir(dir)) != NULL)
        if (entry->d_name[0] != '.')
            n++;
    closedir(dir);
    return n - 1;           /* the directory's own fd */
}

/* Send the record with nfds copies of /dev/null.  One fd may be listed
   many times: each copy arrives as a distinct fd, as dup'd ones would. */
static int send_record(int sock, const uint8_t *data, size_t len, int nfds)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * SCM_MAX_FD)];
        struct cmsghdr align;
    } control;
    struct iovec iov = { (void *)data, len };
    struct msghdr msg;

    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (nfds > 0) {
        struct cmsghdr *cmsg;
        memset(&control, 0, sizeof(control));
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        for (int i = 0; i < nfds; i++)
            memcpy(CMSG_DATA(cmsg) + i * sizeof(int), &devnull, sizeof(int));
    }
    return sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 ? -1 : 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull < 0)
        FAIL("open /dev/null: %s", strerror(errno));
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct wf_frame frame, sent;
    int sv[2], nfds = -1, rc, before, err, one = 1;
    int passcred, eof_only, eof_after, nattach, maxfds, expect_ok;
    int *fds;

    if (size < 3)
        return 0;
    passcred = data[0] & 1;
    eof_only = data[0] & 2;
    eof_after = data[0] & 4;
    nattach = eof_only ? 0 : data[1] % (SCM_MAX_FD + 1);
    maxfds = data[2] % (WF_MAX_FDS + 1);
    data += 3;
    size -= 3;
    if (eof_only)
        size = 0;

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        FAIL("socketpair: %s", strerror(errno));
    if (passcred && setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &one,
                               sizeof(one)) < 0)
        FAIL("SO_PASSCRED: %s", strerror(errno));
    if (!eof_only && send_record(sv[0], data, size, nattach) < 0) {
        /* A record bigger than the socket buffer: not the decoder's
           business.  Everything else the kernel takes. */
        if (errno != EMSGSIZE && errno != EAGAIN && errno != ENOBUFS)
            FAIL("sendmsg of %zu bytes, %d fds: %s", size, nattach,
                 strerror(errno));
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    if (eof_only || eof_after)
        close(sv[0]);

    /* Exactly maxfds ints (NULL for none, as wf_request passes), so ASan
       sees any write past what the caller allowed. */
    fds = maxfds ? malloc(sizeof(int) * maxfds) : NULL;
    memset(&frame, 0xa5, sizeof(frame));
    memset(&sent, 0, sizeof(sent));
    memcpy(&sent, data, size < sizeof(sent) ? size : sizeof(sent));
    expect_ok = !eof_only && !passcred && size == sizeof(struct wf_frame)
                && sent.magic == WF_MAGIC && sent.nfds == (uint32_t)nattach
                && nattach <= maxfds;

    before = count_fds();
    errno = 0;
    rc = wf_recv_frame(sv[1], &frame, fds, maxfds, &nfds);
    err = errno;

    if (rc == 1) {
        if (!expect_ok)
            FAIL("accepted a record it must refuse (%zu bytes, magic %#x, "
                 "nfds field %u, %d fds attached, maxfds %d, passcred %d)",
                 size, sent.magic, sent.nfds, nattach, maxfds, passcred);
        if (nfds != nattach)
            FAIL("reported %d fds, %d were sent", nfds, nattach);
        if (memcmp(&frame, &sent, sizeof(frame)) != 0)
            FAIL("the frame differs from the record sent");
        if (count_fds() != before + nfds)
            FAIL("%d fds reported but %d new fds open", nfds,
                 count_fds() - before);
        for (int i = 0; i < nfds; i++) {
            int flags = fcntl(fds[i], F_GETFD);
            if (flags < 0 || !(flags & FD_CLOEXEC))
                FAIL("fd %d of %d: not open or not close-on-exec", i, nfds);
        }
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
    } else {
        if (expect_ok)
            FAIL("refused a valid record (rc %d, errno %d: %s)", rc, err,
                 strerror(err));
        if (rc == 0 && (size != 0 || nattach != 0))
            FAIL("end of file reported for a record of %zu bytes, %d fds",
                 size, nattach);
        if (rc == -1 && err != EBADMSG && err != EMSGSIZE)
            FAIL("undocumented errno %d (%s)", err, strerror(err));
        if (rc != 0 && rc != -1)
            FAIL("return value %d", rc);
        if (nfds != 0)
            FAIL("*nfds is %d after a refusal", nfds);
        if (count_fds() != before)
            FAIL("leaked %d fds (rc %d, errno %s, %zu bytes, %d attached, "
                 "maxfds %d, passcred %d)", count_fds() - before, rc,
                 strerror(err), size, nattach, maxfds, passcred);
    }

    if (eof_after && !eof_only) {
        /* Nothing is left but the hang-up: it must read as end of file. */
        before = count_fds();
        rc = wf_recv_frame(sv[1], &frame, fds, maxfds, &nfds);
        if (rc != 0 || nfds != 0 || count_fds() != before)
            FAIL("after the record, hang-up gave rc %d, nfds %d", rc, nfds);
    }

    free(fds);
    if (!eof_only && !eof_after)
        close(sv[0]);
    close(sv[1]);
    return 0;
}
