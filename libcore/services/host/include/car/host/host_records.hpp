#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "car/export.hpp"
#include "car/frame.hpp"
#include "car/json.hpp"

// The records host shells see (PROTOCOL.md §4.1): agents, devices, approvals and host events, and
// their JSON. Plain values: HostState hands out copies, so they stay valid after its lock is gone.
namespace car::host {

enum class AgentStatus : std::uint8_t {
  idle,
  running,
  waiting_for_approval,
  paused,
  completed,
  errored,
  stopped,
};
CAR_API std::string_view to_string(AgentStatus status);
CAR_API std::optional<AgentStatus> parse_agent_status(std::string_view text);
// "idle, running, ..." for error messages.
CAR_API std::string_view agent_status_names();

struct CAR_API HostAgent {
  std::string id;
  std::string name;
  std::string kind;
  std::vector<std::string> capabilities;
  std::optional<std::string> project;
  AgentStatus status = AgentStatus::idle;
  std::optional<std::string> current_task;
  std::optional<long long> pid;
  std::optional<std::string> display_json;  // any JSON value, kept as compact text
  std::string metadata_json = "{}";         // a JSON object, compact text
  std::string session_id;                   // the owner's client_id
};

struct CAR_API HostDevice {
  std::string id;
  std::string name;
  std::string platform;
  std::vector<std::string> capabilities;
  std::optional<std::string> status;
  std::string metadata_json = "{}";
  std::string session_id;
  std::string updated_at;
};

enum class ApprovalStatus : std::uint8_t { pending, approved, denied };
enum class Decision : std::uint8_t { approve, deny };
CAR_API std::string_view to_string(ApprovalStatus status);
CAR_API std::string_view to_string(Decision decision);

struct CAR_API HostApproval {
  std::string id;  // "approval-<uuid>"
  std::optional<std::string> agent_id;
  std::string action;
  std::string details_json = "{}";
  ApprovalStatus status = ApprovalStatus::pending;
  std::string created_at;
  std::optional<std::string> client_id;  // set ⇔ session-owned; absent ⇔ system-level
  std::optional<Decision> resolution;
  std::optional<std::string> resolved_by;
  std::optional<std::string> resolved_at;
  std::optional<std::string> notes;

  bool pending() const { return status == ApprovalStatus::pending; }
};

// Compact JSON of each shape (PROTOCOL.md §4). Optional fields are omitted when absent, except
// those upstream always serializes: HostAgent current_task and pid and HostDevice status are
// written as null when unset (and so is HostEvent agent_id, in HostState's event frames).
CAR_API void write_json(json::Builder& out, const HostAgent& agent);
CAR_API void write_json(json::Builder& out, const HostDevice& device);
CAR_API void write_json(json::Builder& out, const HostApproval& approval);
template <typename T>
std::string to_json(const T& item) {
  json::Builder out;
  write_json(out, item);
  return out.take();
}

// One recorded event. `frame` is the complete `host.event` notification, serialized once and
// shared by the ring, every subscriber and every reader (it is immutable).
struct CAR_API HostEventRecord {
  std::uint64_t sequence = 0;
  Frame frame;
  // The HostEvent object inside the frame; valid while `frame` is.
  std::string_view event_json() const;
};

}  // namespace car::host
