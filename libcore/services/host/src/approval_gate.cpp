#include "car/host/approval_gate.hpp"

#include <algorithm>
#include <mutex>

#include "car/connection.hpp"
#include "car/log.hpp"
#include "car/session/session_service.hpp"

namespace car::host {

std::vector<std::string> default_gated_methods() {
  return {"automation.run_applescript", "automation.shortcuts.run", "automation.run_powershell",
          "messages.send",              "mail.send",                "vision.ocr"};
}

namespace {

// Length of the valid UTF-8 sequence starting at s[i], or 0 if none starts there.
std::size_t utf8_sequence_length(std::string_view s, std::size_t i) {
  auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char b0 = byte(i);
  if (b0 < 0x80) return 1;
  std::size_t len = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;  // no overlongs
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (std::size_t k = 2; k < len; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
  }
  return len;
}

}  // namespace

std::string params_preview(std::string_view compact_json, std::size_t limit) {
  if (compact_json.size() <= limit) return std::string(compact_json);
  constexpr std::string_view ellipsis = "\xE2\x80\xA6";  // U+2026
  std::size_t budget = limit > ellipsis.size() ? limit - ellipsis.size() : 0;
  std::size_t end = 0;
  while (end < compact_json.size()) {
    std::size_t len = utf8_sequence_length(compact_json, end);
    if (len == 0 || end + len > budget) break;
    end += len;
  }
  std::string out;
  out.reserve(end + ellipsis.size());
  out.append(compact_json.substr(0, end)).append(ellipsis);
  return out;
}

// One request waiting at the gate. Whichever comes first — the resolution (any thread), the
// timer (loop thread) or the connection's teardown — takes `decide` under the mutex and calls it
// outside it; the others find it gone and do nothing.
struct ApprovalGate::Wait {
  std::mutex mutex;
  Decision decide;  // empty once decided
  Executor::TimerId timer = 0;
  std::string approval_id;
  std::uint64_t waiter_id = 0;
  std::string method;
  std::string client_id;
};

ApprovalGate::ApprovalGate(std::shared_ptr<HostState> state, Executor& executor,
                           GateConfig config)
    : state_(std::move(state)), executor_(executor), config_(std::move(config)),
      sorted_methods_(config_.methods) {
  std::sort(sorted_methods_.begin(), sorted_methods_.end());
}

bool ApprovalGate::gates(std::string_view method) const {
  return config_.enabled &&
         std::binary_search(sorted_methods_.begin(), sorted_methods_.end(), method, std::less<>{});
}

void ApprovalGate::admit(Connection& connection, std::string_view method,
                         const json::Value& params, Decision decide) {
  auto wait = std::make_shared<Wait>();
  wait->decide = std::move(decide);
  wait->method = std::string(method);
  wait->client_id = connection.client_id();
  {
    // Tracked before the approval exists; the closed() check below catches a teardown that
    // scanned before this insert (teardown marks the session closed before it scans).
    std::lock_guard lock(waits_mutex_);
    waits_.emplace(wait->client_id, wait);
  }

  json::Builder details;
  details.begin_object()
      .key("method").str(method)
      .key("client_id").str(connection.client_id())
      .key("params_preview").str(params_preview(json::stringify(params)))
      .end_object();
  ApprovalSpec spec;
  spec.agent_id = session::agent_id(connection.session());
  spec.action = "ws.method:" + wait->method;
  spec.details_json = details.take();
  spec.requested_by = wait->client_id;

  Executor& executor = executor_;
  std::weak_ptr<ApprovalGate> weak = weak_from_this();
  auto on_resolved = [wait, weak, &executor](const HostApproval& resolved) {
    Decision decide_now;
    Executor::TimerId timer = 0;
    {
      std::lock_guard lock(wait->mutex);
      decide_now.swap(wait->decide);
      timer = wait->timer;
    }
    if (!decide_now) return;
    if (auto self = weak.lock()) self->untrack(*wait);
    if (timer != 0) executor.cancel_timer(timer);
    bool approved = resolved.status == ApprovalStatus::approved;
    log_info("approval gate: {} {} ({})", wait->method, approved ? "approved" : "denied",
             resolved.id);
    if (approved) {
      decide_now(std::nullopt);
    } else {
      decide_now(Error{ErrorCode::approval_denied, "approval denied"});
    }
  };
  auto result = state_->create_approval(std::move(spec), std::move(on_resolved));
  if (!result) {
    // Refused (too many pending approvals): the request is answered at once and not run.
    Decision decide_now;
    {
      std::lock_guard lock(wait->mutex);
      decide_now.swap(wait->decide);
    }
    untrack(*wait);
    log_info("approval gate: {} from {} refused: {}", wait->method, wait->client_id,
             result.error().message);
    if (decide_now) decide_now(result.error());
    return;
  }
  auto& created = result.value();

  auto timer = executor_.start_timer(config_.timeout, [weak, wait] {
    if (auto self = weak.lock()) self->end_wait(wait, End::timed_out);
  });
  bool decided = false;
  {
    std::lock_guard lock(wait->mutex);
    wait->approval_id = created.approval.id;
    wait->waiter_id = created.waiter_id;
    wait->timer = timer;
    decided = !wait->decide;
  }
  if (decided) {
    // Decided before the ids were recorded (resolved at once, or abandoned): nothing left for
    // the timer, and no waiter may stay behind in HostState (a no-op if already gone).
    executor_.cancel_timer(timer);
    state_->forget_waiter(created.approval.id, created.waiter_id);
    return;
  }
  log_info("approval gate: {} from {} waits for {}", wait->method, connection.client_id(),
           created.approval.id);
  if (connection.closed()) end_wait(wait, End::abandoned);  // teardown ran concurrently
}

void ApprovalGate::end_wait(const std::shared_ptr<Wait>& wait, End why) {
  Decision decide_now;
  std::string approval_id;
  std::uint64_t waiter_id = 0;
  Executor::TimerId timer = 0;
  {
    std::lock_guard lock(wait->mutex);
    decide_now.swap(wait->decide);
    approval_id = wait->approval_id;
    waiter_id = wait->waiter_id;
    timer = wait->timer;
  }
  if (!decide_now) return;
  untrack(*wait);
  // The row stays pending (PROTOCOL.md §5.1); only this request stops waiting for it.
  if (!approval_id.empty()) state_->forget_waiter(approval_id, waiter_id);
  if (why == End::timed_out) {
    log_info("approval gate: {} timed out ({})", wait->method, approval_id);
    decide_now(Error{ErrorCode::approval_denied, "approval timed out"});
    return;
  }
  if (timer != 0) executor_.cancel_timer(timer);
  log_info("approval gate: {} from {} abandoned: its connection closed ({})", wait->method,
           wait->client_id, approval_id);
  // The connection is gone, so nobody reads this; deciding releases the request's slot.
  decide_now(Error{ErrorCode::approval_denied, "connection closed"});
}

void ApprovalGate::untrack(const Wait& wait) {
  std::lock_guard lock(waits_mutex_);
  auto [first, last] = waits_.equal_range(wait.client_id);
  for (auto it = first; it != last; ++it) {
    if (it->second.get() == &wait) {
      waits_.erase(it);
      return;
    }
  }
}

void ApprovalGate::abandon_waits_of(const std::string& client_id) {
  std::vector<std::shared_ptr<Wait>> mine;
  {
    std::lock_guard lock(waits_mutex_);
    auto [first, last] = waits_.equal_range(client_id);
    for (auto it = first; it != last; ++it) mine.push_back(it->second);
  }
  for (const auto& wait : mine) end_wait(wait, End::abandoned);
}

std::size_t ApprovalGate::waiting() const {
  std::lock_guard lock(waits_mutex_);
  return waits_.size();
}

}  // namespace car::host
