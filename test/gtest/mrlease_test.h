/*
 * Common fixture: an engine made from UCX_MRLEASE_* set for the test, leases
 * whose callbacks record what they were told, and helpers to run other
 * processes (posix_spawn: never fork, which would itself be an event).
 */
#ifndef MRLEASE_TEST_H_
#define MRLEASE_TEST_H_

#include <ucs_mrlease/mrlease.h>
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <map>
#include <string>
#include <vector>

#ifndef MRL_TOP_BUILDDIR
#error "MRL_TOP_BUILDDIR must be defined"
#endif

namespace mrl {

struct seen_event {
    ucs_mrlease_t       *lease;
    ucs_mrlease_event_t ev;
    uint64_t            generation;
};

struct run_result {
    int         status;  /* exit code, or 128+signal */
    std::string output;  /* stdout and stderr */
};

/* Run argv (argv[0] is a path), with extra environment, capturing output. */
run_result run(const std::vector<std::string> &argv,
               const std::map<std::string, std::string> &env = {},
               double timeout_s = 60);
/* Start argv without waiting; returns the pid, stdout goes to *out_fd. */
pid_t spawn(const std::vector<std::string> &argv, int *out_fd);
run_result wait_for(pid_t pid, int out_fd, double timeout_s = 60);

std::string builddir_path(const std::string &rel);
double now_s();
bool is_root();

class env_guard {
public:
    explicit env_guard(const std::map<std::string, std::string> &vars);
    env_guard(const env_guard &) = delete;
    ~env_guard();
private:
    std::map<std::string, std::pair<bool, std::string> > m_saved;
};

class test_mrlease : public ::testing::Test {
protected:
    test_mrlease();
    void TearDown() override;

    /* Create the engine with UCX_MRLEASE_MONITORS=monitors and extra vars. */
    ucs_status_t create(const std::string &monitors,
                        const std::map<std::string, std::string> &vars = {});
    ucs_mrlease_t *lease(void *addr, size_t len, int fd = -1,
                         unsigned events = UCS_MRLEASE_EV_ALL);
    void release(ucs_mrlease_t *l);

    /* Progress until at least n events are recorded or timeout. */
    size_t progress_until(size_t n, double timeout_s = 5.0);
    /* Progress for a while, to prove nothing (more) arrives. */
    void progress_for(double seconds);
    std::vector<seen_event> events_of(const ucs_mrlease_t *l) const;
    ucs_mrlease_counters_t counters();

    static void *map_anon(size_t len, int flags = MAP_PRIVATE);

    /* What the callback answers: UCS_OK, UCS_INPROGRESS or an error. */
    ucs_status_t                 m_answer;
    ucs_mrlease_engine_t         *m_engine;
    std::vector<seen_event>      m_events;
    std::vector<ucs_mrlease_t*>  m_leases;
    size_t                       m_page;

private:
    static ucs_status_t record_cb(ucs_mrlease_t *lease,
                                  const ucs_mrlease_event_t *ev, void *arg);
    env_guard                    *m_env;
};

} // namespace mrl

#endif
