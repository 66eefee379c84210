#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "car/executor.hpp"
#include "car/export.hpp"
#include "car/host/host_state.hpp"
#include "car/method_gate.hpp"

// The high-risk approval gate (PROTOCOL.md §5.1): before the handler of a gated method runs, a
// system-level approval "ws.method:<method>" is raised and the request waits — holding no thread
// — until some session resolves it (approved ⇒ the handler runs; denied ⇒ -32003 "approval
// denied") or the timeout passes (-32003 "approval timed out"; the row stays pending). When the
// connection ends first, its waits end at once (abandon_waits_of, a teardown step): the row stays
// pending as on a timeout, and the request's slot and timer are released instead of being held
// for up to the whole timeout.
// Install with Server::set_method_gate before serving.
namespace car::host {

// automation.run_applescript, automation.shortcuts.run, automation.run_powershell,
// messages.send, mail.send, vision.ocr.
CAR_API std::vector<std::string> default_gated_methods();

struct CAR_API GateConfig {
  bool enabled = true;                                   // car-daemon --no-approvals clears it
  std::vector<std::string> methods = default_gated_methods();  // --approval-method replaces it
  std::chrono::milliseconds timeout{60000};              // --approval-timeout (seconds)
};

// The params as a preview: `compact_json` itself when it is at most `limit` bytes, else its
// longest valid UTF-8 prefix of at most `limit - 3` bytes followed by "…" (3 bytes).
CAR_API std::string params_preview(std::string_view compact_json, std::size_t limit = 512);

// Threading: gates() and admit() may be called from any thread; the decision is delivered on
// the thread that resolves the approval or on the executor's loop thread (timeout).
// Lifetime: always owned by a shared_ptr (timers hold it weakly). `executor` must outlive it.
class CAR_API ApprovalGate final : public MethodGate, public std::enable_shared_from_this<ApprovalGate> {
 public:
  ApprovalGate(std::shared_ptr<HostState> state, Executor& executor, GateConfig config);

  bool gates(std::string_view method) const override;
  void admit(Connection& connection, std::string_view method, const json::Value& params,
             Decision decide) override;

  // Ends every wait of the connection `client_id` (teardown, teardown_order::gate_waits). Any
  // thread. Nothing is answered (the connection is gone) and no handler runs.
  void abandon_waits_of(const std::string& client_id);
  // Requests waiting at the gate now (tests, introspection).
  std::size_t waiting() const;

  const GateConfig& config() const { return config_; }

 private:
  struct Wait;
  enum class End : std::uint8_t { timed_out, abandoned };
  // Ends a wait that has not been decided yet (timer or teardown); a no-op otherwise.
  void end_wait(const std::shared_ptr<Wait>& wait, End why);
  void untrack(const Wait& wait);

  std::shared_ptr<HostState> state_;
  Executor& executor_;
  const GateConfig config_;
  std::vector<std::string> sorted_methods_;

  mutable std::mutex waits_mutex_;
  // Undecided waits by connection; an entry leaves when its wait is decided.
  std::unordered_multimap<std::string, std::shared_ptr<Wait>> waits_;
};

}  // namespace car::host
