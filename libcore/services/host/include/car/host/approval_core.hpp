#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "car/error.hpp"
#include "car/export.hpp"
#include "car/host/host_state.hpp"

// ApprovalCore (PROTOCOL.md §5.3): the approval surface for channels other than the WebSocket host
// methods — a chat bot, a CLI, a notification action. It sees the approvals such a channel may
// answer and resolves them under a principal name (e.g. "cli:alice"), which becomes resolved_by.
//
// Threading: thread-safe (forwards to HostState). The HostState must outlive it.
namespace car::host {

class CAR_API ApprovalCore {
 public:
  struct Resolved {
    HostApproval approval;  // resolved by this call or an earlier one
  };
  struct StillPending {
    HostApproval approval;  // accepted as a proposal to the owning session; still pending
  };
  using Outcome = std::variant<Resolved, StillPending, Error>;

  explicit ApprovalCore(HostState& state) : state_(state) {}

  // Pending, not raised by the high-risk gate (action "ws.method:..."), and system-level (no
  // owning session): the rows an outside channel may decide.
  static bool is_eligible_pending(const HostApproval& approval);
  // The host's approvals filtered by is_eligible_pending, in creation order.
  std::vector<HostApproval> eligible_pending() const;
  // Error keeps HostState's message ("unknown approval '<id>'", "owner is no longer connected").
  Outcome resolve(std::string_view approval_id, Decision decision, std::string_view principal,
                  std::optional<std::string> notes = std::nullopt);

 private:
  HostState& state_;
};

}  // namespace car::host
