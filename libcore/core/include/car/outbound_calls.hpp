#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "car/error.hpp"
#include "car/executor.hpp"
#include "car/export.hpp"

// The pending table of server→client requests of one connection (PROTOCOL.md §6): ids "cb-1", "cb-2", …,
// a deadline per call, cancellation, and failing everything when the connection closes. Every
// registered callback runs exactly once. Thread-safe.
namespace car {

struct CAR_API CallOutcome {
  std::optional<Error> error;  // set on an error reply, timeout, cancellation or close
  std::string result_json;     // the reply's `result` as JSON text when no error
};
using CallCallback = std::function<void(CallOutcome)>;

// Always owned by a shared_ptr: timers hold a weak reference, so a late timer after the owner is
// gone does nothing.
class CAR_API OutboundCalls : public std::enable_shared_from_this<OutboundCalls> {
 public:
  explicit OutboundCalls(Executor& executor) : executor_(executor) {}
  ~OutboundCalls();

  // Reserves the next id and registers `callback` with a deadline. The caller then sends the
  // request; if the send fails it must call forget(id) (the callback then never runs).
  std::string begin(std::chrono::milliseconds timeout, CallCallback callback);
  // Drops a call without running its callback (its request could not be sent).
  void forget(std::string_view id);
  // Completes a call with a reply from the peer. Returns false for an unknown id (ignored).
  bool complete(std::string_view id, CallOutcome outcome);
  // Completes a call locally with `why` (e.g. cancelled by the caller). False if not pending.
  bool cancel(std::string_view id, Error why);
  // Fails every pending call with `why` and refuses new ones (the connection closed).
  void fail_all(const Error& why);
  std::size_t pending() const;

 private:
  struct Pending {
    CallCallback callback;
    Executor::TimerId timer = 0;
  };
  std::optional<Pending> take(std::string_view id);

  Executor& executor_;
  mutable std::mutex mutex_;
  std::uint64_t next_id_ = 1;
  bool closed_ = false;
  std::map<std::string, Pending, std::less<>> pending_;
};

}  // namespace car
