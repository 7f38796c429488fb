/*
 * kmod_events: which events mrlease.ko reports for each change of memory
 * that a real RDMA device has registered (pinned by ibv_reg_mr on rxe0),
 * as a table: the event kinds the module passed on (UNMAP, CLEAR, ...),
 * how many, and how many invalidations it ignored as replacing no page
 * (PROTECTION_VMA, PROTECTION_PAGE, SOFT_DIRTY). Run as root in the guest
 * with the module loaded; docs/kmod.md keeps the table.
 *
 *   kmod_events [DEVICE]       (default rxe0)
 *
 * One line per change:
 *   "event CASE kinds=K,... events=N ignored=N range=R pmd_clears=N"
 * where R is "exact" when every event lies within the changed range, and
 * pmd_clears counts the breaking CLEARs of exactly one aligned 2 MiB.
 */
#define _GNU_SOURCE
#include "../../kernel/mrlease_uapi.h"

#include <infiniband/verbs.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define NPAGES 16

static int ctl = -1;
static struct mrlease_status_hdr *hdr;
static struct ibv_pd *pd;
static size_t page;

#define DIE(...) \
    do { \
        fprintf(stderr, "kmod_events: " __VA_ARGS__); \
        fprintf(stderr, "\n"); \
        exit(2); \
    } while (0)

