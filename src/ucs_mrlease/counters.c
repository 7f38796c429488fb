#include "engine.h"

void ucs_mrlease_monitor_counters(ucs_mrlease_engine_t *engine,
                                  ucs_mrlease_counters_t *counters)
{
    ucs_mrlease_monitor_t *mon;
    unsigned id;

    for (id = 0; id < UCS_MRLEASE_MONITOR_LAST; ++id) {
        mon = engine->monitors[id];
        if ((mon != NULL) && (mon->ops->counters != NULL)) {
            mon->ops->counters(mon, counters);
        }
    }
}

void ucs_mrlease_counters_print(const ucs_mrlease_counters_t *c, FILE *stream)
{
    unsigned i;

    fprintf(stream, "# mrlease counters\n");
    for (i = 0; i < UCS_MRLEASE_EV_KINDS; ++i) {
        fprintf(stream, "events.%-18s %llu\n",
                ucs_mrlease_event_kind_name(UCS_BIT(i)),
                (unsigned long long)c->events[i]);
    }
    for (i = 0; i < UCS_MRLEASE_MONITOR_LAST; ++i) {
        fprintf(stream, "monitor.%-17s %llu\n", ucs_mrlease_monitor_name(i),
                (unsigned long long)c->monitor_events[i]);
    }
#define MRL_PRINT(_f) \
    fprintf(stream, "%-25s %llu\n", #_f, (unsigned long long)c->_f)
    MRL_PRINT(leases_active);
    MRL_PRINT(leases_acquired);
    MRL_PRINT(leases_broken);
    MRL_PRINT(leases_restored);
    MRL_PRINT(leases_dead);
    MRL_PRINT(restores_remapped);
    MRL_PRINT(leases_unmonitored);
    for (i = 0; i < UCS_MRLEASE_UNCOVERED_REASONS; ++i) {
        fprintf(stream, "uncovered.%-15s %llu\n",
                ucs_mrlease_uncovered_name(UCS_BIT(i)),
                (unsigned long long)c->uncovered[i]);
    }
    for (i = 0; i < UCS_MRLEASE_UNCOVERED_REASONS; ++i) {
        fprintf(stream, "uncached.%-16s %llu\n",
                ucs_mrlease_uncovered_name(UCS_BIT(i)),
                (unsigned long long)c->uncached[i]);
    }
    MRL_PRINT(queue_overflows);
    MRL_PRINT(dispatches);
    MRL_PRINT(held_count);
    MRL_PRINT(file_leases_forced);
    MRL_PRINT(file_leases_stalled);
    MRL_PRINT(file_leases_adopted);
    MRL_PRINT(kmod_ranges);
    MRL_PRINT(kmod_unwatched);
    MRL_PRINT(kmod_breaks);
    MRL_PRINT(kmod_ignored);
    MRL_PRINT(kmod_overflows);
    MRL_PRINT(kmod_pmd_clears);
    MRL_PRINT(kmod_holds);
    MRL_PRINT(kmod_hold_timeouts);
    MRL_PRINT(kmod_hold_unsafe);
    MRL_PRINT(kmod_hold_killed);
#undef MRL_PRINT
    fprintf(stream, "%-25s %.1f\n", "held_us_avg",
            c->held_count ? (double)c->held_ns_total / c->held_count / 1e3 : 0.0);
    fprintf(stream, "%-25s %.1f\n", "held_us_max", (double)c->held_ns_max / 1e3);
    fprintf(stream, "%-25s %.1f\n", "kmod_hold_us_avg", c->kmod_holds ?
            (double)c->kmod_hold_ns_total / c->kmod_holds / 1e3 : 0.0);
    fprintf(stream, "%-25s %.1f\n", "kmod_hold_us_max",
            (double)c->kmod_hold_ns_max / 1e3);
}
