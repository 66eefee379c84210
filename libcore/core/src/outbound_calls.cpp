#include "car/outbound_calls.hpp"

#include <vector>

namespace car {

OutboundCalls::~OutboundCalls() { fail_all(Error::internal("connection closed")); }

std::string OutboundCalls::begin(std::chrono::milliseconds timeout, CallCallback callback) {
  std::lock_guard lock(mutex_);
  std::string id = "cb-" + std::to_string(next_id_++);
  if (closed_) {
    // Registered after close: fail it on the loop, never synchronously.
    executor_.post([callback = std::move(callback)] {
      callback({Error::internal("connection closed"), {}});
    });
    return id;
  }
  Pending pending{std::move(callback), 0};
  // The timer holds only the id; a call completed meanwhile makes it a no-op.
  std::weak_ptr<OutboundCalls> weak = weak_from_this();
  pending.timer = executor_.start_timer(timeout, [weak, id] {
    if (auto self = weak.lock()) {
      self->cancel(id, Error{ErrorCode::wait_timed_out, "call timed out"});
    }
  });
  pending_.emplace(id, std::move(pending));
  return id;
}

std::optional<OutboundCalls::Pending> OutboundCalls::take(std::string_view id) {
  std::lock_guard lock(mutex_);
  auto it = pending_.find(id);
  if (it == pending_.end()) return std::nullopt;
  Pending p = std::move(it->second);
  pending_.erase(it);
  return p;
}

void OutboundCalls::forget(std::string_view id) {
  if (auto p = take(id); p && p->timer != 0) executor_.cancel_timer(p->timer);
}

bool OutboundCalls::complete(std::string_view id, CallOutcome outcome) {
  auto p = take(id);
  if (!p) return false;
  if (p->timer != 0) executor_.cancel_timer(p->timer);
  p->callback(std::move(outcome));
  return true;
}

bool OutboundCalls::cancel(std::string_view id, Error why) {
  return complete(id, {std::move(why), {}});
}

void OutboundCalls::fail_all(const Error& why) {
  std::map<std::string, Pending, std::less<>> failed;
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
    failed.swap(pending_);
  }
  for (auto& [id, p] : failed) {
    if (p.timer != 0) executor_.cancel_timer(p.timer);
    p.callback({why, {}});
  }
}

std::size_t OutboundCalls::pending() const {
  std::lock_guard lock(mutex_);
  return pending_.size();
}

}  // namespace car
