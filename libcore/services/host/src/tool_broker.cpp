#include "car/host/tool_broker.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <unordered_map>

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
// A caller-supplied timeout_ms is clamped into this range (and the grace to 0 … max_timeout).
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

// One connection's tools. Its entry exists only while the connection holds at least one.
struct ToolBroker::HostTable {
  std::weak_ptr<Connection> connection;
  std::map<std::string, ToolDefinition, std::less<>> tools;  // sorted by name for tools.list
  std::size_t bytes = 0;  // sum of definition_bytes over `tools`
};

namespace {

std::size_t definition_bytes(const ToolDefinition& d) {
  return d.name.size() + d.description.size() + d.parameters_json.size();
}

bool live(const std::shared_ptr<Connection>& c) { return c && !c->closed(); }

}  // namespace

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

ToolBroker::ToolBroker(Server& server, std::chrono::milliseconds default_timeout,
                       std::chrono::milliseconds grace)
    : server_(server),
      default_timeout_(default_timeout),
      grace_(std::clamp(grace, std::chrono::milliseconds{0}, max_timeout)) {}

ToolBroker::~ToolBroker() = default;

Result<std::vector<std::string>> ToolBroker::register_tools(Connection& host,
                                                            std::vector<ToolDefinition> tools) {
  // Fold repeated names: the last definition wins, the name keeps its first place.
  std::vector<ToolDefinition> unique;
  unique.reserve(tools.size());
  std::unordered_map<std::string, std::size_t> index;  // name → its place in `unique`
  for (auto& tool : tools) {
    auto [it, inserted] = index.try_emplace(tool.name, unique.size());
    if (inserted) {
      unique.push_back(std::move(tool));
    } else {
      unique[it->second] = std::move(tool);
    }
  }
  std::vector<std::string> names;
  names.reserve(unique.size());
  for (const auto& tool : unique) names.push_back(tool.name);

  const std::string& client_id = host.client_id();
  {
    std::lock_guard lock(mutex_);
    if (auto refusal = add_tools_locked(host, unique)) return std::move(*refusal);
  }
  // Teardown marks a connection closed before it unregisters its tools: if this one is closed
  // already, that step may have run before this registration, so undo it (a second run of it
  // finds nothing).
  if (host.closed()) unregister_all(client_id);
  return names;
}

std::optional<Error> ToolBroker::add_tools_locked(Connection& host,
                                                  std::vector<ToolDefinition>& unique) {
  const std::string& client_id = host.client_id();
  // Check the bound on the table this call would leave: a refusal registers nothing.
  auto existing = hosts_.find(client_id);
  std::size_t count = existing == hosts_.end() ? 0 : existing->second.tools.size();
  std::size_t bytes = existing == hosts_.end() ? 0 : existing->second.bytes;
  for (const auto& tool : unique) {
    if (existing != hosts_.end()) {
      if (auto old = existing->second.tools.find(tool.name); old != existing->second.tools.end()) {
        --count;
        bytes -= definition_bytes(old->second);
      }
    }
    ++count;
    bytes += definition_bytes(tool);
  }
  if (count > max_tools_per_connection) {
    return Error{ErrorCode::invalid_params,
                 fmt::format("too many tools: a connection may hold at most {}",
                             max_tools_per_connection)};
  }
  if (bytes > max_definition_bytes_per_connection) {
    return Error{ErrorCode::invalid_params,
                 fmt::format("tool definitions too large: a connection may hold at most {} bytes",
                             max_definition_bytes_per_connection)};
  }
  if (unique.empty()) return std::nullopt;
  HostTable& table = hosts_[client_id];
  table.connection = host.weak_from_this();
  for (auto& tool : unique) {
    holders_[tool.name].insert(client_id);
    std::string name = tool.name;
    table.tools.insert_or_assign(std::move(name), std::move(tool));
  }
  table.bytes = bytes;
  return std::nullopt;
}

