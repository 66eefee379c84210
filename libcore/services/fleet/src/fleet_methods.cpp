// install_fleet_services: the gateway's methods (docs/FLEET.md "Gateway") over FleetGateway, the
// refusal of every write method, and the teardown step. A binding reads its params, calls the
// gateway and answers; the rules live in fleet_gateway.cpp and the JSON in fleet_json.cpp.
#include <fmt/format.h>

#include "car/connection.hpp"
#include "car/fleet/fleet_json.hpp"
#include "car/fleet/fleet_service.hpp"
#include "car/method_registry.hpp"
#include "car/runs/run_service.hpp"
#include "car/server.hpp"
#include "car/session/session_service.hpp"
#include "fleet_gateway.hpp"

namespace car::fleet {

namespace {

using detail::FleetGateway;

std::optional<std::string> opt_string(const json::Value& params, std::string_view name) {
  if (auto s = param::string(params, name); s && !s->empty()) return std::string(*s);
  return std::nullopt;
}

bool may_read_stats(const Server& server, const Session& session) {
  return !server.config().require_auth || session::is_host(session);
}

void runs_list(FleetGateway& g, const Request& request, Reply reply) {
  const json::Value& p = request.params();
  std::optional<std::size_t> limit;
  if (auto l = param::integer(p, "limit")) {
    if (*l < 1) {
      reply.error(Error::invalid_params("limit", "must be a positive integer"));
      return;
    }
    limit = static_cast<std::size_t>(*l);
  }
  g.list(request.connection(), *opt_string(p, "agent_id"), opt_string(p, "host_id"), limit,
         opt_string(p, "before"), std::move(reply));
}

void runs_get_trace(FleetGateway& g, const Request& request, Reply reply) {
  const json::Value& p = request.params();
  auto cursor = static_cast<std::size_t>(param::integer(p, "cursor").value_or(0));
  g.get_trace(request.connection_ptr(), *opt_string(p, "run_id"), opt_string(p, "host_id"), cursor,
              std::move(reply));
}

void runs_subscribe(FleetGateway& g, const Request& request, Reply reply) {
  const json::Value& p = request.params();
  g.subscribe(request.connection_ptr(), *opt_string(p, "run_id"), opt_string(p, "host_id"),
              std::move(reply));
}

void runs_unsubscribe(FleetGateway& g, const Request& request, Reply reply) {
  std::string run_id = *opt_string(request.params(), "run_id");
  bool removed = g.unsubscribe(run_id, request.connection().client_id());
  reply.ok(unsubscribe_result(run_id, removed));
}

void runs_stats(FleetGateway& g, const Request& request, Reply reply) {
  if (!may_read_stats(request.connection().server(), request.session())) {
    reply.error(Error::internal("not authorized for stats"));
    return;
  }
  reply.ok(g.stats_json());
}

void fleet_hosts(FleetGateway& g, const Request& request, Reply reply) {
  if (!may_read_stats(request.connection().server(), request.session())) {
    reply.error(Error::internal("not authorized for fleet hosts"));
    return;
  }
  reply.ok(g.hosts_json());
}

// The viewer's first call: a snapshot in the local shape, with the fleet's agents. No host.event
// follows (host events of many hosts have no common sequence; docs/FLEET.md).
void host_subscribe(FleetGateway& g, const Request&, Reply reply) { reply.ok(g.host_snapshot_json()); }

}  // namespace

Error read_only_error(std::string_view method) {
  return Error::internal(fmt::format(
      "read-only fleet gateway: {} is not served here; call the host's daemon", method));
}

const std::vector<std::string>& refused_methods() {
  static const std::vector<std::string> methods = {
      "runs.start",          "runs.complete",       "runs.record_turns",
      "host.register_agent", "host.unregister_agent", "host.set_status",
      "host.register_device", "host.update_device",  "host.notify",
      "host.request_approval", "host.resolve_approval", "tools.register",
      "tools.unregister",    "tools.invoke",        "tools.list",
  };
  return methods;
}

FleetService::FleetService(std::shared_ptr<detail::FleetGateway> gateway)
    : gateway_(std::move(gateway)) {}

FleetService::~FleetService() = default;

FleetStats FleetService::stats() const { return gateway_->stats(); }

void FleetService::shutdown() { gateway_->shutdown(); }

Result<std::shared_ptr<FleetService>> install_fleet_services(Server& server, FleetConfig config) {
  detail::JetStreamOptions options;
  options.servers = config.servers;
  options.stream = config.stream;
  options.prefix = config.prefix;
  options.request_timeout = config.request_timeout;
  auto reader = detail::JetStreamReader::connect(std::move(options));
  if (!reader) return reader.error();
  auto gateway =
      std::make_shared<FleetGateway>(server, std::move(config), std::move(reader.value()));
  gateway->start_index();

  auto bind = [&gateway](void (*fn)(FleetGateway&, const Request&, Reply)) {
    return [gateway, fn](const Request& request, Reply reply) {
      fn(*gateway, request, std::move(reply));
    };
  };
  auto& methods = server.methods();
  methods.add("runs.list",
              {required("agent_id", ParamType::non_empty_string),
               optional("host_id", ParamType::string),
               optional("limit", ParamType::non_negative_integer),
               optional("before", ParamType::non_empty_string)},
              bind(runs_list));
  methods.add("runs.get_trace",
              {required("run_id", ParamType::non_empty_string),
               optional("host_id", ParamType::string),
               optional("cursor", ParamType::non_negative_integer)},
              bind(runs_get_trace));
  methods.add("runs.subscribe",
              {required("run_id", ParamType::non_empty_string),
               optional("host_id", ParamType::string)},
              bind(runs_subscribe));
  methods.add("runs.unsubscribe", {required("run_id", ParamType::non_empty_string)},
              bind(runs_unsubscribe));
  methods.add("runs.stats", {optional("run_id", ParamType::string)}, bind(runs_stats));
  methods.add("fleet.hosts", {}, bind(fleet_hosts));
  // As the local host.subscribe: behind server.handshake when the server requires it.
  MethodOptions after_handshake;
  after_handshake.requires_handshake = true;
  methods.add("host.subscribe", {}, bind(host_subscribe), after_handshake);
  MethodOptions accepts_array;  // tools.register's upstream array form is refused the same way
  accepts_array.accepts_array_params = true;
  for (const std::string& name : refused_methods()) {
    methods.add(name, {}, [name](const Request&, Reply reply) { reply.error(read_only_error(name)); },
                name == "tools.register" ? accepts_array : MethodOptions{});
  }

  std::weak_ptr<FleetGateway> weak = gateway;
  server.add_teardown_step(runs::teardown_order::run_subscriptions, [weak](Connection& c) {
    if (auto g = weak.lock()) g->remove_client(c.client_id());
  });
  return std::make_shared<FleetService>(gateway);
}

}  // namespace car::fleet
