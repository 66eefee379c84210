#pragma once

// Private to the run service: the in-memory run, store operations and JSON builders shared by
// run_service.cpp and run_methods.cpp.

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "car/executor.hpp"
#include "car/runs/run_service.hpp"

namespace car::runs {

struct RunService::StoreOp {
  enum class Kind : std::uint8_t { started, turns, ended };
  Kind kind = Kind::turns;
  std::vector<std::string> records;         // compact JSON, in order
  std::uint64_t base_index = 0;             // turns: index of the first record
  RunStatus final_status = RunStatus::incomplete;  // ended
  std::string ended_at;                     // ended
  StoreDone done;  // pool thread, without the lock, after the records were published (or not)
};

// One run in memory. Immutable identity; everything else is guarded by RunService::mutex_.
struct RunService::Run {
  std::string run_id;
  std::string agent_id;
  std::string client_id;  // the connection that started it
  std::string intent;
  std::string started_at;

  // Accepted state (stamping and lifecycle checks).
  std::uint64_t reserved_turns = 0;  // turns stamped: published plus queued for the store
  bool terminal = false;             // an ending was accepted (maybe not yet written)
  bool removed = false;              // its `started` could not be written: the run is gone
  Executor::TimerId grace_timer = 0;

  // Published state: what is durable and has been fanned out.
  bool start_published = false;
  std::uint64_t published_turns = 0;
  std::vector<std::shared_ptr<const std::string>> turns;  // dropped once the run has ended
  RunStatus status = RunStatus::in_progress;
  std::optional<std::string> ended_at;

  // The serial store actor: operations waiting, and whether a pool job owns them.
  std::deque<StoreOp> ops;
  bool store_busy = false;
};

namespace detail {

// {"jsonrpc":"2.0","method":"runs.trace.event","params":{run_id, agent_id, record, cursor, status}}
std::string trace_event_text(std::string_view run_id, std::string_view agent_id,
                             std::string_view record, std::uint64_t cursor, RunStatus status);

}  // namespace detail
}  // namespace car::runs
