/*
 * wf_fork.c: fork() as os.fork() does it, from C called through cffi.
 *
 * cffi releases the GIL around calls into the core, so a bare fork() here
 * would skip what CPython's posixmodule.c does around fork(): at-fork hooks
 * (random reseeds, threading and logging reset their locks), the import
 * lock, and re-initialising the runtime in the child.  We take the GIL back,
 * do the same dance with the public PyOS_*Fork calls, and release it again.
 *
 * cffi's generated module defines Py_LIMITED_API without a version, which
 * hides PyOS_BeforeFork and friends; this file is compiled on its own and
 * asks for the 3.9 stable ABI, where they are part of it.
 */
#define Py_LIMITED_API 0x03090000
#include <Python.h>

#include "warmfork.h"

#include <errno.h>
#include <unistd.h>

pid_t wf_fork(void)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    pid_t pid;
    int saved_errno;

    PyOS_BeforeFork();
    pid = fork();
    saved_errno = errno;
    if (pid == 0)
        PyOS_AfterFork_Child();
    else
        PyOS_AfterFork_Parent();  /* also on failure, to release the locks */
    PyGILState_Release(gil);
    errno = saved_errno;
    return pid;
}
