#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "car/export.hpp"
#include "car/frame_sink.hpp"
#include "car/outbound_calls.hpp"
#include "car/session.hpp"

// One peer of the server: the per-connection entry point of PROTOCOL.md §10. A transport (or embedder)
// feeds it complete inbound text messages and tells it when the peer is gone; the connection
// parses, dispatches concurrently, answers through the FrameSink and tears its session down.
//
// Lifetime: created by Server::open_connection, owned by shared_ptrs (the transport holds one;
// in-flight replies hold one). It ends once: when the peer goes away (end()), when the sink ends
// (failure, close), or after finish_input() once in-flight work is answered.
// Threading: every member may be called from any thread, but receive() calls for one connection
// must not overlap (feed messages in order, one at a time).
namespace car {

class Server;

class CAR_API Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Server& server, std::string peer_label, std::shared_ptr<FrameSink> sink);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // ---- inbound (transport side) ----
  // One complete inbound text message (one JSON text or batch). Ignored once the connection is
  // closing. Requests start here, in arrival order; their handlers may finish later.
  void receive(std::string_view text);
  // The transport's framer found garbage it could not turn into a message: answer -32700.
  void framing_error(std::string_view detail);
  // The peer will send nothing more (stdio EOF): answer what is in flight, flush, then close.
  void finish_input();
  // The peer is gone: tear down now.
  void end();

  // ---- identity ----
  Session& session() { return session_; }
  const Session& session() const { return session_; }
  const std::string& client_id() const { return session_.client_id(); }
  const std::string& peer_label() const { return peer_label_; }
  Server& server() const { return server_; }
  FrameSink& sink() const { return *sink_; }
  // For what holds the sink weakly past this call (subscriptions: car/event_stream.hpp).
  const std::shared_ptr<FrameSink>& sink_ptr() const { return sink_; }
  bool closed() const { return session_.closed(); }

  // ---- outbound ----
  // Any frame (events use this). See FrameSink::send.
  SinkError send(Frame frame, SendCompletion done = {},
                 std::chrono::milliseconds deadline = std::chrono::milliseconds{0});
  // A notification {"jsonrpc":"2.0","method":M,"params":P}; `params_json` is a JSON object text.
  SinkError notify(std::string_view method, std::string_view params_json);
  // A server→client request with id "cb-N" (PROTOCOL.md §6). Returns the id, or nothing when it could
  // not be sent (then `callback` never runs). Otherwise `callback` runs exactly once: the peer's
  // result or error, -32004 after `timeout`, or an error when cancelled or the connection closes.
  std::optional<std::string> call(std::string_view method, std::string_view params_json,
                                  std::chrono::milliseconds timeout, CallCallback callback);
  // Like call(), for params that must name the call's own id (tools.execute carries it as
  // `request_id`): `build_params` runs once, synchronously, with the reserved id, before the
  // request is sent (so before `callback` can run), and returns the params JSON object text.
  using ParamsBuilder = std::function<std::string(std::string_view id)>;
  std::optional<std::string> call(std::string_view method, const ParamsBuilder& build_params,
                                  std::chrono::milliseconds timeout, CallCallback callback);
  // Cancels a pending call: its callback runs with `why`. False if it is not pending.
  bool cancel_call(std::string_view id, Error why);
  // Asks the transport to close gracefully after flushing (e.g. after -32001).
  void close(std::uint16_t code, std::string reason);

  // Requests being handled now (batch members and gated waits included).
  std::size_t inflight() const { return inflight_.load(std::memory_order_acquire); }

  // ---- dispatcher internals (used by Reply) ----
  void request_started();  // a counted request: inflight_ and the server's total
  void reply_finished();
  void send_reply_frame(std::string text);

 private:
  struct Batch;
  friend class Server;
  friend struct Dispatch;

  Server& server_;
  const std::string peer_label_;
  std::shared_ptr<FrameSink> sink_;
  Session session_;
  std::shared_ptr<OutboundCalls> calls_;
  std::atomic<std::size_t> inflight_{0};
  std::atomic<bool> input_finished_{false};
  std::atomic<bool> closing_{false};  // stop reading new messages (auth failure, finish_input)
  std::atomic<bool> ended_{false};
};

}  // namespace car
