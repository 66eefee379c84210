#include "car/ws/ws_connection.hpp"

#include <algorithm>
#include <atomic>
#include <optional>
#include <span>

#include "car/connection.hpp"
#include "car/log.hpp"
#include "car/server.hpp"
#include "car/uv/guarded.hpp"
#include "car/uv/stream.hpp"
#include "car/uv/stream_sink.hpp"
#include "car/ws/frame_decoder.hpp"
#include "car/ws/frame_encoder.hpp"
#include "car/ws/handshake.hpp"
#include "tls_stream_filter.hpp"

namespace car::ws {
namespace {

std::atomic<std::size_t> g_live{0};

// After the close frame (or a rejection) is written we half-close and wait this long at most for
// the peer before closing the socket.
constexpr std::uint64_t linger_ms = 2000;

// Every data frame is one unmasked, final text frame; its header is the sink's per-frame prefix.
std::size_t text_frame_header(std::string_view payload, char* out) {
  return encode_frame_header(
      Opcode::text, payload.size(), true,
      std::span<std::uint8_t, max_frame_header>(reinterpret_cast<std::uint8_t*>(out), max_frame_header));
}

uv::StreamSinkOptions sink_options(const WsOptions& options) {
  uv::StreamSinkOptions sink;
  sink.limits = options.limits;
  sink.framing.max_prefix = max_frame_header;
  sink.framing.prefix = &text_frame_header;
  sink.name = "websocket";
  return sink;
}

// One connection: the stream and the timer (handshake timeout, then keepalive pings, then the
// linger after our close frame) are embedded here; the object deletes itself once both are
// closed. Loop thread only.
class WsConnection final : public uv::StreamHandler, public FrameHandler {
 public:
  WsConnection(Server& server, std::shared_ptr<const WsOptions> options,
               std::shared_ptr<PendingUpgrades> pending)
      : server_(server),
        options_(std::move(options)),
        pending_(std::move(pending)),
        stream_(*this),
        handshake_(std::make_unique<HandshakeParser>(options_->max_header_bytes,
                                                     options_->http_handler != nullptr)) {
    g_live.fetch_add(1, std::memory_order_relaxed);
  }

  ~WsConnection() override {
    if (sink_) sink_->detach();
    g_live.fetch_sub(1, std::memory_order_relaxed);
  }

  void start(uv::Listener::Incoming& incoming) {
    uv_timer_init(incoming.loop(), &timer_);
    timer_.data = this;
    if (pending_) pending_id_ = pending_->add([this] { close_now(); });
    if (int rc = incoming.accept(stream_); rc != 0) {
      log_debug("websocket accept failed: {}", uv_strerror(rc));
      close_now();
      return;
    }
    if (incoming.listener().is_tcp()) {
      if (options_->tls) {
        // wss://: every byte from here on goes through TLS (the handshake timer below covers
        // the TLS handshake as well as the HTTP upgrade after it).
        tls_ = std::make_unique<TlsStreamFilter>(options_->tls);
        stream_.set_filter(tls_.get());
      }
      const char* scheme = tls_ ? "wss" : "ws";
      std::string address = stream_.peer_address();
      peer_ = address.empty() ? scheme : std::string(scheme) + " " + address;
      if (options_->http_handler) local_address_ = stream_.local_address();
    } else {
      peer_ = "unix " + incoming.listener().path();
      unix_socket_ = true;
      if (options_->http_handler) local_address_ = "unix:" + incoming.listener().path();
    }
    start_timer(options_->handshake_timeout.count(), 0, [](WsConnection& self) {
      log_debug("{}: handshake timed out", self.peer_);
      self.close_now();
    });
    stream_.start_reading();
  }

  // ---- uv::StreamHandler ----
  void on_read(uv::Stream&, std::string_view bytes) override {
    unanswered_pings_ = 0;
    if (handshake_) {
      on_handshake_bytes(bytes);
      return;
    }
    feed_frames(bytes);
  }

