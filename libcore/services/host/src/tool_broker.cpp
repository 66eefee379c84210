#include "car/host/tool_broker.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "car/connection.hpp"
#include "car/json.hpp"
#include "car/log.hpp"
#include "car/random.hpp"
#include "car/server.hpp"

namespace car::host {

namespace {

// The broker answers a timed-out call itself; the core's own deadline on the call is only a
// backstop, set this much later so the broker's timer always fires first.
constexpr std::chrono::milliseconds backstop_margin{1000};
// A caller-supplied timeout_ms is clamped into this range.
constexpr std::chrono::milliseconds min_timeout{1};
constexpr std::chrono::milliseconds max_timeout{24LL * 3600 * 1000};

std::string cancel_params(std::string_view request_id, std::string_view action_id,
                          std::string_view reason) {
  json::Builder out;
  out.begin_object()
      .key("request_id").str(request_id)
      .key("action_id").str(action_id)
      .key("reason").str(reason)
      .end_object();
  return out.take();
}

}  // namespace

struct ToolBroker::Holder {
  std::string client_id;
  std::weak_ptr<Connection> connection;
};

// One tools.invoke in progress. Immutable after construction except the fields under `mutex`.
struct ToolBroker::Invocation {
  std::string action_id;
  std::string tool;
  std::string invoker_id;
  std::weak_ptr<Connection> host;
  Reply reply;

