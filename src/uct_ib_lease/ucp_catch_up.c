/*
 * The MPI layer's own calls into UCP catch up with decoherence first.
 *
 * UCX's IB transports post, poll and progress without a single call that a
 * preloaded library can see. The MPI library, though, calls UCP through the
 * PLT for progress and for everything that lets data or a synchronization
 * leave the process. Interposing those gives a causal guarantee: once a
 * change to memory returns, the next message this process sends (a fence, a
 * barrier, a put) leaves only after the change has been handled, so a peer
 * that acts on that message sees the restored registration.
 *
 * The check is the engine's pending word: one load and a branch.
 */
#define _GNU_SOURCE
#include "ib_lease.h"

#include <ucp/api/ucp.h>

#include <dlfcn.h>
#include <stdlib.h>

static void *ib_lease_ucp_next(const char *name)
{
    void *f = dlsym(RTLD_NEXT, name);

    if (f == NULL) {
        ucs_error("mrlease: libuct_ib_lease: %s not found in libucp: %s", name,
                  dlerror());
        abort();
    }
    return f;
}

/* Fast path: two loads, two tests and a tail jump, no stack frame; anything
 * else (something pending, the first call) goes through _slow. */
#define IB_LEASE_CATCH_UP(_ret, _name, _params, _args) \
    static _ret (*_name##_real) _params; \
    static UCS_F_NOINLINE _ret _name##_slow _params \
    { \
        _ret (*f) _params; \
        \
        ib_lease_catch_up(); \
        f = __atomic_load_n(&_name##_real, __ATOMIC_RELAXED); \
        if (f == NULL) { \
            f = (_ret (*) _params)ib_lease_ucp_next(#_name); \
            __atomic_store_n(&_name##_real, f, __ATOMIC_RELAXED); \
        } \
        return f _args; \
    } \
    _ret _name _params \
    { \
        _ret (*f) _params = __atomic_load_n(&_name##_real, __ATOMIC_RELAXED); \
        \
        if (ucs_likely((f != NULL) && !ib_lease_pending())) { \
            return f _args; \
        } \
        return _name##_slow _args; \
    }

IB_LEASE_CATCH_UP(unsigned, ucp_worker_progress, (ucp_worker_h worker), (worker))

IB_LEASE_CATCH_UP(ucs_status_ptr_t, ucp_tag_send_nb,
                  (ucp_ep_h ep, const void *buffer, size_t count,
                   ucp_datatype_t datatype, ucp_tag_t tag, ucp_send_callback_t cb),
                  (ep, buffer, count, datatype, tag, cb))
IB_LEASE_CATCH_UP(ucs_status_t, ucp_tag_send_nbr,
                  (ucp_ep_h ep, const void *buffer, size_t count,
                   ucp_datatype_t datatype, ucp_tag_t tag, void *req),
                  (ep, buffer, count, datatype, tag, req))
IB_LEASE_CATCH_UP(ucs_status_ptr_t, ucp_tag_send_sync_nb,
                  (ucp_ep_h ep, const void *buffer, size_t count,
                   ucp_datatype_t datatype, ucp_tag_t tag, ucp_send_callback_t cb),
                  (ep, buffer, count, datatype, tag, cb))
IB_LEASE_CATCH_UP(ucs_status_ptr_t, ucp_tag_send_nbx,
                  (ucp_ep_h ep, const void *buffer, size_t count, ucp_tag_t tag,
                   const ucp_request_param_t *param),
                  (ep, buffer, count, tag, param))
IB_LEASE_CATCH_UP(ucs_status_ptr_t, ucp_tag_send_sync_nbx,
                  (ucp_ep_h ep, const void *buffer, size_t count, ucp_tag_t tag,
                   const ucp_request_param_t *param),
                  (ep, buffer, count, tag, param))
IB_LEASE_CATCH_UP(ucs_status_ptr_t, ucp_am_send_nbx,
                  (ucp_ep_h ep, unsigned id, const void *header,
                   size_t header_length, const void *buffer, size_t count,
                   const ucp_request_param_t *param),
                  (ep, id, header, header_length, buffer, count, param))
IB_LEASE_CATCH_UP(ucs_status_ptr_t, ucp_stream_send_nbx,
                  (ucp_ep_h ep, const void *buffer, size_t count,
                   const ucp_request_param_t *param),
                  (ep, buffer, count, param))

IB_LEASE_CATCH_UP(ucs_status_t, ucp_put_nbi,
                  (ucp_ep_h ep, const void *buffer, size_t length,
                   uint64_t remote_addr, ucp_rkey_h rkey),
                  (ep, buffer, length, remote_addr, rkey))
IB_LEASE_CATCH_UP(ucs_status_ptr_t, ucp_put_nbx,
                  (ucp_ep_h ep, const void *buffer, size_t count,
                   uint64_t remote_addr, ucp_rkey_h rkey,
                   const ucp_request_param_t *param),
                  (ep, buffer, count, remote_addr, rkey, param))
IB_LEASE_CATCH_UP(ucs_status_t, ucp_get_nbi,
                  (ucp_ep_h ep, void *buffer, size_t length, uint64_t remote_addr,
                   ucp_rkey_h rkey),
                  (ep, buffer, length, remote_addr, rkey))
IB_LEASE_CATCH_UP(ucs_status_ptr_t, ucp_get_nbx,
                  (ucp_ep_h ep, void *buffer, size_t count, uint64_t remote_addr,
                   ucp_rkey_h rkey, const ucp_request_param_t *param),
                  (ep, buffer, count, remote_addr, rkey, param))
IB_LEASE_CATCH_UP(ucs_status_t, ucp_atomic_post,
                  (ucp_ep_h ep, ucp_atomic_post_op_t opcode, uint64_t value,
                   size_t op_size, uint64_t remote_addr, ucp_rkey_h rkey),
                  (ep, opcode, value, op_size, remote_addr, rkey))
IB_LEASE_CATCH_UP(ucs_status_ptr_t, ucp_atomic_fetch_nb,
                  (ucp_ep_h ep, ucp_atomic_fetch_op_t opcode, uint64_t value,
                   void *result, size_t op_size, uint64_t remote_addr,
                   ucp_rkey_h rkey, ucp_send_callback_t cb),
                  (ep, opcode, value, result, op_size, remote_addr, rkey, cb))
IB_LEASE_CATCH_UP(ucs_status_ptr_t, ucp_atomic_op_nbx,
                  (ucp_ep_h ep, ucp_atomic_op_t opcode, const void *buffer,
                   size_t count, uint64_t remote_addr, ucp_rkey_h rkey,
                   const ucp_request_param_t *param),
                  (ep, opcode, buffer, count, remote_addr, rkey, param))

IB_LEASE_CATCH_UP(ucs_status_ptr_t, ucp_worker_flush_nb,
                  (ucp_worker_h worker, unsigned flags, ucp_send_callback_t cb),
                  (worker, flags, cb))
IB_LEASE_CATCH_UP(ucs_status_ptr_t, ucp_worker_flush_nbx,
                  (ucp_worker_h worker, const ucp_request_param_t *param),
                  (worker, param))
IB_LEASE_CATCH_UP(ucs_status_ptr_t, ucp_ep_flush_nb,
                  (ucp_ep_h ep, unsigned flags, ucp_send_callback_t cb),
                  (ep, flags, cb))
IB_LEASE_CATCH_UP(ucs_status_ptr_t, ucp_ep_flush_nbx,
                  (ucp_ep_h ep, const ucp_request_param_t *param), (ep, param))
IB_LEASE_CATCH_UP(ucs_status_t, ucp_worker_fence, (ucp_worker_h worker), (worker))