  void on_read_end(uv::Stream&, int status) override {
    peer_gone_ = true;
    if (status == UV_EPROTO && tls_) {
      // A client that cannot or will not speak TLS with us (plaintext, an old protocol, a
      // certificate it rejected): its problem, logged for whoever debugs it, not as a warning.
      log_debug("{}: TLS failed: {}", peer_, tls_->error());
    } else if (status != UV_EOF) {
      log_debug("{}: read failed: {}", peer_, uv_strerror(status));
    }
    if (sink_) {
      sink_->transport_gone(SinkError::closed,
                            status == UV_EOF ? "peer closed the socket" : uv_strerror(status));
    } else {
      close_now();
    }
  }

  void on_closed(uv::Stream&) override {
    close_now();  // a no-op unless the stream closed on its own (a handler threw)
    handle_closed();
  }

  // ---- FrameHandler (called from inside decoder_->feed) ----
  void on_text(std::string_view message) override {
    if (!connection_) return;
    connection_->receive(message);
    raise_limit_once_authenticated();
  }
  void on_binary(std::size_t size) override {
    // Once per connection: a line per ignored frame would let a peer amplify its bytes into logs.
    if (binary_logged_) return;
    binary_logged_ = true;
    log_info("{}: ignoring a binary message of {} bytes (reserved for audio; further ones are "
             "ignored silently)", peer_, size);
  }
  void on_ping(std::string_view payload) override {
    // Through the sink: bounded, under its deadline and read-pausing; a newer pong replaces one
    // that is still waiting, so a ping flood holds one pong however long the peer stops reading.
    if (sink_) sink_->send_control(make_frame(encode_frame(Opcode::pong, payload)));
  }
  void on_pong(std::string_view) override { unanswered_pings_ = 0; }
  void on_close(std::uint16_t code, std::string_view) override {
    // Echo the peer's code (1000 when it sent none), after what is already queued.
    close_code_ = code == as_u16(CloseCode::no_status) ? as_u16(CloseCode::normal) : code;
    stream_.stop_reading();
    if (sink_) sink_->close(*close_code_, "peer closed");
  }

 private:
  using TimerFn = void (*)(WsConnection&);

  void start_timer(std::int64_t timeout_ms, std::uint64_t repeat_ms, TimerFn fn) {
    timer_fn_ = fn;
    uv_timer_start(&timer_, [](uv_timer_t* t) {
      auto* self = static_cast<WsConnection*>(t->data);
      uv::guarded("websocket timer", [self] { self->timer_fn_(*self); });
    }, static_cast<std::uint64_t>(timeout_ms), repeat_ms);
  }

  // The core is done with this connection. Say goodbye with a close frame unless the socket is
  // gone or stuck (a failed or timed-out write: then only a best-effort try).
  void on_sink_end(const SinkEnd& end) {
    sink_->detach();
    stream_.stop_reading();
    uv_timer_stop(&timer_);
    if (peer_gone_) {
      close_now();
      return;
    }
    std::uint16_t code = close_code_ ? *close_code_ : end.code;
    std::string reason = close_code_ ? std::string() : end.reason;
    std::string frame = encode_close_frame(code, reason);
    if (end.error == SinkError::deadline_exceeded || end.error == SinkError::io_error) {
      stream_.try_write(frame);
      close_now();
      return;
    }
    send_control(std::move(frame), true);
  }

  void feed_frames(std::string_view bytes) {
    if (auto error = decoder_->feed(bytes, *this)) {
      log_info("{}: closing with {}: {}", peer_, as_u16(error->code), error->reason);
      close_code_ = as_u16(error->code);
      stream_.stop_reading();
      if (sink_) sink_->abort(SinkError::aborted, error->reason);
    }
  }

