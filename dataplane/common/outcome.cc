#include "dataplane/common/outcome.h"

#include <iterator>

namespace braid::common {

const char* OutcomeName(int outcome) {
  static constexpr const char* kNames[] = {"success",
                                           "loc_len_err",
                                           "loc_qp_op_err",
                                           "loc_eec_op_err",
                                           "loc_prot_err",
                                           "wr_flush_err",
                                           "mw_bind_err",
                                           "bad_resp_err",
                                           "loc_access_err",
                                           "rem_inv_req_err",
                                           "rem_access_err",
                                           "rem_op_err",
                                           "retry_exc_err",
                                           "rnr_retry_exc_err",
                                           "loc_rdd_viol_err",
                                           "rem_inv_rd_req_err",
                                           "rem_abort_err",
                                           "inv_eecn_err",
                                           "inv_eec_state_err",
                                           "fatal_err",
                                           "resp_timeout_err",
                                           "general_err",
                                           "tm_err",
                                           "tm_rndv_incomplete",
                                           "deadline_exceeded",
                                           "cancelled"};
  static_assert(std::size(kNames) == kNumOutcomes);
  return outcome >= 0 && outcome < kNumOutcomes ? kNames[outcome] : "unknown";
}

}  // namespace braid::common
