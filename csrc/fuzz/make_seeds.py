#!/usr/bin/env python3
"""Write the seed corpora: a few valid and near-valid inputs per target.

Run from anywhere: python3 csrc/fuzz/make_seeds.py.  The files are
committed; rerun this only to change them.  Frame seeds start with the
harness's 3-byte header (flags, fds to attach, maxfds), see fuzz_frame.c.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
MAGIC, HELLO, START, MAX_FDS = 0x57464B31, 1, 2, 250


def frame(ftype, nfds=0, magic=MAGIC, arg=0, data=b""):
    # struct wf_frame: magic, type (u32), arg (i64), nfds, reserved (u32),
    # data[32]: 56 bytes, little-endian on the machines we run.
    return struct.pack("<IIqII32s", magic, ftype, arg, nfds, 0, data)


def header(flags=0, attach=0, maxfds=MAX_FDS):
    return bytes([flags, attach, maxfds])


FRAMES = {
    "hello": header() + frame(HELLO, data=bytes(range(32))),
    "start-2fds": header(attach=2) + frame(START, nfds=2),
    "start-250fds": header(attach=250) + frame(START, nfds=250),
    "start-253fds-ctrunc": header(attach=253) + frame(START, nfds=253),
    "bad-magic": header(attach=2) + frame(START, nfds=2, magic=0),
    "nfds-mismatch": header(attach=3) + frame(START, nfds=2),
    "more-than-maxfds": header(attach=2, maxfds=1) + frame(START, nfds=2),
    "passcred-2fds": header(flags=1, attach=2) + frame(START, nfds=2),
    "eof": header(flags=2),
    "eof-after-start": header(flags=4, attach=2) + frame(START, nfds=2),
    "short": header(attach=1) + b"x",
    "long": header(attach=1) + frame(START, nfds=1) + b"y" * 44,
    "empty-record": header(),
}

# Tracker inputs are packets (one write() each), split at 0xff bytes; a
# packet may hold several lines.
TRACKER = {
    "register-sem": b"REGISTER:/mp-k3j9x1q0:semaphore\n",
    "register-shm": b"REGISTER:/psm_1a2b3c4d:shared_memory\n",
    "register-dummy": b"REGISTER:dummy_name:dummy\n",
    "probe": b"PROBE:0:noop\n",
    "register-unregister": b"\xff".join([
        b"REGISTER:/mp-a:semaphore\n", b"REGISTER:/mp-b:semaphore\n",
        b"REGISTER:/mp-a:shared_memory\n", b"UNREGISTER:/mp-a:semaphore\n",
        b"REGISTER:/mp-b:semaphore\n", b"UNREGISTER:/mp-c:semaphore\n"]),
    "lines-in-one-packet": (b"REGISTER:/a:dummy\nREGISTER:/b:dummy\n"
                            b"UNREGISTER:/a:dummy\nREGISTER:/c:semaphore"),
    "name-255": b"REGISTER:/" + b"n" * 254 + b":semaphore\n",
    "name-256": b"REGISTER:/" + b"n" * 255 + b":semaphore\n",
    "colon-in-name": b"REGISTER:/a:b:semaphore\n",
    "bad": b"\xff".join([
        b"REGISTER:/a/b:semaphore\n", b"REGISTER:/x:frob\n",
        b"REGISTER:/half\n", b"SHOUT:/x:semaphore\n",
        b"REGISTER:/x\0y:semaphore\n", b"REGISTER::semaphore\n", b"\n",
        b""]),
    "no-newline": b"REGISTER:/mp-last:semaphore",
}

for sub, seeds in (("frame", FRAMES), ("tracker", TRACKER)):
    os.makedirs(os.path.join(HERE, "seeds", sub), exist_ok=True)
    for old in os.listdir(os.path.join(HERE, "seeds", sub)):
        if old not in seeds:
            os.unlink(os.path.join(HERE, "seeds", sub, old))
    for name, data in seeds.items():
        with open(os.path.join(HERE, "seeds", sub, name), "wb") as f:
            f.write(data)
