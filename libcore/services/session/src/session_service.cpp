// session.auth and server.handshake (PROTOCOL.md §3), and the grants they leave on a session.
#include "car/session/session_service.hpp"

#include <atomic>
#include <mutex>

#include <fmt/format.h>

#include "car/connection.hpp"
#include "car/log.hpp"
#include "car/server.hpp"
#include "car/session.hpp"
#include "car/version.hpp"

namespace car::session {
namespace {

// The grants of one session, attached as a typed slot. Handlers on any thread read it while
// session.auth replaces it, so the whole record is swapped under a lock.
class GrantsSlot final : public SessionSlot {
 public:
  Grants get() const {
    std::lock_guard lock(mutex_);
    return grants_;
  }
  // Single fields without copying the whole record (authorization checks read these per call).
  bool host() const {
    std::lock_guard lock(mutex_);
    return grants_.host;
  }
  std::optional<std::string> agent_id() const {
    std::lock_guard lock(mutex_);
    return grants_.agent_id;
  }
  void set(Grants grants) {
    std::lock_guard lock(mutex_);
    grants_ = std::move(grants);
  }

 private:
  mutable std::mutex mutex_;
  Grants grants_;
};

const SessionSlotKey grants_key{"session.grants"};

// Wrong credentials presented on one connection. Guessing is bounded per connection: the attempt
// that reaches the limit is answered, then the connection is closed (1008), so a peer must pay a
// new connection (and its upgrade) for every few guesses instead of ~20,000 guesses a second.
class AuthFailuresSlot final : public SessionSlot {
 public:
  unsigned add() { return failures_.fetch_add(1, std::memory_order_acq_rel) + 1; }

