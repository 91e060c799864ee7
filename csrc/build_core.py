"""cffi builder for warmfork._core (API, out-of-line mode).

Run by setuptools through ``cffi_modules`` in setup.py; the runtime never
imports this file.  The cdef is read from csrc/warmfork.h between its
CDEF markers, so the header is the single place the C API is declared.
"""
import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ["wf_frame.c", "wf_fork.c", "wf_server.c", "wf_tracker.c",
           "wf_prefault.c"]


def read_cdef(header_path):
    """Return the declarations between the CDEF markers of the header."""
    with open(header_path) as f:
        text = f.read()
    match = re.search(r"/\* CDEF-BEGIN \*/(.*)/\* CDEF-END \*/", text, re.S)
    if match is None:
        raise RuntimeError("no CDEF markers in %s" % header_path)
    cdef = match.group(1)
    # pycparser knows no macros: write array sizes as the numbers they name.
    defines = dict(re.findall(r"^#define (WF_\w+) (\d+)", cdef, re.M))
    return re.sub(r"\[(WF_\w+)(.*?)\]",
                  lambda m: "[%s%s]" % (defines[m.group(1)], m.group(2)), cdef)


ffibuilder = FFI()
# POSIX types pycparser does not know; the compiler fills in their size.
ffibuilder.cdef("typedef int... pid_t; typedef int... uid_t;")
ffibuilder.cdef(read_cdef(os.path.join(HERE, "warmfork.h")))
ffibuilder.set_source(
    "warmfork._core",
    '#include "warmfork.h"',
    sources=[os.path.relpath(os.path.join(HERE, s)) for s in SOURCES],
    include_dirs=[os.path.relpath(HERE)],
    extra_compile_args=["-std=gnu99", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
    libraries=["rt", "pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