  void on_handshake_bytes(std::string_view bytes) {
    switch (handshake_->feed(bytes)) {
      case HandshakeStatus::need_more:
        return;
      case HandshakeStatus::rejected:
        reject(handshake_->reject_status(), handshake_->reject_reason());
        return;
      case HandshakeStatus::plain_http:
        answer_plain_http();
        return;
      case HandshakeStatus::complete:
        break;
    }
    const UpgradeRequest& request = handshake_->request();
    // A page this listener served (it answers plain HTTP: the daemon's viewer) may always connect
    // back to it; every other browser origin follows the allowlist.
    const bool own_page = options_->http_handler && !unix_socket_ &&
                          is_own_page_origin(request, local_address_, tls_ != nullptr);
    if (!own_page &&
        !origin_allowed(request, options_->allowed_origins, options_->unlisted_origins)) {
      reject(403, "origin not allowed");
      return;
    }
    // The cap counts open connections of every transport, checked here at the upgrade so that
    // the client learns why (PROTOCOL.md §1: 503).
    if (options_->max_connections != 0 && server_.connection_count() >= options_->max_connections) {
      reject(503, "too many connections");
      return;
    }
    send_control(build_accept_response(request), false);
    std::string early(handshake_->leftover());
    handshake_.reset();  // frees the header buffers: an idle connection keeps none of it
    leave_pending();  // a connection of the server now: Server::close_all reaches it
    open();
    if (!early.empty()) feed_frames(early);
  }

  // A plain HTTP request (only parsed as one when options_->http_handler is set): the handler's
  // response, or 421 for a Host that is not this machine's, then close. Nothing here re-enters
  // the parser; the connection was never a Server connection.
  void answer_plain_http() {
    stream_.stop_reading();
    uv_timer_stop(&timer_);
    const UpgradeRequest& request = handshake_->request();
    PlainHttpResponse response;
    if (!unix_socket_ && !host_is_local(request.host, local_address_)) {
      log_info("{}: plain HTTP refused with 421: Host is not a name of this machine", peer_);
      response.status = 421;
      response.body = "Host is not a name of this machine\n";
    } else {
      PlainHttpRequest view{request.method, request.target, request.host, local_address_,
                            unix_socket_};
      try {
        response = options_->http_handler(view);
        // The bound is on what the handler made; our own short error bodies are not held to it.
        if (response.body.size() > options_->max_http_response_bytes) {
          log_warn("{}: plain HTTP response of {} bytes exceeds the {} byte bound", peer_,
                   response.body.size(), options_->max_http_response_bytes);
          response =
              PlainHttpResponse{500, "text/plain; charset=utf-8", "response too large\n", {}};
        }
      } catch (const std::exception& e) {
        log_warn("{}: plain HTTP handler failed: {}", peer_, e.what());
        response = PlainHttpResponse{500, "text/plain; charset=utf-8", "internal error\n", {}};
      } catch (...) {  // an embedder's handler may throw anything; it must not reach libuv
        log_warn("{}: plain HTTP handler failed with a non-standard exception", peer_);
        response = PlainHttpResponse{500, "text/plain; charset=utf-8", "internal error\n", {}};
      }
      log_debug("{}: {} {} -> {}", peer_, request.method, request.target, response.status);
    }
    std::string bytes = build_http_response(response, request.method == "HEAD");
    handshake_.reset();
    send_control(std::move(bytes), true);
  }

  void open() {
    const std::size_t max_message = server_.config().max_message;
    decoder_.emplace(Role::server, server_.config().require_auth
                                       ? std::min(max_message, options_->max_unauthenticated_message)
                                       : max_message);
    sink_ = std::make_shared<uv::StreamSink>(server_.executor(), stream_, sink_options(*options_),
                                             [this](const SinkEnd& end) { on_sink_end(end); });
    // Backpressure: stop reading above read_pause_high queued bytes (default 4 MiB), resume at
    // read_pause_low (2 MiB).
    sink_->throttle_reading(stream_, options_->read_pause_high, options_->read_pause_low);
    connection_ = server_.open_connection(peer_, sink_);
    uv_timer_stop(&timer_);
    if (options_->ping_interval.count() > 0) {
      auto interval = static_cast<std::uint64_t>(options_->ping_interval.count());
      start_timer(options_->ping_interval.count(), interval, [](WsConnection& self) { self.on_idle(); });
    }
  }

  // An authenticated peer may send messages up to the server's max_message from its next one on.
  void raise_limit_once_authenticated() {
    if (limit_raised_ || !decoder_ || !connection_->session().authenticated()) return;
    limit_raised_ = true;
    decoder_->raise_max_message(server_.config().max_message);
  }

