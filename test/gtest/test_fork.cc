/*
 * fork(): the child neither hangs nor reports the parent's counters nor
 * vouches for anything; the parent keeps working, file leases included.
 * Real fork() here (the other tests spawn, since fork is itself an event).
 */
#include "mrlease_test.h"
extern "C" {
#include "engine.h" /* to hold the queue lock as the reader does */
}

#include <atomic>
#include <fcntl.h>
#include <functional>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace mrl;

static const char *all_monitors = "uffd,ucm,flease,inject";

class test_fork : public test_mrlease {
protected:
    /* Run fn in a forked child; its exit code, or -1 if it had to be
     * killed after timeout_s (a hang). */
    static int in_child(const std::function<int()> &fn, double timeout_s = 10)
    {
        pid_t pid = fork();
        if (pid == 0) {
            _exit(fn());
        }
        if (pid < 0) {
            return -2;
        }
        double t0 = now_s();
        int status;
        while (waitpid(pid, &status, WNOHANG) == 0) {
            if (now_s() - t0 > timeout_s) {
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                return -1;
            }
            usleep(1000);
        }
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
};

/* What a child sees of an engine it inherited; each failed check is its
 * own exit code. */
static int check_child_engine(ucs_mrlease_engine_t *engine, void *inherited,
                              size_t len)
{
    ucs_mrlease_counters_t c;

    if (ucs_mrlease_progress(engine) != 0) {
        return 10;
    }
    if (ucs_mrlease_engine_monitors(engine) != 0) {
        return 11;
    }
    ucs_mrlease_counters_get(engine, &c);
    if ((c.leases_acquired != 0) || (c.leases_broken != 0) || (c.dispatches != 0) ||
        (c.leases_active != 1)) {
        return 12; /* the parent's counters */
    }

    /* a new lease: nothing watches it, so nothing may cache it */
    void *mine = mmap(NULL, len, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ucs_mrlease_params_t params = {};
    params.cb = [](ucs_mrlease_t*, const ucs_mrlease_event_t*, void*) {
        return UCS_OK;
    };
    ucs_mrlease_t *lease;
    if (ucs_mrlease_acquire(engine, mine, len, &params, &lease) != UCS_OK) {
        return 13;
    }
    if (ucs_mrlease_cacheable(lease) ||
        !(ucs_mrlease_uncovered(lease) & UCS_MRLEASE_UNCOVERED_RANGE)) {
        return 14;
    }
    /* changes in the child (through UCM's hook too) must not hang */
    munmap(mine, len);
    munmap(inherited, len);
    ucs_mrlease_progress(engine);
    ucs_mrlease_release(lease);
    ucs_mrlease_counters_get(engine, &c);
    if (c.leases_acquired != 1) {
        return 15;
    }
    ucs_mrlease_engine_destroy(engine);
    return 0;
}

TEST_F(test_fork, child_gets_a_quiet_engine_parent_keeps_working)
{
    ASSERT_EQ(UCS_OK, create(all_monitors));
    size_t len = 16 * m_page;
    void *p    = map_anon(len);
    ucs_mrlease_t *l = lease(p, len);
    ASSERT_EQ(0u, ucs_mrlease_uncovered(l));
    ucs_mrlease_engine_t *engine = m_engine;

    EXPECT_EQ(0, in_child([&]() {
        /* the child releases nothing it inherited but one lease, as a
         * library tearing down would */
        (void)l;
        return check_child_engine(engine, p, len);
    }));

    /* the parent: the fork itself may be an event; then a change is seen */
    progress_for(0.05);
    m_events.clear();
    ASSERT_EQ(0, munmap(p, len));
    ASSERT_GE(progress_until(1), 1u);
    EXPECT_TRUE(events_of(l).back().ev.kinds & UCS_MRLEASE_EV_UNMAP);
}

/* The engine's reader holds the queue's spinlock while it reads
 * userfaultfd events, and UCM's hook takes it in the changer: a child
 * forked in the middle must not inherit it locked. */
TEST_F(test_fork, fork_during_changes_never_hangs_the_child)
{
    ASSERT_EQ(UCS_OK, create(all_monitors));
    const size_t len = 4 * m_page;
    const int forks  = 200;
    char *churn = (char*)map_anon(len);
    char *mine  = (char*)map_anon(len);
    lease(churn, len);
    lease(mine, len);

    std::atomic<bool> stop(false);
    std::thread changer([&]() {
        while (!stop) {
            mmap(churn, len, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
            churn[0] = 1;
        }
    });
    int hung = 0, failed = 0;
    for (int i = 0; i < forks; ++i) {
        int ret = in_child([&]() {
            munmap(mine, len);
            mmap(mine, len, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
            ucs_mrlease_progress(m_engine);
            return 0;
        }, 5);
        hung   += (ret == -1);
        failed += (ret != 0) && (ret != -1);
        ucs_mrlease_progress(m_engine);
    }
    stop = true;
    changer.join();
    EXPECT_EQ(0, hung) << "children hung out of " << forks;
    EXPECT_EQ(0, failed);
}

/* The same, deterministic: another thread holds the queue lock (as the
 * reader does while it reads userfaultfd events) at the moment of fork. */
TEST_F(test_fork, fork_while_the_queue_is_locked)
{
    /* No userfaultfd fork event (the fork would wait for the reader to read
     * it, and the reader for the lock this test holds), and no UCM, whose
     * own atfork handler queues a fork event. */
    ASSERT_EQ(UCS_OK, create("uffd,flease,inject", {{"UCX_MRLEASE_UFFD_FORK", "n"}}));
    const size_t len = 4 * m_page;
    char *mine       = (char*)map_anon(len);
    lease(mine, len);

    std::atomic<int> state(0);
    std::thread holder([&]() {
        ucs_mrlease_queue_lock(&m_engine->queue);
        state = 1;
        while (state != 2) {
            usleep(100);
        }
        ucs_mrlease_queue_unlock(&m_engine->queue);
    });
    while (state != 1) {
        usleep(100);
    }
    int ret = in_child([&]() {
        /* queue under the lock, as every monitor does */
        ucs_mrlease_qentry_t e = {};
        e.start = (uintptr_t)mine;
        e.end   = (uintptr_t)mine + len;
        e.kinds = UCS_MRLEASE_EV_INJECT;
        e.key   = -1;
        ucs_mrlease_queue_push(&m_engine->queue, &e, &m_engine->hot.pending);
        ucs_mrlease_progress(m_engine);
        return 0;
    }, 5);
    state = 2;
    holder.join();
    EXPECT_EQ(0, ret) << "the child inherited the queue lock held";
}

/* A child that tears its copy of the engine down must not take the
 * parent's file lease with it (both share the leased file description). */
TEST_F(test_fork, parent_file_lease_survives_the_child)
{
    ASSERT_EQ(UCS_OK, create(all_monitors));
    char path[] = "/dev/shm/mrlease-fork-XXXXXX";
    int fd      = mkstemp(path);
    ASSERT_GE(fd, 0);
    size_t len = 16 * m_page;
    ASSERT_EQ(0, ftruncate(fd, len));
    char *p = (char*)mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    ASSERT_NE(MAP_FAILED, (void*)p);
    ucs_mrlease_t *l = lease(p, len);
    ASSERT_EQ(0u, ucs_mrlease_uncovered(l));
    ucs_mrlease_engine_t *engine = m_engine;

    EXPECT_EQ(0, in_child([&]() {
        ucs_mrlease_release(l);
        ucs_mrlease_engine_destroy(engine);
        return 0;
    }));
    progress_for(0.05);
    m_events.clear();
    EXPECT_EQ(0u, ucs_mrlease_uncovered(l));

    int out;
    pid_t pid = spawn({builddir_path("test/helpers/file_changer"), "truncate", path,
                       "0"}, &out);
    ASSERT_GE(progress_until(1), 1u);
    EXPECT_TRUE(events_of(l).back().ev.kinds & UCS_MRLEASE_EV_FILE_BREAK)
        << "the child dropped the parent's file lease";
    run_result r = wait_for(pid, out, 10);
    EXPECT_EQ(0, r.status) << r.output;
    release(l);
    munmap(p, len);
    unlink(path);
}

/* The child of a process with an engine can exec, as launchers do. */
TEST_F(test_fork, child_execs)
{
    ASSERT_EQ(UCS_OK, create(all_monitors));
    size_t len = 16 * m_page;
    void *p    = map_anon(len);
    lease(p, len);
    EXPECT_EQ(0, in_child([]() {
        execl("/bin/true", "true", (char*)NULL);
        return 99;
    }));
    munmap(p, len);
}