 private:
  std::atomic<unsigned> failures_{0};
};

const SessionSlotKey auth_failures_key{"session.auth_failures"};

const GrantsSlot* find_grants(const Session& session) {
  return static_cast<const GrantsSlot*>(session.find_slot(grants_key));
}

Error auth_failed(std::string_view why) {
  return {ErrorCode::internal_error, fmt::format("auth failed: {}", why)};
}

// A wrong token or host token: answered, and counted toward the connection's limit.
void token_mismatch(const Request& req, const Reply& reply) {
  reply.error(auth_failed("token mismatch"));
  if (req.session().slot<AuthFailuresSlot>(auth_failures_key).add() >= max_failed_auth_attempts) {
    log_info("{}: {} failed auth attempts; closing", req.connection().peer_label(),
             max_failed_auth_attempts);
    // Posted, so that a batch carrying this call still sends its reply before the close.
    req.connection().server().executor().post([connection = req.connection_ptr()] {
      connection->close(1008, "too many failed auth attempts");
    });
  }
}

void session_auth(Server& server, SessionService& service, const Request& req,
                  const Reply& reply) {
  const AuthConfig& config = service.auth();
  const bool enabled = server.config().require_auth;
  const auto& p = req.params();
  auto token = param::string(p, "token");
  auto host_token = param::string(p, "host_token");
  auto agent = param::string(p, "agent_id");
  auto memory_namespace = param::string(p, "memory_namespace");
  if (token && host_token) {
    reply.error(ErrorCode::invalid_params, "invalid params: give token or host_token, not both");
    return;
  }
  Session& session = req.session();
  // Work on a copy: a failure must change nothing (PROTOCOL.md §3).
  Grants next = grants(session);
  // Whether the credential presented proves the identity of `agent` itself (its own token).
  bool agent_proven = false;
  if (!enabled) {
    // Every session already counts as authenticated; session.auth only binds and records.
  } else if (host_token) {
    if (!config.host_token || !constant_time_equal(*host_token, *config.host_token)) {
      token_mismatch(req, reply);
      return;
    }
    next.host = true;
  } else if (token) {
    std::string_view expected = config.token;
    if (agent) {
      if (auto it = config.agent_tokens.find(*agent); it != config.agent_tokens.end()) {
        expected = it->second;
        agent_proven = true;
      }
    }
    if (!constant_time_equal(*token, expected)) {
      token_mismatch(req, reply);
      return;
    }
  } else {
    reply.error(Error::invalid_params("token", "or host_token is required"));
    return;
  }
  // agent_tokens_only: the daemon token (or the host token) admits the session but no longer
  // vouches for an agent id. Checked after the credential, so only a caller that already holds a
  // valid token learns which agent ids have tokens of their own.
  if (enabled && agent && config.agent_tokens_only && !agent_proven) {
    reply.error(auth_failed(fmt::format("agent '{}' needs its own agent token", *agent)));
    return;
  }
  if (agent) {
    auto is_live = [&server](std::string_view holder) {
      auto c = server.find_connection(holder);
      return c && !c->closed();
    };
    if (!service.agent_bindings().bind(*agent, session.client_id(), is_live)) {
      reply.error(ErrorCode::internal_error,
                  fmt::format("agent '{}' is already attached on another connection", *agent));
      return;
    }
    if (next.agent_id && *next.agent_id != *agent) {
      service.agent_bindings().release(*next.agent_id, session.client_id());
    }
    next.agent_id = std::string(*agent);
  }
  if (memory_namespace) next.memory_namespace = std::string(*memory_namespace);
  const bool host = next.host;
  const std::optional<std::string> bound = next.agent_id;
  // Grants first, then the flag: a handler that sees the session authenticated sees its grants.
  session.slot<GrantsSlot>(grants_key).set(std::move(next));
  session.set_authenticated();

  json::Builder out;
  out.begin_object().key("ok").boolean(true).key("auth_enabled").boolean(enabled);
  if (enabled && host) out.key("role").str("host");
  if (bound) out.key("agent_id").str(*bound);
  // Echoed whenever this call gave one, whatever the credential (PROTOCOL.md §3), so a client can
  // see which namespace this session now carries without a second call.
  if (memory_namespace) out.key("memory_namespace").str(*memory_namespace);
  out.end_object();
  reply.ok(out.view());
}

// How a refused protocol_version is shown in -32006: its compact JSON (so the string "2" reads
// `"2"` and is told apart from the integer), cut to a bounded length on a UTF-8 boundary so a
// huge value does not come back in the error; `none` when it is missing or null.
std::string describe_version(const json::Value* value) {
  constexpr std::size_t max_bytes = 64;
  if (value == nullptr || value->IsNull()) return "none";
  std::string text = json::stringify(*value);
  if (text.size() <= max_bytes) return text;
  std::size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  text.resize(cut);
  text.append("\xE2\x80\xA6");  // "…"
  return text;
}

void server_handshake(Server& server, const Request& req, const Reply& reply) {
  const json::Value* value = param::member(req.params(), "protocol_version");
  if (value == nullptr || !value->IsInt64() || value->GetInt64() != protocol_version) {
    // The session keeps whatever it had: a connection that negotiated stays negotiated.
    reply.error(ErrorCode::unsupported_protocol,
                fmt::format("protocol version mismatch: expected {}, got {}", protocol_version,
                            describe_version(value)));
    return;
  }
  req.session().set_handshake_done();
  json::Builder out;
  out.begin_object()
      .key("protocol_version").integer(protocol_version)
      .key("server_version").str(server.config().server_version)
      .key("client_protocol_version").integer(value->GetInt64())
      .end_object();
  reply.ok(out.view());
}

}  // namespace

std::shared_ptr<SessionService> install_session_service(Server& server, AuthConfig auth) {
  auto service = std::make_shared<SessionService>(std::move(auth));
  MethodOptions open;
  open.requires_auth = false;
  server.methods().add(
      "session.auth",
      {optional("token", ParamType::string), optional("host_token", ParamType::string),
       optional("agent_id", ParamType::non_empty_string),
       optional("memory_namespace", ParamType::string)},
      [&server, service](const Request& req, Reply reply) {
        session_auth(server, *service, req, reply);
      },
      open);
  // server.handshake is behind the auth gate like every other method (PROTOCOL.md §3). Its
  // protocol_version is checked by the handler, not the schema: a missing or ill-typed one is a
  // version mismatch (-32006), not -32602.
  server.methods().add(
      "server.handshake", {optional("protocol_version", ParamType::any)},
      [&server](const Request& req, Reply reply) { server_handshake(server, req, reply); });
  std::weak_ptr<SessionService> weak = service;
  server.add_teardown_step(teardown_order::release_agent_binding, [weak](Connection& c) {
    auto live = weak.lock();
    if (!live) return;
    if (auto agent = agent_id(c.session())) live->agent_bindings().release(*agent, c.client_id());
  });
  return service;
}

Grants grants(const Session& session) {
  const GrantsSlot* slot = find_grants(session);
  return slot ? slot->get() : Grants{};
}

bool is_host(const Session& session) {
  const GrantsSlot* slot = find_grants(session);
  return slot && slot->host();
}

std::optional<std::string> agent_id(const Session& session) {
  const GrantsSlot* slot = find_grants(session);
  return slot ? slot->agent_id() : std::nullopt;
}

}  // namespace car::session
