#include "car/connection.hpp"

#include <fmt/format.h>

#include "car/jsonrpc_text.hpp"
#include "car/log.hpp"
#include "car/random.hpp"
#include "car/server.hpp"
#include "envelope.hpp"
#include "reply_state.hpp"

namespace car {

// The dispatcher: parse → classify → auth → in-flight cap → handshake gate → approval gate →
// route → validate → handler.
// Kept as a friend struct so Connection's header stays small.
struct Dispatch {
  using Batch = detail::BatchCollector;

  static void message(Connection& c, std::string_view text);
  static void member(Connection& c, const json::Value& msg, const std::shared_ptr<Batch>& batch,
                     bool authenticated_at_arrival);
  static void request(Connection& c, const detail::Envelope& env, const json::Value& params,
                      Reply reply, const std::shared_ptr<detail::ReplyState>& state,
                      const std::shared_ptr<Batch>& batch, bool authenticated);
  static void invoke(Connection& c, const Method* method, std::string_view name,
                     const json::Value& params, const Reply& reply);
  static void response(Connection& c, const detail::Envelope& env);
  static void answer(Connection& c, const std::shared_ptr<Batch>& batch, std::string entry) {
    if (batch) {
      batch->member_done(std::move(entry), {});
    } else {
      c.send_reply_frame(std::move(entry));
    }
  }
};

namespace {

const json::Value& empty_object() {
  static const json::Value empty(rapidjson::kObjectType);
  return empty;
}

}  // namespace

Connection::Connection(Server& server, std::string peer_label, std::shared_ptr<FrameSink> sink)
    : server_(server),
      peer_label_(std::move(peer_label)),
      sink_(std::move(sink)),
      session_(uuid_v4()),
      calls_(std::make_shared<OutboundCalls>(server.executor())) {}

Connection::~Connection() = default;

void Connection::receive(std::string_view text) {
  if (closing_.load(std::memory_order_acquire) || closed()) return;
  Dispatch::message(*this, text);
}

void Connection::framing_error(std::string_view detail) {
  if (closed()) return;
  std::string message(messages::parse_error);
  if (!detail.empty()) message = fmt::format("{}: {}", message, detail);
  send_reply_frame(jsonrpc::error("null", {ErrorCode::parse_error, std::move(message)}));
}

void Dispatch::message(Connection& c, std::string_view text) {
  if (text.size() > c.server_.config().max_message) {
    // Transports bound messages before buffering them; this guards embedders that do not.
    c.framing_error("message too large");
    return;
  }
  // Small requests parse entirely inside this stack buffer: no heap allocation for the DOM.
  char value_buffer[4096];
  rapidjson::MemoryPoolAllocator<> allocator(value_buffer, sizeof value_buffer,
                                             64 * 1024,  // RapidJSON's default chunk
                                             &json::shared_crt_allocator());
  json::Document doc(&allocator, 256, &json::shared_crt_allocator());
  if (auto error = json::parse(text, doc, c.server_.config().max_json_depth)) {
    c.framing_error(*error);
    return;
  }
  bool authenticated = c.session_.authenticated() || !c.server_.config().require_auth;
  if (!doc.IsArray()) {
    member(c, doc, nullptr, authenticated);
    return;
  }
  if (doc.Empty()) {
    c.send_reply_frame(jsonrpc::error(
        "null", {ErrorCode::invalid_request, std::string(messages::invalid_request)}));
    return;
  }
  // Every member reports to the collector exactly once; the array goes out after the last.
  auto batch = std::make_shared<Batch>(c.shared_from_this(), doc.Size());
  for (const auto& item : doc.GetArray()) member(c, item, batch, authenticated);
}

void Dispatch::member(Connection& c, const json::Value& msg, const std::shared_ptr<Batch>& batch,
                      bool authenticated) {
  detail::Envelope env = detail::classify(msg);
  switch (env.kind) {
    case detail::MessageKind::invalid:
      answer(c, batch,
             jsonrpc::error(env.id_json, {ErrorCode::invalid_request,
                                                  std::string(messages::invalid_request)}));
      return;
    case detail::MessageKind::response:
      response(c, env);
      if (batch) batch->member_done({}, {});
      return;
    case detail::MessageKind::request:
    case detail::MessageKind::notification:
      break;
  }
  bool notification = env.kind == detail::MessageKind::notification;
  auto state = std::make_shared<detail::ReplyState>(c.shared_from_this(), batch,
                                                    std::move(env.id_json), notification);
  state->request_log = detail::start_request_log(env.method);
  const json::Value& params = env.params != nullptr ? *env.params : empty_object();
  request(c, env, params, Reply(state), state, batch, authenticated);
}

void Dispatch::request(Connection& c, const detail::Envelope& env, const json::Value& params,
                       Reply reply, const std::shared_ptr<detail::ReplyState>& state,
                       const std::shared_ptr<Batch>& batch, bool authenticated) {
  Server& server = c.server_;
  const Method* method = server.methods().find(env.method);
  bool exempt = method != nullptr && !method->options.requires_auth;
  if (!authenticated && !exempt) {
    // Answer (unless a notification), then close once the answer is out (PROTOCOL.md §3).
    c.closing_.store(true, std::memory_order_release);
    if (batch) batch->close_after.store(true);  // before the answer: it may complete the batch
    reply.error(ErrorCode::auth_required, std::string(messages::auth_required));
    if (!batch) c.close(1008, "auth required");
    return;
  }
  if (!reply.is_notification()) {
    if (c.inflight_.load(std::memory_order_acquire) >= server.config().max_inflight) {
      reply.error(ErrorCode::server_busy, std::string(messages::server_busy));
      return;
    }
    c.request_started();
    state->counted = true;
  }
  // The handshake gate (PROTOCOL.md §2) comes before the approval gate and params validation: a
  // call that is refused anyway must neither raise an approval nor be judged on its params.
  if (method != nullptr && method->options.requires_handshake &&
      server.config().require_handshake && !c.session_.handshake_done()) {
    reply.error(ErrorCode::handshake_required,
                fmt::format("protocol handshake required: {} needs server.handshake", env.method));
    return;
  }
  MethodGate* gate = server.method_gate();
  if (gate != nullptr && gate->gates(env.method)) {
    // The handler runs after the gate decides, so it needs its own copy of the params.
    auto held = std::make_shared<json::Document>();
    held->CopyFrom(params, held->GetAllocator());
    std::string name(env.method);
    auto self = c.shared_from_this();
    gate->admit(c, env.method, params,
                [self, held, name, method, reply](std::optional<Error> refusal) {
                  if (refusal) {
                    reply.error(std::move(*refusal));
                    return;
                  }
                  self->server_.executor().post([self, held, name, method, reply] {
                    // Approved just as the connection went away: nobody is left to act for.
                    if (self->closed()) {
                      reply.error(Error::internal("connection closed"));
                      return;
                    }
                    invoke(*self, method, name, *held, reply);
                  });
                });
    return;
  }
  invoke(c, method, env.method, params, reply);
}

void Dispatch::invoke(Connection& c, const Method* method, std::string_view name,
                      const json::Value& params, const Reply& reply) {
  if (method == nullptr) {
    reply.error(ErrorCode::method_not_found, fmt::format("method not found: {}", name));
    return;
  }
  if (params.IsArray() && !method->options.accepts_array_params) {
    reply.error(Error::invalid_params("params", "must be an object"));
    return;
  }
  // ParamSpecs name object members; a method taking an array checks it in its handler.
  if (auto error = params.IsArray() ? std::nullopt : validate_params(params, method->params)) {
    reply.error(std::move(*error));
    return;
  }
  try {
    method->handler(Request(c, name, params), reply);
  } catch (const std::exception& e) {
    reply.error(Error::internal(e.what()));
  } catch (...) {
    reply.error(Error::internal("internal error"));
  }
}

void Dispatch::response(Connection& c, const detail::Envelope& env) {
  if (env.id == nullptr || !env.id->IsString()) {
    log_debug("{}: ignoring a reply with a non-string id {}", c.peer_label_, env.id_json);
    return;
  }
  CallOutcome outcome;
  if (env.error != nullptr) {
    Error error{ErrorCode::internal_error, "error"};
    if (env.error->IsObject()) {
      if (auto code = param::integer(*env.error, "code")) error.code = static_cast<int>(*code);
      if (auto message = param::string(*env.error, "message")) error.message = *message;
      if (const auto* data = param::member(*env.error, "data")) error.data_json = json::stringify(*data);
    }
    outcome.error = std::move(error);
  } else {
    outcome.result_json = json::stringify(*env.result);
  }
  if (!c.calls_->complete(json::view(*env.id), std::move(outcome))) {
    log_debug("{}: ignoring a reply to unknown call {}", c.peer_label_, env.id_json);
  }
}

void Connection::send_reply_frame(std::string text) {
  // Replies are never refused for size (FrameSink::send_reply): every request within the limits
  // is answered. A refusal now means the sink is closing or gone, and the peer with it.
  SinkError result = sink_->send_reply(make_frame(std::move(text)));
  if (result != SinkError::none && result != SinkError::closed) {
    log_warn("{}: a reply could not be queued ({}); closing the connection", peer_label_,
             to_string(result));
    sink_->abort(result, "reply refused");
  }
}

void Connection::request_started() {
  inflight_.fetch_add(1, std::memory_order_acq_rel);
  server_.requests_inflight_.fetch_add(1, std::memory_order_relaxed);
}

void Connection::reply_finished() {
  std::size_t left = inflight_.fetch_sub(1, std::memory_order_acq_rel) - 1;
  server_.requests_inflight_.fetch_sub(1, std::memory_order_relaxed);
  if (left == 0 && input_finished_.load(std::memory_order_acquire)) close(1000, "input finished");
}

void Connection::finish_input() {
  input_finished_.store(true, std::memory_order_release);
  closing_.store(true, std::memory_order_release);
  if (inflight_.load(std::memory_order_acquire) == 0) close(1000, "input finished");
}

void Connection::end() {
  if (ended_.exchange(true, std::memory_order_acq_rel)) return;
  server_.teardown(*this);
}

void Connection::close(std::uint16_t code, std::string reason) {
  closing_.store(true, std::memory_order_release);
  sink_->close(code, std::move(reason));
}

SinkError Connection::send(Frame frame, SendCompletion done, std::chrono::milliseconds deadline) {
  return sink_->send(std::move(frame), std::move(done), deadline);
}

SinkError Connection::notify(std::string_view method, std::string_view params_json) {
  return sink_->send(make_frame(jsonrpc::notification(method, params_json)));
}

std::optional<std::string> Connection::call(std::string_view method, std::string_view params_json,
                                            std::chrono::milliseconds timeout,
                                            CallCallback callback) {
  return call(method, [params_json](std::string_view) { return std::string(params_json); },
              timeout, std::move(callback));
}

std::optional<std::string> Connection::call(std::string_view method,
                                            const ParamsBuilder& build_params,
                                            std::chrono::milliseconds timeout,
                                            CallCallback callback) {
  if (closed()) return std::nullopt;
  std::string id = calls_->begin(timeout, std::move(callback));
  std::string params_json = build_params(id);
  if (sink_->send(make_frame(jsonrpc::request(id, method, params_json))) != SinkError::none) {
    calls_->forget(id);
    return std::nullopt;
  }
  return id;
}

bool Connection::cancel_call(std::string_view id, Error why) {
  return calls_->cancel(id, std::move(why));
}

}  // namespace car
