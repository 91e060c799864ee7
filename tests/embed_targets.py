"""Targets for test_executor.py and test_embedding.py (children import them).

Kept apart from helpers.py so that the servers of these tests can preload
one small module.
"""
import os
import signal
import sys
import time

_state = []      # module state a task may leave behind


def add(a, b=0):
    return a + b


def pid_and_state(value):
    """Return this child's pid and the state earlier tasks left (none)."""
    seen = list(_state)
    _state.append(value)
    return os.getpid(), seen


def fail(message):
    raise ValueError(message)


def exit_now(code):
    os._exit(code)


def kill_self(signum):
    os.kill(os.getpid(), signum)
    time.sleep(30)


def sys_exit(code):
    sys.exit(code)


def sleep(seconds):
    time.sleep(seconds)
    return seconds


def started_then_wait(started_conn, release_conn):
    """Say we started, then wait for one byte on the release pipe."""
    started_conn.send(os.getpid())
    os.read(release_conn.fileno(), 1)
    return os.getpid()


def touch(path):
    with open(path, "w"):
        pass


def make_lambda():
    return lambda: None                  # a result that cannot be pickled


class Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("no pickling here")


def raise_unpicklable():
    raise Unpicklable("x")


def big(n):
    return b"x" * n


def environ(*names):
    return {name: os.environ.get(name) for name in names}


def environ_size():
    return len(os.environ)


def cwd():
    return os.getcwd()


def identity():
    import multiprocessing as mp
    parent = mp.parent_process()
    with open("/proc/self/comm") as f:
        comm = f.read().rstrip("\n")
    return {"pid": os.getpid(), "ppid": os.getppid(),
            "parent_pid": parent.pid if parent else None,
            "name": mp.current_process().name, "comm": comm}


def write_stdio(out, err):
    sys.stdout.write(out)
    sys.stdout.flush()
    os.write(2, err.encode())


def read_stdin_to(conn):
    conn.send(sys.stdin.read())
    conn.close()


def send(conn, value):
    conn.send(value)
    conn.close()


def send_identity(conn):
    conn.send(identity())
    conn.close()


def exit_with(code):
    sys.exit(code)


SIGKILL = signal.SIGKILL


def send_environ(conn, names):
    conn.send(environ(*names))
    conn.close()


def send_environ_all(conn):
    conn.send(dict(os.environ))
    conn.close()


def send_cwd(conn):
    conn.send(os.getcwd())
    conn.close()


def echo_upper(sock):
    data = sock.recv(100)
    sock.sendall(data.upper())
    sock.close()
    return len(data)
