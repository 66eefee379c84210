#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "car/export.hpp"
#include "car/host/approval_core.hpp"
#include "car/host/approval_gate.hpp"
#include "car/host/host_state.hpp"
#include "car/host/tool_broker.hpp"

// One call wires the host side of the protocol into a Server: HostState and the host.* methods
// (PROTOCOL.md §4), approvals and the high-risk gate (§5), the tool broker (§6) and their teardown
// steps (§3).
namespace car {
class Server;
}

namespace car::host {

// How the embedder relates to its manifest, reported in host.subscribe's identity
// (PROTOCOL.md §4.2): it owns the manifest, only observes one, or has none.
enum class ManifestRole : std::uint8_t { none, owner, observer };
CAR_API std::string_view to_string(ManifestRole role);

struct CAR_API HostConfig {
  // The high-risk gate (car-daemon: --no-approvals, --approval-method NAME (repeatable, replaces
  // the defaults), --approval-timeout SECONDS).
  GateConfig gate;
  // Deadline of a tools.invoke without timeout_ms (car-daemon: --tool-timeout SECONDS).
  std::chrono::milliseconds tool_timeout{300000};
  // How much longer than a call's advertised deadline the broker waits before answering -32004,
  // so a tool host that stops itself at timeout_ms is heard first (car-daemon: --tool-grace-ms).
  std::chrono::milliseconds tool_grace{5000};
  // A host.event frame not written to a subscriber within this fails its sink (connection
  // closed); zero means the sink's default write deadline.
  std::chrono::milliseconds event_write_deadline{10000};
  // host.event frames held for one subscriber until its subscribe reply is out; beyond it the
  // subscriber's connection is closed (PROTOCOL.md §4.1). Afterwards events go straight to the
  // connection's sink, whose own bound applies.
  std::size_t subscriber_queue = 4096;
  // Ring size, clock, ... . `is_live` is filled in from the Server when left empty.
  HostStateOptions state;
  // host.subscribe's identity.manifest_path and identity.manifest_role: the embedder's manifest
  // file, if it has one, and its role towards it. Reported as given (nothing is read or checked);
  // car-daemon leaves the defaults (null, "none").
  std::optional<std::string> manifest_path;
  ManifestRole manifest_role = ManifestRole::none;
};

// Owns the host-side services of one Server. Created by install_host_services; the Server's
// method table and teardown hooks keep it alive, so it lives as long as the Server.
class CAR_API HostService {
 public:
  HostService(Server& server, HostConfig config);

  HostState& state() { return *state_; }
  const std::shared_ptr<HostState>& state_ptr() const { return state_; }
  ApprovalCore& approvals() { return approvals_; }
  // Null when the gate is disabled.
  const std::shared_ptr<ApprovalGate>& gate() const { return gate_; }
  ToolBroker& tools() { return *tools_; }
  const HostConfig& config() const { return config_; }
  Server& server() const { return server_; }

 private:
  Server& server_;
  const HostConfig config_;
  std::shared_ptr<HostState> state_;
  ApprovalCore approvals_;
  std::shared_ptr<ApprovalGate> gate_;
  std::shared_ptr<ToolBroker> tools_;
};

// Teardown steps of the host services (see car::teardown_order in car/server.hpp).
namespace teardown_order {
inline constexpr int host_events = 10;         // unsubscribe from host events
inline constexpr int owned_approvals = 15;     // deny its pending session-owned approvals
inline constexpr int gate_waits = 35;          // end requests waiting at the approval gate
inline constexpr int tool_invocations = 40;    // tools.cancel the calls it invoked
inline constexpr int tool_registrations = 50;  // unregister its tools
}  // namespace teardown_order

// Registers host.subscribe, host.unsubscribe, host.agents, host.devices, host.events,
// host.approvals, host.register_agent, host.unregister_agent, host.set_status,
// host.register_device, host.update_device, host.notify, host.request_approval,
// host.resolve_approval, tools.register, tools.list, tools.unregister and tools.invoke; installs
// the gate (when enabled) and the teardown steps. Call once, before the server serves.
CAR_API std::shared_ptr<HostService> install_host_services(Server& server, HostConfig config = {});

}  // namespace car::host
