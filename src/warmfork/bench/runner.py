"""Run the measuring workers one after another and draw the progress line."""

import json
import os
import subprocess
import sys
import tempfile
import time

from . import script

__all__ = ["Progress", "run_group"]

_WORKER = ("import sys; from warmfork.bench.worker import main; "
           "sys.exit(main())")


class Progress:
    """A self-overwriting status line on a tty, plain lines elsewhere."""

    def __init__(self, total, stream=sys.stderr):
        self.total = total
        self.stream = stream
        self.tty = stream.isatty()
        self.t0 = time.monotonic()
        self.index = 0
        self._last = ""

    def group(self, name):
        self.index += 1
        self._name = name

    def update(self, case, done, total):
        line = (f"[{self.index}/{self.total}] {self._name}: {case} "
                f"round {done}/{total}  {time.monotonic() - self.t0:5.0f} s")
        if self.tty:
            self.stream.write("\r" + line.ljust(len(self._last)))
            self.stream.flush()
        elif done == total:
            self.stream.write(line + "\n")
        self._last = line

    def echo(self, text):
        """Print a line that is not progress without garbling the bar."""
        if self.tty and self._last:
            self.stream.write("\r" + " " * len(self._last) + "\r")
        self.stream.write(text)

    def done(self):
        if self.tty and self._last:
            self.stream.write("\r" + " " * len(self._last) + "\r")
            self.stream.flush()


def run_group(group, settings, progress):
    """Run one worker process for group and return its parsed JSON."""
    path = script.write() if group.script else None
    try:
        return _run([sys.executable, path] if path else
                    [sys.executable, "-c", _WORKER],
                    group, settings, progress)
    finally:
        if path:
            os.unlink(path)
            os.rmdir(os.path.dirname(path))


def _run(cmd, group, settings, progress):
    cmd = cmd + group.worker_args(settings)
    progress.group(group.name)
    tail = []
    # stdout goes to a file: the JSON can outgrow a pipe while we read stderr.
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True)
        for line in proc.stderr:
            if line.startswith("@progress "):
                _, case, done, total = line.split()
                progress.update(case, int(done), int(total))
            else:
                progress.echo(line)
                tail = (tail + [line])[-20:]
        rc = proc.wait()
        if rc != 0:
            raise RuntimeError(f"benchmark worker {group.name!r} failed "
                               f"(exit {rc}): {' '.join(cmd)}\n"
                               + "".join(tail))
        out.seek(0)
        return json.load(out)
