// install_host_services: the host.* and tools.* methods over HostState, ApprovalGate and
// ToolBroker, and their teardown steps. Handlers only translate params and results; the rules
// live in the services.
#include "car/host/host_service.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <unordered_map>

#if defined(_WIN32)
#include <process.h>
#else
#include <unistd.h>
#endif

#include "car/connection.hpp"
#include "car/event_stream.hpp"
#include "car/log.hpp"
#include "car/server.hpp"

namespace car::host {

namespace {

constexpr std::size_t default_event_limit = 100;
constexpr std::size_t max_event_limit = 500;

// Reads an optional array-of-strings member. Absent (or null) leaves `out` unset.
std::optional<Error> read_strings(const json::Value& params, std::string_view name,
                                  std::optional<std::vector<std::string>>& out) {
  const json::Value* v = param::member(params, name);
  if (v == nullptr || v->IsNull()) return std::nullopt;
  if (!v->IsArray()) return Error::invalid_params(name, "must be an array of strings");
  std::vector<std::string> items;
  items.reserve(v->Size());
  for (const auto& item : v->GetArray()) {
    if (!item.IsString()) return Error::invalid_params(name, "must be an array of strings");
    items.emplace_back(json::view(item));
  }
  out = std::move(items);
  return std::nullopt;
}

std::optional<std::string> opt_string(const json::Value& params, std::string_view name) {
  if (auto s = param::string(params, name)) return std::string(*s);
  return std::nullopt;
}

// Any JSON value other than null, as compact text.
std::optional<std::string> opt_json(const json::Value& params, std::string_view name) {
  const json::Value* v = param::member(params, name);
  if (v == nullptr || v->IsNull()) return std::nullopt;
  return json::stringify(*v);
}

template <typename T>
void reply_json(const Reply& reply, const Result<T>& result) {
  if (!result) {
    reply.error(result.error());
    return;
  }
  reply.ok(to_json(result.value()));
}

std::string wrap(std::string_view key, std::string_view array_json) {
  std::string out;
  out.reserve(array_json.size() + key.size() + 5);
  out.append("{\"").append(key).append("\":").append(array_json).push_back('}');
  return out;
}

using Service = std::shared_ptr<HostService>;

// ---- host.* ----

long long process_id() {
#if defined(_WIN32)
  return static_cast<long long>(_getpid());
#else
  return static_cast<long long>(::getpid());
#endif
}

// host.subscribe's identity (PROTOCOL.md §4.2): who is serving, so a shell can tell daemons
// apart and show which one owns the manifest. Built per call: it is small and subscribes are rare.
void write_identity(json::Builder& out, const Service& s) {
  const HostConfig& config = s->config();
  out.begin_object()
      .key("version").str(s->server().config().server_version)
      .key("pid").integer(process_id())
      .key("manifest_path");
  if (config.manifest_path) {
    out.str(*config.manifest_path);
  } else {
    out.null();
  }
  out.key("manifest_role").str(to_string(config.manifest_role)).end_object();
}

void host_subscribe(const Service& s, const Request& req, const Reply& reply) {
  auto connection = req.connection_ptr();
  StreamSubscriber::Options options;
  options.capacity = s->config().subscriber_queue;
  options.deadline = s->config().event_write_deadline;
  // Host events are small and few; a pass that is not run by the recording thread itself (the
  // first after the reply, or one after a batch completed) is cheapest on the loop, where the
  // sink's completions already are.
  options.drain_thread = DrainThread::loop;
  // A host subscriber is never silently skipped: a full queue closes its connection.
  options.overflow = OverflowPolicy::disconnect;
  auto subscriber = std::make_shared<StreamSubscriber>(
      s->server().executor(), connection->sink_ptr(), 0, options, nullptr, nullptr, nullptr);
  auto state = s->state_ptr();
  Subscription sub = state->subscribe(connection->client_id(), subscriber);
  // Teardown marks the session closed before it unsubscribes: if it has not marked it yet, its
  // unsubscribe is still to come; if it has, it may already have run, so undo ours.
  if (connection->closed()) state->unsubscribe(connection->client_id());
  // HostState's snapshot is the state alone; the identity of the serving process is this
  // layer's to add, as the result's last member.
  std::string result = std::move(sub.snapshot_json);
  if (!result.empty() && result.back() == '}') result.pop_back();
  json::Builder identity;
  write_identity(identity, s);
  result.append(",\"identity\":").append(identity.view()).push_back('}');
  // Events start flowing only once the snapshot reply is queued ahead of them (PROTOCOL.md §2).
  reply.ok(result, [subscriber] { subscriber->resume(); });
}

void host_events(const Service& s, const Request& req, const Reply& reply) {
  std::size_t limit = default_event_limit;
  if (auto l = param::integer(req.params(), "limit")) {
    limit = std::min(static_cast<std::size_t>(*l), max_event_limit);
  }
  reply.ok(wrap("events", s->state().events_json(limit)));
}

void host_register_agent(const Service& s, const Request& req, const Reply& reply) {
  const auto& p = req.params();
  AgentSpec spec;
  spec.id = opt_string(p, "id");
  spec.name = *opt_string(p, "name");
  spec.kind = *opt_string(p, "kind");
  std::optional<std::vector<std::string>> capabilities;
  if (auto e = read_strings(p, "capabilities", capabilities)) {
    reply.error(std::move(*e));
    return;
  }
  if (capabilities) spec.capabilities = std::move(*capabilities);
  spec.project = opt_string(p, "project");
  spec.pid = param::integer(p, "pid");
  spec.display_json = opt_json(p, "display");
  spec.metadata_json = opt_json(p, "metadata");
  reply_json(reply, s->state().register_agent(req.connection().client_id(), std::move(spec)));
}

void host_set_status(const Service& s, const Request& req, const Reply& reply) {
  const auto& p = req.params();
  auto status = parse_agent_status(*param::string(p, "status"));
  if (!status) {
    reply.error(Error::invalid_params(
        "status", fmt::format("must be one of {}", agent_status_names())));
    return;
  }
  StatusChange change;
  change.agent_id = *opt_string(p, "agent_id");
  change.status = *status;
  change.current_task = opt_string(p, "current_task");
  change.message = opt_string(p, "message");
  change.payload_json = opt_json(p, "payload");
  reply_json(reply, s->state().set_status(req.connection().client_id(), std::move(change)));
}

void host_register_device(const Service& s, const Request& req, const Reply& reply) {
  const auto& p = req.params();
  DeviceSpec spec;
  spec.id = opt_string(p, "id");
  spec.name = *opt_string(p, "name");
  spec.platform = *opt_string(p, "platform");
  std::optional<std::vector<std::string>> capabilities;
  if (auto e = read_strings(p, "capabilities", capabilities)) {
    reply.error(std::move(*e));
    return;
  }
  if (capabilities) spec.capabilities = std::move(*capabilities);
  spec.status = opt_string(p, "status");
  spec.metadata_json = opt_json(p, "metadata");
  reply_json(reply, s->state().register_device(req.connection().client_id(), std::move(spec)));
}

void host_update_device(const Service& s, const Request& req, const Reply& reply) {
  const auto& p = req.params();
  DeviceUpdate update;
  update.device_id = *opt_string(p, "device_id");
  update.name = opt_string(p, "name");
  update.platform = opt_string(p, "platform");
  if (auto e = read_strings(p, "capabilities", update.capabilities)) {
    reply.error(std::move(*e));
    return;
  }
  update.status = opt_string(p, "status");
  update.metadata_json = opt_json(p, "metadata");
  reply_json(reply, s->state().update_device(req.connection().client_id(), std::move(update)));
}

void host_notify(const Service& s, const Request& req, const Reply& reply) {
  const auto& p = req.params();
  EventSpec event;
  event.kind = opt_string(p, "kind").value_or("host.notification");
  event.agent_id = opt_string(p, "agent_id");
  event.message = opt_string(p, "message").value_or(event.kind);
  event.payload_json = opt_json(p, "payload").value_or("{}");
  auto record = s->state().record(std::move(event));
  if (!record) {
    reply.error(record.error());
    return;
  }
  reply.ok(record->event_json());
}

void host_request_approval(const Service& s, const Request& req, const Reply& reply) {
  const auto& p = req.params();
  ApprovalSpec spec;
  spec.owner = req.connection().client_id();
  spec.agent_id = opt_string(p, "agent_id");
  spec.action = *opt_string(p, "title");
  json::Builder details;
  details.begin_object();
  if (auto d = param::string(p, "description")) details.key("description").str(*d);
  if (const auto* c = param::member(p, "context"); c != nullptr && !c->IsNull()) {
    details.key("context").value(*c);
  }
  if (auto n = param::integer(p, "required_approvals")) {
    details.key("required_approvals").integer(*n);
  }
  details.end_object();
  spec.details_json = details.take();
  auto result = s->state().create_approval(std::move(spec));
  if (!result) {
    reply.error(result.error());
    return;
  }
  HostApproval created = std::move(result->approval);
  // Teardown marks the session closed before it reaps: a row created after the reap's scan
  // sees the mark here and is reaped now, so it cannot stay pending with its owner gone.
  if (req.connection().closed()) s->state().reap_approvals_of(req.connection().client_id());
  reply.ok(to_json(created));
}

void host_resolve_approval(const Service& s, const Request& req, const Reply& reply) {
  const auto& p = req.params();
  std::optional<Decision> decision;
  if (auto approved = param::boolean(p, "approved")) {
    decision = *approved ? Decision::approve : Decision::deny;
  }
  if (auto resolution = param::string(p, "resolution")) {
    std::optional<Decision> r;
    if (*resolution == "approve") r = Decision::approve;
    if (*resolution == "deny") r = Decision::deny;
    if (!r) {
      reply.error(Error::invalid_params("resolution", R"(must be "approve" or "deny")"));
      return;
    }
    if (decision && *decision != *r) {
      reply.error(Error::invalid_params("resolution", "contradicts approved"));
      return;
    }
    decision = r;
  }
  if (!decision) {
    reply.error(Error::invalid_params("approved", "or resolution is required"));
    return;
  }
  auto result = s->state().resolve_approval(*param::string(p, "approval_id"), *decision,
                                            req.connection().client_id(),
                                            opt_string(p, "notes"));
  if (!result) {
    reply.error(result.error());
    return;
  }
  reply.ok(to_json(result->approval));
}

// ---- tools.* ----

// One tools.register entry: a bare name, or upstream's ToolDefinition {name, description?,
// parameters?}. `where` names the entry in errors ("params[0]", "tools[2]").
Result<ToolDefinition> read_tool_definition(const json::Value& item, const std::string& where) {
  ToolDefinition tool;
  if (item.IsString()) {
    if (item.GetStringLength() == 0) {
      return Error::invalid_params(where, "must be a non-empty string");
    }
    tool.name = std::string(json::view(item));
    return tool;
  }
  if (!item.IsObject()) {
    return Error::invalid_params(where, "must be a string or a ToolDefinition object");
  }
  const json::Value* name = param::member(item, "name");
  if (name == nullptr || name->IsNull()) {
    return Error::invalid_params(where + ".name", "is required");
  }
  if (!name->IsString() || name->GetStringLength() == 0) {
    return Error::invalid_params(where + ".name", "must be a non-empty string");
  }
  tool.name = std::string(json::view(*name));
  if (const auto* d = param::member(item, "description"); d != nullptr && !d->IsNull()) {
    if (!d->IsString()) return Error::invalid_params(where + ".description", "must be a string");
    tool.description = std::string(json::view(*d));
  }
  if (const auto* p = param::member(item, "parameters"); p != nullptr && !p->IsNull()) {
    if (!p->IsObject()) return Error::invalid_params(where + ".parameters", "must be an object");
    tool.parameters_json = json::stringify(*p);
  }
  return tool;
}

void tools_register(const Service& s, const Request& req, const Reply& reply) {
  const auto& p = req.params();
  // upstream's form is the array itself; the {tools:[...]} alias (validated as an array by its
  // ParamSpec) wraps one.
  const bool upstream_form = p.IsArray();
  const json::Value& list = upstream_form ? p : *param::member(p, "tools");
  const std::string_view field = upstream_form ? "params" : "tools";
  // Folded by name while reading (the last definition of a repeated name wins), so a message of
  // millions of tiny entries cannot grow into millions of definitions: more distinct names than
  // one connection may hold is refused before the broker sees them.
  std::vector<ToolDefinition> tools;
  std::unordered_map<std::string, std::size_t> index_of;
  for (rapidjson::SizeType i = 0; i < list.Size(); ++i) {
    auto tool = read_tool_definition(list[i], fmt::format("{}[{}]", field, i));
    if (!tool) {
      reply.error(tool.error());  // nothing is registered
      return;
    }
    if (auto it = index_of.find(tool->name); it != index_of.end()) {
      tools[it->second] = std::move(tool.value());
      continue;
    }
    if (tools.size() == ToolBroker::max_tools_per_connection) {
      reply.error(Error{ErrorCode::invalid_params,
                        fmt::format("too many tools: a connection may hold at most {}",
                                    ToolBroker::max_tools_per_connection)});
      return;
    }
    index_of.emplace(tool->name, tools.size());
    tools.push_back(std::move(tool.value()));
  }
  auto result = s->tools().register_tools(req.connection(), std::move(tools));
  if (!result) {
    reply.error(result.error());
    return;
  }
  if (upstream_form) {
    reply.ok(std::to_string(result->size()));
    return;
  }
  json::Builder out;
  out.begin_object().key("registered").begin_array();
  for (const auto& name : result.value()) out.str(name);
  out.end_array().end_object();
  reply.ok(out.view());
}

void tools_list(const Service& s, const Request& req, const Reply& reply) {
  auto tools = s->tools().tools_of(req.connection().client_id());
  json::Builder out;
  out.begin_object().key("tools").begin_array();
  for (const auto& tool : tools) {
    out.begin_object()
        .key("name").str(tool.name)
        .key("description").str(tool.description)
        .key("parameters").raw(tool.parameters_json)
        // carcore does not retry tool calls, so no tool is declared idempotent.
        .key("idempotent").boolean(false)
        .end_object();
  }
  out.end_array().key("count").integer(static_cast<long long>(tools.size())).end_object();
  reply.ok(out.view());
}

void tools_unregister(const Service& s, const Request& req, const Reply& reply) {
  auto name = *param::string(req.params(), "name");
  bool removed = s->tools().unregister(req.connection().client_id(), name);
  json::Builder out;
  out.begin_object()
      .key("unregistered").str(name)
      .key("removed").integer(removed ? 1 : 0)
      .end_object();
  reply.ok(out.view());
}

void tools_invoke(const Service& s, const Request& req, const Reply& reply) {
  const auto& p = req.params();
  ToolCall call;
  call.tool = *opt_string(p, "tool");
  call.parameters_json = opt_json(p, "parameters").value_or("{}");
  if (auto ms = param::integer(p, "timeout_ms")) call.timeout = std::chrono::milliseconds(*ms);
  call.client_id = opt_string(p, "client_id");
  s->tools().invoke(req.connection(), std::move(call), reply);
}

}  // namespace

std::string_view to_string(ManifestRole role) {
  switch (role) {
    case ManifestRole::owner: return "owner";
    case ManifestRole::observer: return "observer";
    case ManifestRole::none: return "none";
  }
  return "none";
}

HostService::HostService(Server& server, HostConfig config)
    : server_(server),
      config_(std::move(config)),
      state_([&] {
        HostStateOptions options = config_.state;
        if (!options.is_live) {
          options.is_live = [&server](std::string_view client_id) {
            auto c = server.find_connection(client_id);
            return c && !c->closed();
          };
        }
        return std::make_shared<HostState>(std::move(options));
      }()),
      approvals_(*state_),
      gate_(config_.gate.enabled
                ? std::make_shared<ApprovalGate>(state_, server.executor(), config_.gate)
                : nullptr),
      tools_(std::make_shared<ToolBroker>(server, config_.tool_timeout, config_.tool_grace)) {}

std::shared_ptr<HostService> install_host_services(Server& server, HostConfig config) {
  auto service = std::make_shared<HostService>(server, std::move(config));
  MethodRegistry& m = server.methods();
  using PT = ParamType;

  // Each handler holds the service: the method table keeps it alive as long as the server.
  auto bind = [service](void (*fn)(const Service&, const Request&, const Reply&)) {
    return [service, fn](const Request& req, Reply reply) { fn(service, req, reply); };
  };

  MethodOptions subscribe_options;
  subscribe_options.requires_handshake = true;
  m.add("host.subscribe", {}, bind(host_subscribe), subscribe_options);
  m.add("host.unsubscribe", {}, bind([](const Service& s, const Request& req, const Reply& r) {
          s->state().unsubscribe(req.connection().client_id());
          r.ok(R"({"subscribed":false})");
        }));
  m.add("host.agents", {}, bind([](const Service& s, const Request&, const Reply& r) {
          r.ok(s->state().agents_json());
        }));
  m.add("host.devices", {}, bind([](const Service& s, const Request&, const Reply& r) {
          r.ok(s->state().devices_json());
        }));
  m.add("host.events", {optional("limit", PT::non_negative_integer)}, bind(host_events));
  m.add("host.approvals", {}, bind([](const Service& s, const Request&, const Reply& r) {
          r.ok(wrap("approvals", s->state().approvals_json()));
        }));
  m.add("host.register_agent",
        {optional("id", PT::non_empty_string), required("name", PT::string),
         required("kind", PT::string), optional("capabilities", PT::array),
         optional("project", PT::string), optional("pid", PT::integer),
         optional("display", PT::any), optional("metadata", PT::object)},
        bind(host_register_agent));
  m.add("host.unregister_agent", {required("agent_id", PT::non_empty_string)},
        bind([](const Service& s, const Request& req, const Reply& r) {
          auto id = *param::string(req.params(), "agent_id");
          if (auto e = s->state().unregister_agent(req.connection().client_id(), id)) {
            r.error(std::move(*e));
            return;
          }
          r.ok(R"({"ok":true})");
        }));
  m.add("host.set_status",
        {required("agent_id", PT::non_empty_string), required("status", PT::string),
         optional("current_task", PT::string), optional("message", PT::string),
         optional("payload", PT::any)},
        bind(host_set_status));
  m.add("host.register_device",
        {optional("id", PT::non_empty_string), required("name", PT::string),
         required("platform", PT::string), optional("capabilities", PT::array),
         optional("status", PT::string), optional("metadata", PT::object)},
        bind(host_register_device));
  m.add("host.update_device",
        {required("device_id", PT::non_empty_string), optional("name", PT::string),
         optional("platform", PT::string), optional("capabilities", PT::array),
         optional("status", PT::string), optional("metadata", PT::object)},
        bind(host_update_device));
  m.add("host.notify",
        {optional("kind", PT::non_empty_string), optional("agent_id", PT::string),
         optional("message", PT::string), optional("payload", PT::object)},
        bind(host_notify));
  m.add("host.request_approval",
        {optional("agent_id", PT::non_empty_string), required("title", PT::non_empty_string),
         optional("description", PT::string), optional("context", PT::any),
         optional("required_approvals", PT::non_negative_integer)},
        bind(host_request_approval));
  m.add("host.resolve_approval",
        {required("approval_id", PT::non_empty_string), optional("approved", PT::boolean),
         optional("resolution", PT::string), optional("notes", PT::string)},
        bind(host_resolve_approval));
  MethodOptions register_options;
  register_options.accepts_array_params = true;  // upstream's form: params is the array
  m.add("tools.register", {required("tools", PT::array)}, bind(tools_register),
        register_options);
  m.add("tools.list", {}, bind(tools_list));
  m.add("tools.unregister", {required("name", PT::non_empty_string)}, bind(tools_unregister));
  m.add("tools.invoke",
        {required("tool", PT::non_empty_string), optional("parameters", PT::object),
         optional("timeout_ms", PT::non_negative_integer),
         optional("client_id", PT::non_empty_string)},
        bind(tools_invoke));

  if (service->gate()) server.set_method_gate(service->gate());

  // Teardown, in the order of PROTOCOL.md §3 (the Server runs the phases in order).
  server.add_teardown_step(teardown_order::host_events, [service](Connection& c) {
    service->state().unsubscribe(c.client_id());
  });
  // Nobody else may decide a session-owned approval, so once its owner is gone it would stay
  // pending for good (and its agent waiting_for_approval); deny it instead (PROTOCOL.md §5.2).
  // After the unsubscribe: the departing connection is not sent the approval.resolved events.
  server.add_teardown_step(teardown_order::owned_approvals, [service](Connection& c) {
    auto reaped = service->state().reap_approvals_of(c.client_id());
    if (!reaped.empty()) {
      log_info("host: denied {} pending approval(s) of departed session {}", reaped.size(),
               c.client_id());
    }
  });
  if (auto gate = service->gate()) {
    server.add_teardown_step(teardown_order::gate_waits, [gate](Connection& c) {
      gate->abandon_waits_of(c.client_id());
    });
  }
  server.add_teardown_step(teardown_order::tool_invocations, [service](Connection& c) {
    service->tools().cancel_invocations_of(c);
  });
  server.add_teardown_step(teardown_order::tool_registrations, [service](Connection& c) {
    service->tools().unregister_all(c.client_id());
  });
  return service;
}

}  // namespace car::host