  // Keepalive: any inbound bytes reset the count; two unanswered pings end the connection.
  void on_idle() {
    if (unanswered_pings_ >= options_->missed_pongs) {
      log_info("{}: no pong after {} pings; closing", peer_, unanswered_pings_);
      uv_timer_stop(&timer_);
      if (sink_) sink_->close(as_u16(CloseCode::going_away), "ping timeout");
      return;
    }
    ++unanswered_pings_;
    send_control(encode_frame(Opcode::ping, "car"), false);
  }

  void reject(int status, std::string_view reason) {
    log_info("{}: upgrade refused with {}: {}", peer_, status, reason);
    stream_.stop_reading();
    uv_timer_stop(&timer_);
    send_control(build_reject_response(status, reason), true);
  }

  // Handshake responses, keepalive pings and the final close frame bypass the sink's queue: each
  // is its own uv_write. Each is bounded by itself (one per connection, or one per ping
  // interval); pongs, which the peer decides the number of, go through the sink (on_ping).
  void send_control(std::string bytes, bool then_shutdown) {
    if (closing_) return;
    uv::Stream::Done done;
    if (then_shutdown) done = [this](int status) { half_close(status); };
    if (stream_.write(std::move(bytes), std::move(done)) != 0) {
      close_now();
      return;
    }
    if (then_shutdown) {
      // Bound the goodbye: a peer that never reads must not keep the socket forever.
      start_timer(linger_ms, 0, [](WsConnection& self) { self.close_now(); });
    }
  }

  void half_close(int write_status) {
    if (closing_) return;
    if (write_status != 0 || stream_.shutdown([this](int) { close_now(); }) != 0) close_now();
  }

  void leave_pending() {
    if (pending_) pending_->remove(pending_id_);
    pending_.reset();
  }

  void close_now() {
    if (closing_) return;
    closing_ = true;
    leave_pending();
    if (sink_ && sink_->is_open()) {
      peer_gone_ = true;
      sink_->transport_gone(SinkError::closed, "connection closed");
    }
    if (sink_) sink_->detach();  // a flush still pending completes as closed
    stream_.close();
    uv_timer_stop(&timer_);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), [](uv_handle_t* h) {
      static_cast<WsConnection*>(h->data)->handle_closed();
    });
  }

  void handle_closed() {
    if (--handles_open_ == 0) delete this;
  }

  Server& server_;
  std::shared_ptr<const WsOptions> options_;
  std::shared_ptr<PendingUpgrades> pending_;  // null once upgraded (or closing)
  PendingUpgrades::Id pending_id_ = 0;
  std::unique_ptr<TlsStreamFilter> tls_;  // wss:// only; must outlive stream_'s on_closed
  uv::Stream stream_;
  uv_timer_t timer_{};
  TimerFn timer_fn_ = nullptr;
  std::string peer_;
  std::string local_address_;  // for plain HTTP's Host check: "IP:PORT", or "unix:PATH"
  bool unix_socket_ = false;
  std::unique_ptr<HandshakeParser> handshake_;
  std::optional<FrameDecoder> decoder_;
  std::shared_ptr<uv::StreamSink> sink_;
  std::shared_ptr<Connection> connection_;
  std::optional<std::uint16_t> close_code_;  // the close code we owe the peer
  unsigned unanswered_pings_ = 0;
  int handles_open_ = 2;  // stream and timer
  bool peer_gone_ = false;
  bool closing_ = false;
  bool binary_logged_ = false;
  bool limit_raised_ = false;
};

}  // namespace

void serve_websocket(uv::Listener::Incoming& incoming, Server& server,
                     std::shared_ptr<const WsOptions> options,
                     std::shared_ptr<PendingUpgrades> pending) {
  (new WsConnection(server, std::move(options), std::move(pending)))->start(incoming);
}

std::size_t live_websocket_connections() { return g_live.load(std::memory_order_relaxed); }

uv::ListenerOptions websocket_listener_options(const WsOptions& options) {
  uv::ListenerOptions listen;
  if (options.max_connections == 0) return listen;
  listen.max_connections = options.max_connections + options.max_pending_upgrades;
  listen.open_connections = [] { return live_websocket_connections(); };
  return listen;
}

}  // namespace car::ws
