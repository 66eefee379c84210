#include "car/reply.hpp"

#include "car/json.hpp"
#include "car/jsonrpc_text.hpp"
#include "car/log.hpp"
#include "reply_state.hpp"

namespace car {
namespace detail {

void BatchCollector::member_done(std::string entry, std::function<void()> after_queued) {
  std::vector<std::string> entries;
  std::vector<std::function<void()>> afters;
  {
    std::lock_guard lock(mutex_);
    if (!entry.empty()) entries_.push_back(std::move(entry));
    if (after_queued) after_queued_.push_back(std::move(after_queued));
    if (--remaining != 0) return;
    entries.swap(entries_);
    afters.swap(after_queued_);
  }
  if (!entries.empty()) {
    std::size_t size = 2;
    for (const auto& e : entries) size += e.size() + 1;
    std::string frame;
    frame.reserve(size);
    frame.push_back('[');
    for (std::size_t i = 0; i < entries.size(); ++i) {
      if (i != 0) frame.push_back(',');
      frame.append(entries[i]);
    }
    frame.push_back(']');
    connection->send_reply_frame(std::move(frame));
  }
  for (auto& after : afters) after();
  if (close_after.load()) connection->close(1008, "auth required");
}

bool ReplyState::finish(std::string entry, std::function<void()> after_queued,
                        std::optional<int> error_code) {
  if (done.exchange(true, std::memory_order_acq_rel)) return false;
  if (notification) entry.clear();
  if (batch) {
    batch->member_done(std::move(entry), std::move(after_queued));
  } else {
    if (!entry.empty()) connection->send_reply_frame(std::move(entry));
    if (after_queued) after_queued();
  }
  // After the reply is queued (or dropped with the connection), before the in-flight slot is
  // given back: the line's duration covers everything the peer waited for.
  if (request_log) {
    finish_request_log(*request_log, connection->client_id(),
                       notification ? std::string_view() : std::string_view(id_json), error_code);
  }
  if (counted) connection->reply_finished();
  return true;
}

ReplyState::~ReplyState() {
  if (done.load(std::memory_order_acquire)) return;
  // Every copy of the Reply is gone and nobody answered: answer for the handler rather than
  // leave the peer waiting forever.
  if (!notification) log_warn("request {} dropped without a reply", id_json);
  Error dropped = Error::internal("internal error: request dropped");
  finish(jsonrpc::error(id_json, dropped), {}, dropped.code);
}

}  // namespace detail

void Reply::ok(std::string_view result_json, std::function<void()> after_queued) const {
  if (!state_) return;
  if (state_->notification) {
    state_->finish({}, std::move(after_queued));
    return;
  }
  state_->finish(jsonrpc::result(state_->id_json, result_json), std::move(after_queued));
}

void Reply::error(Error error) const {
  if (!state_) return;
  if (state_->notification) {
    state_->finish({}, {}, error.code);
    return;
  }
  state_->finish(jsonrpc::error(state_->id_json, error), {}, error.code);
}

bool Reply::done() const { return !state_ || state_->done.load(std::memory_order_acquire); }
bool Reply::is_notification() const { return state_ && state_->notification; }

}  // namespace car
