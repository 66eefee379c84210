#include "car/host/approval_core.hpp"

namespace car::host {

bool ApprovalCore::is_eligible_pending(const HostApproval& approval) {
  return approval.pending() && approval.action.rfind("ws.method:", 0) != 0 &&
         !approval.client_id.has_value();
}

std::vector<HostApproval> ApprovalCore::eligible_pending() const {
  std::vector<HostApproval> out;
  for (auto& a : state_.approvals()) {
    if (is_eligible_pending(a)) out.push_back(std::move(a));
  }
  return out;
}

ApprovalCore::Outcome ApprovalCore::resolve(std::string_view approval_id, Decision decision,
                                            std::string_view principal,
                                            std::optional<std::string> notes) {
  auto result = state_.resolve_approval(approval_id, decision, principal, std::move(notes));
  if (!result) return result.error();
  if (result->kind == ResolveOutcome::Kind::proposed) {
    return StillPending{std::move(result->approval)};
  }
  return Resolved{std::move(result->approval)};
}

}  // namespace car::host