  std::mutex mutex;
  std::string request_id;  // the cb-N id, known before the request is sent
  Executor::TimerId timer = 0;
  bool finished = false;          // the invoker has its answer (or it is being sent)
  bool timed_out = false;         // the broker's deadline passed
  bool caller_cancelled = false;  // the invoker went away
};

ToolBroker::ToolBroker(Server& server, std::chrono::milliseconds default_timeout)
    : server_(server), default_timeout_(default_timeout) {}

ToolBroker::~ToolBroker() = default;

bool ToolBroker::holder_live(const Holder& holder) const {
  auto c = holder.connection.lock();
  return c && !c->closed();
}

Result<std::vector<std::string>> ToolBroker::register_tools(Connection& host,
                                                            std::vector<std::string> names) {
  std::vector<std::string> unique;
  unique.reserve(names.size());
  for (auto& name : names) {
    if (std::find(unique.begin(), unique.end(), name) == unique.end()) {
      unique.push_back(std::move(name));
    }
  }
  std::lock_guard lock(mutex_);
  // Check everything first: a refusal registers nothing (PROTOCOL.md §6).
  for (const auto& name : unique) {
    auto it = tools_.find(name);
    if (it != tools_.end() && it->second.client_id != host.client_id() &&
        holder_live(it->second)) {
      return Error{ErrorCode::invalid_params,
                   fmt::format("tool '{}' is registered by another session", name)};
    }
  }
  for (const auto& name : unique) {
    tools_[name] = Holder{host.client_id(), host.weak_from_this()};
  }
  return unique;
}

void ToolBroker::unregister_all(std::string_view client_id) {
  std::lock_guard lock(mutex_);
  std::erase_if(tools_, [&](const auto& item) { return item.second.client_id == client_id; });
}

std::optional<std::string> ToolBroker::host_of(std::string_view tool) const {
  std::lock_guard lock(mutex_);
  auto it = tools_.find(tool);
  if (it == tools_.end()) return std::nullopt;
  return it->second.client_id;
}

std::size_t ToolBroker::running() const {
  std::lock_guard lock(mutex_);
  return running_.size();
}

void ToolBroker::invoke(Connection& invoker, std::string tool, std::string parameters_json,
                        std::optional<std::chrono::milliseconds> timeout, Reply reply) {
  std::shared_ptr<Connection> host;
  {
    std::lock_guard lock(mutex_);
    auto it = tools_.find(tool);
    if (it == tools_.end()) {
      reply.error(ErrorCode::invalid_params, fmt::format("unknown tool '{}'", tool));
      return;
    }
    host = it->second.connection.lock();
  }
  if (!host || host->closed()) {
    reply.error(Error::internal("tool host disconnected"));
    return;
  }
  auto effective = std::clamp(timeout.value_or(default_timeout_), min_timeout, max_timeout);

  auto call = std::make_shared<Invocation>();
  call->action_id = uuid_v4();
  call->tool = std::move(tool);
  call->invoker_id = invoker.client_id();
  call->host = host;
  call->reply = std::move(reply);

  auto build_params = [&](std::string_view request_id) {
    {
      std::lock_guard lock(call->mutex);
      call->request_id = std::string(request_id);
    }
    json::Builder out;
    out.begin_object()
        .key("action_id").str(call->action_id)
        .key("tool").str(call->tool)
        .key("parameters").raw(parameters_json)
        .key("timeout_ms").integer(static_cast<long long>(effective.count()))
        .key("attempt").integer(1)
        .key("request_id").str(request_id)
        .end_object();
    return out.take();
  };
  std::weak_ptr<ToolBroker> weak = weak_from_this();
  auto on_outcome = [weak, call](CallOutcome outcome) {
    if (auto self = weak.lock()) {
      self->finish(call, std::move(outcome.error), std::move(outcome.result_json));
    } else if (outcome.error) {
      call->reply.error(std::move(*outcome.error));
    } else {
      call->reply.ok(outcome.result_json.empty() ? "null" : outcome.result_json);
    }
  };
  auto sent = host->call("tools.execute", build_params, effective + backstop_margin,
                         std::move(on_outcome));
  if (!sent) {
    call->reply.error(Error::internal("tool host disconnected"));
    return;
  }
  {
    // A fast host may already have answered (on another thread); then there is nothing to track.
    std::lock_guard lock(mutex_);
    std::lock_guard call_lock(call->mutex);
    if (!call->finished) running_.emplace(call->action_id, call);
  }
  auto timer = server_.executor().start_timer(effective, [weak, call] {
    if (auto self = weak.lock()) self->expire(call);
  });
  bool finished = false;
  {
    std::lock_guard lock(call->mutex);
    call->timer = timer;
    finished = call->finished;
  }
  if (finished) server_.executor().cancel_timer(timer);
  log_debug("tools.invoke {} → {} as {} ({})", call->tool, host->client_id(), *sent,
            call->action_id);
  // The invoker may have closed while this was being set up, after its teardown looked for
  // running calls: cancel on its behalf (at most once, see cancel_invocations_of).
  if (invoker.closed()) cancel_invocations_of(invoker);
}

void ToolBroker::finish(const std::shared_ptr<Invocation>& call, std::optional<Error> error,
                        std::string result_json) {
  Executor::TimerId timer = 0;
  bool timed_out = false;
  bool caller_cancelled = false;
  {
    std::lock_guard lock(call->mutex);
    if (call->finished) return;
    call->finished = true;
    timer = call->timer;
    timed_out = call->timed_out;
    caller_cancelled = call->caller_cancelled;
  }
  if (timer != 0) server_.executor().cancel_timer(timer);
  {
    std::lock_guard lock(mutex_);
    running_.erase(call->action_id);
  }
  if (!error) {
    call->reply.ok(result_json.empty() ? "null" : result_json);
    return;
  }
  if (!timed_out && !caller_cancelled) {
    // Pending calls fail when their connection closes; tell the invoker what that means.
    auto host = call->host.lock();
    if (!host || host->closed()) {
      call->reply.error(Error::internal("tool host disconnected"));
      return;
    }
  }
  call->reply.error(std::move(*error));  // the host's own error, code and message kept
}

void ToolBroker::expire(const std::shared_ptr<Invocation>& call) {
  std::string request_id;
  {
    std::lock_guard lock(call->mutex);
    if (call->finished || call->caller_cancelled) return;
    call->timed_out = true;
    request_id = call->request_id;
  }
  auto host = call->host.lock();
  if (!host) return;  // its calls were failed when it closed
  // cancel_call completes the call (and so answers the invoker) only if no reply won the race.
  if (host->cancel_call(request_id, Error{ErrorCode::wait_timed_out, "tool call timed out"})) {
    log_info("tools.invoke {} ({}) timed out", call->tool, call->action_id);
    host->notify("tools.cancel", cancel_params(request_id, call->action_id, "timeout"));
  }
}

void ToolBroker::cancel_invocations_of(Connection& connection) {
  std::vector<std::shared_ptr<Invocation>> mine;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [id, call] : running_) {
      if (call->invoker_id == connection.client_id()) mine.push_back(call);
    }
  }
  for (const auto& call : mine) {
    std::string request_id;
    {
      std::lock_guard lock(call->mutex);
      if (call->finished || call->caller_cancelled || call->timed_out) continue;
      call->caller_cancelled = true;
      request_id = call->request_id;
    }
    auto host = call->host.lock();
    if (!host) continue;
    if (host->cancel_call(request_id, Error::internal("caller disconnected"))) {
      log_info("tools.invoke {} ({}): caller disconnected", call->tool, call->action_id);
      host->notify("tools.cancel",
                   cancel_params(request_id, call->action_id, "caller_disconnected"));
    }
  }
}

}  // namespace car::host
