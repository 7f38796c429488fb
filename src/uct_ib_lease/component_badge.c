/*
 * With mrlease on, UCX's IB component shows up as "ib_lease".
 *
 * UCX 1.13 loads only the UCT modules it was built with, and a component of
 * our own would need structures Debian does not install. The registrations
 * of UCX's IB component are leased instead (ib_lease.c, rkey_keeper.c), and
 * its name says so: `ucx_info -d` and UCP's own logs list "ib_lease" memory
 * domains with the usual rc/ud transports, which UCP selects as always. Every
 * rank of a job must agree (contrib/mpirun-mrlease sets the flag for all).
 */
#define _GNU_SOURCE
#include "ib_lease.h"

#include <uct/api/uct.h>

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define IB_LEASE_COMPONENT_NAME "ib_lease"

typedef void (*component_register_func_t)(uct_component_h);

/*
 * libuct_ib registers its component from its constructor, when UCX loads
 * it. Renaming it there, before UCX has seen it, keeps every name UCX derives
 * from it (its vfs entries, logs) consistent.
 */
void uct_component_register(uct_component_h component)
{
    const void *caller = __builtin_return_address(0);
    static component_register_func_t real;
    uct_component_attr_t attr;

    if (real == NULL) {
        real = (component_register_func_t)dlsym(RTLD_NEXT, "uct_component_register");
        if (real == NULL) {
            ucs_error("mrlease: libuct_ib_lease: uct_component_register not found: %s",
                      dlerror());
            abort();
        }
    }
    attr.field_mask = UCT_COMPONENT_ATTR_FIELD_NAME;
    if (ib_lease_caller_is_uct_ib(caller) &&
        (uct_component_query(component, &attr) == UCS_OK) && !strcmp(attr.name, "ib") &&
        ib_lease_is_on()) {
        /* The name is the component's first member in UCX 1.13; write it
         * only where the public query says it is. */
        if (memcmp(component, "ib", 3) == 0) {
            strcpy((char*)component, IB_LEASE_COMPONENT_NAME);
            ucs_debug("mrlease: UCX's IB component is registered as '%s'",
                      IB_LEASE_COMPONENT_NAME);
        } else {
            ucs_warn("mrlease: UCX's IB component is not laid out as in UCX 1.13: "
                     "it keeps its name 'ib' (its registrations are leased anyway)");
        }
    }
    real(component);
}
