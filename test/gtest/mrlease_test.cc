#include "mrlease_test.h"

#include <algorithm>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

namespace mrl {

double now_s()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

bool is_root()
{
    return geteuid() == 0;
}

std::string builddir_path(const std::string &rel)
{
    return std::string(MRL_TOP_BUILDDIR) + "/" + rel;
}

env_guard::env_guard(const std::map<std::string, std::string> &vars)
{
    for (auto &kv : vars) {
        const char *old = getenv(kv.first.c_str());
        m_saved[kv.first] = std::make_pair(old != NULL, old ? old : "");
        setenv(kv.first.c_str(), kv.second.c_str(), 1);
    }
}

env_guard::~env_guard()
{
    for (auto &kv : m_saved) {
        if (kv.second.first) {
            setenv(kv.first.c_str(), kv.second.second.c_str(), 1);
        } else {
            unsetenv(kv.first.c_str());
        }
    }
}

pid_t spawn(const std::vector<std::string> &argv, int *out_fd)
{
    posix_spawn_file_actions_t fa;
    std::vector<char*> args;
    int fds[2];
    pid_t pid;

    if (pipe2(fds, O_CLOEXEC) < 0) {
        return -1;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
    for (auto &a : argv) {
        args.push_back(const_cast<char*>(a.c_str()));
    }
    args.push_back(NULL);
    if (posix_spawn(&pid, args[0], &fa, NULL, args.data(), environ) != 0) {
        pid = -1;
    }
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    *out_fd = fds[0];
    return pid;
}

run_result wait_for(pid_t pid, int out_fd, double timeout_s)
{
    run_result res = {-1, ""};
    double deadline = now_s() + timeout_s;
    char buf[4096];
    int status;

    for (;;) {
        struct pollfd pfd = {out_fd, POLLIN, 0};
        int ret = poll(&pfd, 1, 100);
        if (ret > 0) {
            ssize_t n = read(out_fd, buf, sizeof(buf));
            if (n > 0) {
                res.output.append(buf, n);
                continue;
            }
            break; /* EOF */
        }
        if (now_s() > deadline) {
            kill(pid, SIGKILL);
            res.output += "\n[killed after timeout]";
            break;
        }
    }
    close(out_fd);
    waitpid(pid, &status, 0);
    res.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return res;
}

run_result run(const std::vector<std::string> &argv,
               const std::map<std::string, std::string> &env, double timeout_s)
{
    env_guard guard(env);
    int fd;
    pid_t pid = spawn(argv, &fd);

    if (pid < 0) {
        return run_result{-1, "spawn failed: " + argv[0]};
    }
    return wait_for(pid, fd, timeout_s);
}

test_mrlease::test_mrlease() :
    m_answer(UCS_OK), m_engine(NULL), m_page(sysconf(_SC_PAGESIZE)), m_env(NULL)
{
}

void test_mrlease::TearDown()
{
    for (auto l : m_leases) {
        ucs_mrlease_release(l);
    }
    m_leases.clear();
    if (m_engine != NULL) {
        ucs_mrlease_engine_destroy(m_engine);
        m_engine = NULL;
    }
    delete m_env;
    m_env = NULL;
}

ucs_status_t test_mrlease::create(const std::string &monitors,
                                  const std::map<std::string, std::string> &vars)
{
    std::map<std::string, std::string> all = vars;

    all["UCX_MRLEASE_MONITORS"] = monitors;
    delete m_env;
    m_env = new env_guard(all);
    return ucs_mrlease_engine_create(&m_engine);
}

ucs_status_t test_mrlease::record_cb(ucs_mrlease_t *lease,
                                     const ucs_mrlease_event_t *ev, void *arg)
{
    test_mrlease *self = static_cast<test_mrlease*>(arg);

    self->m_events.push_back(seen_event{lease, *ev, ucs_mrlease_generation(lease)});
    return self->m_answer;
}

ucs_mrlease_t *test_mrlease::lease(void *addr, size_t len, int fd, unsigned events)
{
    ucs_mrlease_params_t params;
    ucs_mrlease_t *l = NULL;

    params.field_mask = UCS_MRLEASE_PARAM_FIELD_EVENTS |
                        ((fd >= 0) ? UCS_MRLEASE_PARAM_FIELD_FD : 0);
    params.cb         = record_cb;
    params.arg        = this;
    params.fd         = fd;
    params.events     = events;
    EXPECT_EQ(UCS_OK, ucs_mrlease_acquire(m_engine, addr, len, &params, &l));
    if (l != NULL) {
        m_leases.push_back(l);
    }
    return l;
}

void test_mrlease::release(ucs_mrlease_t *l)
{
    m_leases.erase(std::remove(m_leases.begin(), m_leases.end(), l), m_leases.end());
    ucs_mrlease_release(l);
}

size_t test_mrlease::progress_until(size_t n, double timeout_s)
{
    double deadline = now_s() + timeout_s;

    while ((m_events.size() < n) && (now_s() < deadline)) {
        if (ucs_mrlease_progress(m_engine) == 0) {
            usleep(100);
        }
    }
    return m_events.size();
}

void test_mrlease::progress_for(double seconds)
{
    double deadline = now_s() + seconds;

    while (now_s() < deadline) {
        ucs_mrlease_progress(m_engine);
        usleep(500);
    }
}

std::vector<seen_event> test_mrlease::events_of(const ucs_mrlease_t *l) const
{
    std::vector<seen_event> out;

    for (auto &e : m_events) {
        if (e.lease == l) {
            out.push_back(e);
        }
    }
    return out;
}

ucs_mrlease_counters_t test_mrlease::counters()
{
    ucs_mrlease_counters_t c;

    ucs_mrlease_counters_get(m_engine, &c);
    return c;
}

void *test_mrlease::map_anon(size_t len, int flags)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, flags | MAP_ANONYMOUS, -1, 0);

    EXPECT_NE(MAP_FAILED, p);
    if (p != MAP_FAILED) {
        memset(p, 0x11, len); /* populated, like registered memory */
    }
    return p;
}

} // namespace mrl
