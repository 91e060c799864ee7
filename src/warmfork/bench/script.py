"""The "realistic script": a ``__main__`` that imports numpy at top level.

Its target lives in ``__main__`` and uses numpy, so a child that does not
inherit ``__main__`` (spawn, or a forkserver whose preload leaves out
``'__main__'``) re-runs the script, numpy import included, on every start.
"""

import os
import tempfile

__all__ = ["SOURCE", "write"]

SOURCE = '''\
"""warmfork bench: a program that imports numpy and starts processes."""
import sys

import numpy as np


def work(conn):
    conn.send_bytes(np.arange(4, dtype=np.uint8)[1:2].tobytes())


if __name__ == "__main__":
    from warmfork.bench.worker import main

    sys.exit(main(sys.argv[1:], target=work))
'''


def write(directory=None):
    """Write the script into a fresh temp directory and return its path."""
    directory = tempfile.mkdtemp(prefix="warmfork-bench-", dir=directory)
    path = os.path.join(directory, "numpy_app.py")
    with open(path, "w") as f:
        f.write(SOURCE)
    return path
