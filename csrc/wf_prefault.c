/*
 * wf_prefault.c: learn which pages a start writes, and write them early.
 *
 * Why: a child shares the server's memory copy-on-write, so the first
 * write to each page on the start path (unpickling, spawn.prepare,
 * Process._bootstrap) costs a page fault and a 4 kB copy, ~6 us each on
 * these VMs, ~200 of them per start.  An idle child of the warm pool has
 * time to spare before its start arrives: it can take those faults ahead
 * of time.  Which pages?  The ones a real start wrote: a child lists the
 * private anonymous pages it holds exclusively (written since the fork)
 * when its target begins (wf_written_pages), and later idle children fault
 * exactly those in (wf_prefault) with MADV_POPULATE_WRITE (Linux 5.14+),
 * which breaks copy-on-write without changing a byte.  Addresses stay
 * valid from one child to the next because all are forks of one server.
 *
 * Python owns the policy (whether, which child learns, where the list is
 * kept); this file owns the syscalls.
 */
#define _GNU_SOURCE
#include "warmfork.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define PM_PRESENT (1ULL << 63)
#define PM_FILE_OR_SHARED (1ULL << 61)
#define PM_EXCLUSIVE (1ULL << 56)

/* Call visit(start, end, ctx) for each private writable mapping.  Returns
   0, or -1 and errno. */
static int each_private_writable(int (*visit)(uintptr_t, uintptr_t, void *),
                                 void *ctx)
{
    char line[512];
    FILE *maps = fopen("/proc/self/maps", "re");
    int rc = 0;

    if (!maps)
        return -1;
    while (rc == 0 && fgets(line, sizeof(line), maps)) {
        unsigned long start, end;
        char perms[5];
        if (sscanf(line, "%lx-%lx %4s", &start, &end, perms) != 3)
            continue;
        if (perms[0] == 'r' && perms[1] == 'w' && perms[3] == 'p')
            rc = visit(start, end, ctx);
        /* a line longer than the buffer: skip the rest of it */
        while (!strchr(line, '\n') && fgets(line, sizeof(line), maps))
            ;
    }
    fclose(maps);
    return rc;
}

struct written {
    int pagemap;
    uint64_t *out;
    int max, count;
    long page;
};

static int collect_written(uintptr_t start, uintptr_t end, void *ctx)
{
    struct written *w = ctx;
    uint64_t entries[512];

    for (uintptr_t addr = start; addr < end && w->count < w->max;) {
        size_t npages = (end - addr) / w->page;
        if (npages > 512)
            npages = 512;
        off_t at = (off_t)(addr / w->page) * sizeof(uint64_t);
        ssize_t got = pread(w->pagemap, entries, npages * sizeof(uint64_t),
                            at);
        if (got <= 0)
            return 0;           /* e.g. [vsyscall]: nothing to learn */
        npages = got / sizeof(uint64_t);
        for (size_t i = 0; i < npages && w->count < w->max; i++) {
            uint64_t e = entries[i];
            if ((e & PM_PRESENT) && (e & PM_EXCLUSIVE)
                && !(e & PM_FILE_OR_SHARED))
                w->out[w->count++] = addr + i * w->page;
        }
        addr += npages * w->page;
    }
    return 0;
}

int wf_written_pages(uint64_t *out, int max)
{
    struct written w = { -1, out, max, 0, sysconf(_SC_PAGESIZE) };

    w.pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (w.pagemap < 0)
        return -1;
    if (each_private_writable(collect_written, &w) < 0) {
        int err = errno;
        close(w.pagemap);
        errno = err;
        return -1;
    }
    close(w.pagemap);
    return w.count;
}

struct touch {
    const uint64_t *pages;
    int n, done;
};

/* Fallback before Linux 5.14: write each listed page of this mapping
   (its own first byte back), so only mapped, writable pages are hit. */
static int touch_pages(uintptr_t start, uintptr_t end, void *ctx)
{
    struct touch *t = ctx;
    for (int i = 0; i < t->n; i++) {
        if (t->pages[i] >= start && t->pages[i] < end) {
            volatile char *p = (volatile char *)(uintptr_t)t->pages[i];
            *p = *p;
            t->done++;
        }
    }
    return 0;
}

int wf_prefault(const uint64_t *pages, int n)
{
    long page = sysconf(_SC_PAGESIZE);
    int done = 0;

    /* Runs of adjacent pages go in one call; a run that is no longer
       mapped here (an arena the learning child allocated) fails alone. */
    for (int i = 0; i < n;) {
        int j = i + 1;
        while (j < n && pages[j] == pages[j - 1] + (uint64_t)page)
            j++;
        if (madvise((void *)(uintptr_t)pages[i], (size_t)(j - i) * page,
                    MADV_POPULATE_WRITE) == 0) {
            done += j - i;
        } else if (errno == EINVAL) {
            struct touch t = { pages, n, 0 };
            if (each_private_writable(touch_pages, &t) < 0)
                return -1;
            return t.done;
        }
        i = j;
    }
    return done;
}
