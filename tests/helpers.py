"""Process targets for the tests: children import them by name."""
import os
import sys
import time


def test_env(**overrides):
    """os.environ for a test's subprocess, with this folder importable (the
    subprocess's children unpickle targets from this module by name)."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH"))
                           if p)
    return dict(os.environ, PYTHONPATH=path, **overrides)


def noop():
    pass


def exit_with(code):
    sys.exit(code)


def sleep(seconds):
    time.sleep(seconds)


def send_identity(conn):
    import multiprocessing as mp
    parent = mp.parent_process()
    conn.send({"pid": os.getpid(), "name": mp.current_process().name,
               "parent_pid": parent.pid if parent else None,
               "cwd": os.getcwd(), "sys_path": list(sys.path),
               "argv": list(sys.argv), "start_method": mp.get_start_method(),
               "main": sys.modules["__main__"].__name__})
    conn.close()


def echo_over_socket(sock):
    data = sock.recv(100)
    sock.sendall(data.upper())
    sock.close()


def put(queue, value):
    queue.put(value)


def square(x):
    return x * x


def increment_under_lock(lock, value):
    for _ in range(50):
        with lock:
            value.value += 1


def wait_event_then_set(start, done):
    start.wait(10)
    done.set()


def report_fds(conn):
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[int(fd)] = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            pass            # listdir's own fd, closed by now
    conn.send(fds)
    conn.close()


def report_parent_alive(conn):
    import multiprocessing as mp
    conn.send(mp.parent_process().is_alive())
    conn.close()


def is_module_loaded(name, conn):
    conn.send(name in sys.modules)
    conn.close()


def register_atexit_then_return(conn):
    import atexit
    atexit.register(conn.send, "atexit ran")
