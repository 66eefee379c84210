#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "car/error.hpp"
#include "car/export.hpp"

// The answer to one JSON-RPC request. A handler receives a Reply and completes it exactly once,
// now or later, from any thread. Copies share one state: the first completion wins, later ones are
// ignored. If every copy is destroyed without a completion the request is answered -32603, so no
// request is ever left unanswered. For notifications every completion is a no-op (never answered).
namespace car {

namespace detail {
struct ReplyState;
}

class CAR_API Reply {
 public:
  Reply() = default;
  explicit Reply(std::shared_ptr<detail::ReplyState> state) : state_(std::move(state)) {}

  // Answers with `result_json`, a complete JSON text (object, array, string, ...). `after_queued`
  // runs once the reply has been handed to the connection's sink (or was dropped because the
  // connection is gone): use it to start an event stream that must follow the reply.
  void ok(std::string_view result_json, std::function<void()> after_queued = {}) const;
  void error(Error error) const;
  void error(ErrorCode code, std::string message) const { error(Error{code, std::move(message)}); }

  bool done() const;
  bool is_notification() const;

 private:
  std::shared_ptr<detail::ReplyState> state_;
};

}  // namespace car
