// QP state transitions of ibv_modify_qp for RC QPs, with the attribute-mask rules of the IB spec
// (the table the kernel applies, ib_modify_qp_is_ok): per transition, the attributes that must be
// given and those that may be; anything else, or an illegal transition, is EINVAL and changes
// nothing. SQD and SQE are not supported (EOPNOTSUPP). What: a pure check plus the provider calls.
// Threading: the caller's (under the shim's lock).
#ifndef BRAID_DATAPLANE_SOFT_VERBS_QP_TRANSITION_H_
#define BRAID_DATAPLANE_SOFT_VERBS_QP_TRANSITION_H_

#include <infiniband/verbs.h>

#include "dataplane/verbs/provider.h"

namespace braid::soft {

// 0, or the errno for a mask that the transition from `from` to the requested state forbids.
int CheckQpAttrMask(ibv_qp_state from, const ibv_qp_attr& attr, int attr_mask);

// Applies the transition to `qp`; `current` holds the attributes set so far (updated on success).
// 0 or an errno (EINVAL for a bad mask or value, EOPNOTSUPP, or what the provider refused).
int ModifyQp(verbs::Qp& qp, ibv_qp_attr& current, const ibv_qp_attr& attr, int attr_mask);

}  // namespace braid::soft

#endif  // BRAID_DATAPLANE_SOFT_VERBS_QP_TRANSITION_H_
