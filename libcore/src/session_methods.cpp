// session.auth and server.handshake (spec §3).
#include <fmt/format.h>

#include "car/connection.hpp"
#include "car/server.hpp"

namespace car {
namespace {

void session_auth(Server& server, const Request& req, const Reply& reply) {
  const AuthConfig& config = server.config().auth;
  const auto& p = req.params();
  auto token = param::string(p, "token");
  auto host_token = param::string(p, "host_token");
  auto agent_id = param::string(p, "agent_id");
  auto memory_namespace = param::string(p, "memory_namespace");
  if (token && host_token) {
    reply.error(ErrorCode::invalid_params, "invalid params: give token or host_token, not both");
    return;
  }
  Session& session = req.session();
  // Work on a copy: a failure must change nothing (spec §3).
  SessionAuth next = session.auth();
  if (!config.enabled) {
    next.authenticated = true;
  } else if (host_token) {
    if (!config.host_token || !constant_time_equal(*host_token, *config.host_token)) {
      reply.error(ErrorCode::internal_error, "auth failed: token mismatch");
      return;
    }
    next.authenticated = true;
    next.host = true;
  } else if (token) {
    std::string_view expected = config.token;
    if (agent_id) {
      if (auto it = config.agent_tokens.find(*agent_id); it != config.agent_tokens.end()) {
        expected = it->second;
      }
    }
    if (!constant_time_equal(*token, expected)) {
      reply.error(ErrorCode::internal_error, "auth failed: token mismatch");
      return;
    }
    next.authenticated = true;
  } else {
    reply.error(Error::invalid_params("token", "or host_token is required"));
    return;
  }
  if (agent_id) {
    auto is_live = [&server](std::string_view holder) {
      auto c = server.find_connection(holder);
      return c && !c->closed();
    };
    if (!server.agent_bindings().bind(*agent_id, session.client_id(), is_live)) {
      reply.error(ErrorCode::internal_error,
                  fmt::format("agent '{}' is already attached on another connection", *agent_id));
      return;
    }
    if (next.agent_id && *next.agent_id != *agent_id) {
      server.agent_bindings().release(*next.agent_id, session.client_id());
    }
    next.agent_id = std::string(*agent_id);
  }
  if (memory_namespace) next.memory_namespace = std::string(*memory_namespace);
  session.set_auth(next);

  json::Builder out;
  out.begin_object().key("ok").boolean(true).key("auth_enabled").boolean(config.enabled);
  if (config.enabled && next.host) out.key("role").str("host");
  if (next.agent_id) out.key("agent_id").str(*next.agent_id);
  out.end_object();
  reply.ok(out.view());
}

void server_handshake(Server& server, const Request& req, const Reply& reply) {
  long long version = *param::integer(req.params(), "protocol_version");
  if (version != protocol_version) {
    reply.error(ErrorCode::unsupported_protocol, std::string(messages::unsupported_protocol));
    return;
  }
  req.session().set_handshake_done();
  json::Builder out;
  out.begin_object()
      .key("protocol_version").integer(protocol_version)
      .key("server_version").str(server.config().server_version)
      .key("client_protocol_version").integer(version)
      .end_object();
  reply.ok(out.view());
}

}  // namespace

void install_session_methods(Server& server) {
  MethodOptions open;
  open.requires_auth = false;
  server.methods().add(
      "session.auth",
      {optional("token", ParamType::string), optional("host_token", ParamType::string),
       optional("agent_id", ParamType::non_empty_string),
       optional("memory_namespace", ParamType::string)},
      [&server](const Request& req, Reply reply) { session_auth(server, req, reply); }, open);
  server.methods().add(
      "server.handshake", {required("protocol_version", ParamType::integer)},
      [&server](const Request& req, Reply reply) { server_handshake(server, req, reply); }, open);
}

}  // namespace car