bool ToolBroker::unregister(std::string_view client_id, std::string_view name) {
  std::lock_guard lock(mutex_);
  auto table = hosts_.find(client_id);
  if (table == hosts_.end()) return false;
  auto tool = table->second.tools.find(name);
  if (tool == table->second.tools.end()) return false;
  table->second.bytes -= definition_bytes(tool->second);
  table->second.tools.erase(tool);
  if (table->second.tools.empty()) hosts_.erase(table);
  if (auto h = holders_.find(name); h != holders_.end()) {
    if (auto id = h->second.find(client_id); id != h->second.end()) h->second.erase(id);
    if (h->second.empty()) holders_.erase(h);
  }
  return true;
}

std::vector<ToolDefinition> ToolBroker::tools_of(std::string_view client_id) const {
  std::lock_guard lock(mutex_);
  std::vector<ToolDefinition> out;
  auto table = hosts_.find(client_id);
  if (table == hosts_.end()) return out;
  out.reserve(table->second.tools.size());
  for (const auto& [name, tool] : table->second.tools) out.push_back(tool);
  return out;
}

void ToolBroker::unregister_all(std::string_view client_id) {
  std::lock_guard lock(mutex_);
  auto table = hosts_.find(client_id);
  if (table == hosts_.end()) return;
  for (const auto& [name, tool] : table->second.tools) {
    auto h = holders_.find(name);
    if (h == holders_.end()) continue;
    if (auto id = h->second.find(client_id); id != h->second.end()) h->second.erase(id);
    if (h->second.empty()) holders_.erase(h);
  }
  hosts_.erase(table);
}

std::vector<std::string> ToolBroker::hosts_of(std::string_view tool) const {
  std::lock_guard lock(mutex_);
  auto h = holders_.find(tool);
  if (h == holders_.end()) return {};
  return {h->second.begin(), h->second.end()};
}

Result<std::shared_ptr<Connection>> ToolBroker::pick_host(const ToolCall& call) const {
  std::lock_guard lock(mutex_);
  auto h = holders_.find(call.tool);
  if (h == holders_.end()) {
    return Error{ErrorCode::invalid_params, fmt::format("unknown tool '{}'", call.tool)};
  }
  auto connection_of = [&](const std::string& client_id) -> std::shared_ptr<Connection> {
    auto table = hosts_.find(client_id);
    return table == hosts_.end() ? nullptr : table->second.connection.lock();
  };
  if (call.client_id) {
    if (h->second.find(*call.client_id) == h->second.end()) {
      return Error{ErrorCode::invalid_params,
                   fmt::format("tool '{}' is not registered by session '{}'", call.tool,
                               *call.client_id)};
    }
    return connection_of(*call.client_id);  // null or closed: answered "disconnected"
  }
  // A holder that has closed is being torn down: it no longer competes for the name.
  std::shared_ptr<Connection> chosen;
  std::size_t holding = 0;
  for (const auto& client_id : h->second) {
    auto c = connection_of(client_id);
    if (!live(c)) continue;
    if (++holding > 1) {
      return Error{ErrorCode::invalid_params,
                   fmt::format("tool '{}' is registered by several sessions; pass client_id",
                               call.tool)};
    }
    chosen = std::move(c);
  }
  return chosen;  // null when every holder has closed: answered "disconnected"
}

std::size_t ToolBroker::running() const {
  std::lock_guard lock(mutex_);
  return running_.size();
}

void ToolBroker::invoke(Connection& invoker, ToolCall request, Reply reply) {
  auto picked = pick_host(request);
  if (!picked) {
    reply.error(picked.error());
    return;
  }
  std::shared_ptr<Connection> host = std::move(picked.value());
  if (!live(host)) {
    reply.error(Error::internal("tool host disconnected"));
    return;
  }
  auto effective =
      std::clamp(request.timeout.value_or(default_timeout_), min_timeout, max_timeout);
  // `effective` is advertised to the host; the broker itself waits the grace longer, so a host
  // that stops at timeout_ms and answers with its own error is heard (PROTOCOL.md §6).
  auto wait = effective + grace_;
  std::string parameters_json = std::move(request.parameters_json);

  auto call = std::make_shared<Invocation>();
  call->action_id = uuid_v4();
  call->tool = std::move(request.tool);
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
  auto sent = host->call("tools.execute", build_params, wait + backstop_margin,
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
  auto timer = server_.executor().start_timer(wait, [weak, call] {
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
