/*
 * wf_frame.c: one fixed-size frame plus file descriptors over SCM_RIGHTS.
 *
 * The sockets are AF_UNIX SOCK_SEQPACKET, so a frame is one record: it
 * arrives whole or not at all, and a peer cannot wedge the server by sending
 * half of one.  Shaped after TLPI's scm_functions.c, plus what it leaves out:
 * MSG_CTRUNC is an error, and descriptors that came with a rejected frame
 * are closed rather than leaked.
 */
#define _GNU_SOURCE
#include "warmfork.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

union wf_cmsg_buf {
    char buf[CMSG_SPACE(sizeof(int) * WF_MAX_FDS)];
    struct cmsghdr align;
};

int wf_send_frame(int sock, const struct wf_frame *frame,
                  const int *fds, int nfds)
{
    union wf_cmsg_buf control;
    struct iovec iov = { (void *)frame, sizeof(*frame) };
    struct msghdr msg;
    ssize_t n;

    if (nfds < 0 || nfds > WF_MAX_FDS || (nfds > 0 && fds == NULL)) {
        errno = EINVAL;
        return -1;
    }
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
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
    }
    /* A SOCK_SEQPACKET record goes whole or fails: no short writes. */
    n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n < 0)
        return -1;
    if ((size_t)n != sizeof(*frame)) {
        errno = EPROTO;
        return -1;
    }
    return 0;
}

void wf_close_fds(const int *fds, int nfds)
{
    for (int i = 0; i < nfds; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

int wf_recv_frame(int sock, struct wf_frame *frame,
                  int *fds, int maxfds, int *nfds)
{
    union wf_cmsg_buf control;
    int got[WF_MAX_FDS];
    int ngot = 0;
    struct iovec iov = { frame, sizeof(*frame) };
    struct msghdr msg;
    struct cmsghdr *cmsg;
    ssize_t n;
    int err = 0;

    *nfds = 0;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);
    n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0)
        return -1;

    /* Collect every descriptor first, so each error path can close them. */
    for (cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) {
            err = EBADMSG;
            continue;
        }
        int count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (int i = 0; i < count && ngot < WF_MAX_FDS; i++)
            memcpy(&got[ngot++], CMSG_DATA(cmsg) + i * sizeof(int),
                   sizeof(int));
    }

    if (msg.msg_flags & MSG_CTRUNC)
        err = EMSGSIZE;            /* some fds were dropped by the kernel */
    else if (ngot > maxfds)
        err = EMSGSIZE;
    else if (n == 0 && ngot == 0)
        return 0;                  /* orderly end of file */
    else if ((msg.msg_flags & MSG_TRUNC) || (size_t)n != sizeof(*frame)
             || frame->magic != WF_MAGIC || frame->nfds != (uint32_t)ngot)
        err = err ? err : EBADMSG;

    if (err) {
        wf_close_fds(got, ngot);
        errno = err;
        return -1;
    }
    if (ngot > 0)
        memcpy(fds, got, sizeof(int) * ngot);
    *nfds = ngot;
    return 1;
}