static void open_ctl(void)
{
    static volatile uint32_t pending;
    struct mrlease_setup s = {0};

    ctl = open(MRLEASE_DEVICE, O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (ctl < 0) {
        DIE("%s: %m (load kernel/mrlease.ko)", MRLEASE_DEVICE);
    }
    s.abi          = MRLEASE_ABI_VERSION;
    s.max_ranges   = 64;
    s.pending_addr = (uintptr_t)&pending;
    s.pending_bits = 1;
    if (ioctl(ctl, MRLEASE_IOC_SETUP, &s) < 0) {
        DIE("setup: %m");
    }
    hdr = mmap(NULL, s.status_size, PROT_READ, MAP_SHARED, ctl, 0);
    if (hdr == MAP_FAILED) {
        DIE("mmap status: %m");
    }
}

static void open_pd(const char *name)
{
    struct ibv_device **devs = ibv_get_device_list(NULL);
    struct ibv_context *ctx  = NULL;
    int i;

    for (i = 0; (devs != NULL) && (devs[i] != NULL); ++i) {
        if (!strcmp(ibv_get_device_name(devs[i]), name)) {
            ctx = ibv_open_device(devs[i]);
        }
    }
    if ((ctx == NULL) || ((pd = ibv_alloc_pd(ctx)) == NULL)) {
        DIE("cannot open %s: %m", name);
    }
}

/* A watched, registered (pinned) range */
typedef struct {
    char          *p;
    size_t        len;
    uint32_t      slot;
    struct ibv_mr *mr;
    uint64_t      ignored0;
    uint64_t      pmd0;
} watch_t;

static void watch(watch_t *w, char *p, size_t len)
{
    struct mrlease_register r = {0};

    memset(p, 1, len);
    w->p   = p;
    w->len = len;
    w->mr  = ibv_reg_mr(pd, p, len, IBV_ACCESS_LOCAL_WRITE |
                        IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
    if (w->mr == NULL) {
        DIE("ibv_reg_mr: %m");
    }
    r.start  = (uintptr_t)p;
    r.len    = len;
    r.cookie = 1;
    if (ioctl(ctl, MRLEASE_IOC_REGISTER, &r) < 0) {
        DIE("register: %m");
    }
    w->slot     = r.slot;
    w->ignored0 = __atomic_load_n(&hdr->ignored, __ATOMIC_ACQUIRE);
    w->pmd0     = __atomic_load_n(&hdr->pmd_clears, __ATOMIC_ACQUIRE);
}

/* Read what the change raised on [lo, hi) and print the line. */
static void report(const char *name, watch_t *w, uintptr_t lo, uintptr_t hi)
{
    static const char *kind_names[] = {"UNMAP", "CLEAR", "MIGRATE", "RELEASE",
                                       "EXCLUSIVE", "OTHER"};
    struct mrlease_event ev[64];
    unsigned kinds = 0, n = 0, i, k;
    int exact      = 1;
    ssize_t got;
    char buf[128]  = "";

    while ((got = read(ctl, ev, sizeof(ev))) > 0) {
        for (i = 0; i < got / sizeof(ev[0]); ++i) {
            kinds |= ev[i].kind;
            exact &= (ev[i].start >= lo) && (ev[i].end <= hi);
            ++n;
        }
    }
    for (k = 0; k < 6; ++k) {
        if (kinds & (1u << k)) {
            strcat(buf, buf[0] ? "," : "");
            strcat(buf, kind_names[k]);
        }
    }
    printf("event %s kinds=%s events=%u ignored=%llu range=%s pmd_clears=%llu\n",
           name, buf[0] ? buf : "none", n,
           (unsigned long long)(__atomic_load_n(&hdr->ignored, __ATOMIC_ACQUIRE) -
                                w->ignored0), n ? (exact ? "exact" : "wider") : "-",
           (unsigned long long)(__atomic_load_n(&hdr->pmd_clears, __ATOMIC_ACQUIRE) -
                                w->pmd0));
    fflush(stdout);
    ioctl(ctl, MRLEASE_IOC_UNREGISTER, &w->slot);
    ibv_dereg_mr(w->mr);
}

static char *anon(size_t len)
{
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
                   0);
    if (p == MAP_FAILED) {
        DIE("mmap: %m");
    }
    return p;
}

int main(int argc, char **argv)
{
    size_t len = NPAGES * (page = sysconf(_SC_PAGESIZE));
    char path[] = "/dev/shm/mrl-kmod-events-XXXXXX";
    watch_t w;
    char *p, *q;
    pid_t pid;
    int fd, id, st;

    open_ctl();
    open_pd((argc > 1) ? argv[1] : "rxe0");

    p = anon(len);
    watch(&w, p, len);
    syscall(SYS_munmap, p, len);
    report("munmap", &w, (uintptr_t)p, (uintptr_t)p + len);

    p = anon(len);
    watch(&w, p, len);
    syscall(SYS_munmap, p + 4 * page, 4 * page);
    report("munmap_partial", &w, (uintptr_t)p + 4 * page, (uintptr_t)p + 8 * page);
    munmap(p, len);

    p = anon(len);
    q = anon(len);
    watch(&w, p, len);
    syscall(SYS_mremap, p, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, q);
    report("mremap_move", &w, (uintptr_t)p, (uintptr_t)p + len);
    munmap(q, len);

    p = anon(len);
    watch(&w, p, len);
    syscall(SYS_mremap, p, len, len / 2, 0);
    report("mremap_shrink", &w, (uintptr_t)p + len / 2, (uintptr_t)p + len);
    munmap(p, len);

    p = anon(len);
    watch(&w, p, len);
    syscall(SYS_madvise, p, len, MADV_DONTNEED);
    report("madvise_dontneed", &w, (uintptr_t)p, (uintptr_t)p + len);
    munmap(p, len);

    p = anon(len);
    watch(&w, p, len);
    syscall(SYS_madvise, p, len, MADV_FREE);
    report("madvise_free", &w, (uintptr_t)p, (uintptr_t)p + len);
    munmap(p, len);

    p = anon(len);
    watch(&w, p, len);
    mprotect(p, len, PROT_READ);
    mprotect(p + page, page, PROT_NONE);
    mprotect(p, len, PROT_READ | PROT_WRITE);
    report("mprotect", &w, (uintptr_t)p, (uintptr_t)p + len);
    munmap(p, len);

    /* fork: the parent writes while the child lives */
    p = anon(len);
    watch(&w, p, len);
    pid = fork();
    if (pid == 0) {
        usleep(300000);
        _exit(0);
    }
    memset(p, 2, len);
    waitpid(pid, &st, 0);
    report("fork_parent_writes", &w, (uintptr_t)p, (uintptr_t)p + len);
    munmap(p, len);

    id = shmget(IPC_PRIVATE, len, IPC_CREAT | 0600);
    p  = shmat(id, NULL, 0);
    shmctl(id, IPC_RMID, NULL);
    if (p == (char*)-1) {
        DIE("shmat: %m");
    }
    watch(&w, p, len);
    syscall(SYS_shmdt, p);
    report("shmdt", &w, (uintptr_t)p, (uintptr_t)p + len);

    /* a /dev/shm file truncated by another process */
    fd = mkstemp(path);
    if ((fd < 0) || (ftruncate(fd, len) < 0)) {
        DIE("%s: %m", path);
    }
    p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    watch(&w, p, len);
    pid = fork();
    if (pid == 0) {
        _exit(truncate(path, 0) ? 1 : 0);
    }
    waitpid(pid, &st, 0);
    report("truncate_by_another_process", &w, (uintptr_t)p, (uintptr_t)p + len);
    munmap(p, len);
    close(fd);
    unlink(path);

    /* a vma split in a THP-eligible region: the lease's pages stay */
    {
        size_t huge = 2ul << 20, big = 4 * huge;
        char *r     = anon(big + huge);
        char *a     = (char*)(((uintptr_t)r + huge - 1) & ~(huge - 1));

        madvise(a, big, MADV_HUGEPAGE);
        memset(a, 1, big);
        watch(&w, a, 64 * page); /* the first 64 pages of a huge page */
        mprotect(a + 256 * page, page, PROT_READ); /* same huge page, not ours */
        report("thp_split_beside", &w, (uintptr_t)a, (uintptr_t)a + 64 * page);
        /* what libibverbs does around each registration when fork support
         * is on: MADV_DONTFORK (a split), MADV_DOFORK (a merge), here of a
         * page in the same huge page, not ours: the pages stay */
        watch(&w, a + 512 * page, 64 * page);
        madvise(a + 768 * page, page, MADV_DONTFORK);
        madvise(a + 768 * page, page, MADV_DOFORK);
        report("dontfork_beside", &w, (uintptr_t)a + 512 * page,
               (uintptr_t)a + 576 * page);
        /* the owner drops a whole huge page (the lock held for read): told */
        watch(&w, a + 2 * huge, 64 * page);
        syscall(SYS_madvise, a + 2 * huge, huge, MADV_DONTNEED);
        report("dontneed_huge_page", &w, (uintptr_t)a + 2 * huge,
               (uintptr_t)a + 2 * huge + 64 * page);
        munmap(r, big + huge);
    }

    /* hugetlb, if the guest has huge pages reserved (nr_hugepages) */
    {
        size_t huge = 2ul << 20;
        char *h     = mmap(NULL, 2 * huge, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);

        if (h == MAP_FAILED) {
            printf("event hugetlb_* not run: no huge pages (%m)\n");
        } else {
            watch(&w, h, 2 * huge);
            syscall(SYS_madvise, h + huge, huge, MADV_DONTNEED);
            report("hugetlb_dontneed", &w, (uintptr_t)h + huge, (uintptr_t)h + 2 * huge);
            watch(&w, h, 2 * huge);
            syscall(SYS_munmap, h, 2 * huge);
            report("hugetlb_munmap", &w, (uintptr_t)h, (uintptr_t)h + 2 * huge);
        }
    }

    printf("kmod_events: done\n");
    return 0;
}
