#include "car/ws/ws_connection.hpp"

#include <array>
#include <atomic>
#include <optional>
#include <vector>

#include "car/connection.hpp"
#include "car/log.hpp"
#include "car/queued_frame_sink.hpp"
#include "car/server.hpp"
#include "car/ws/frame_decoder.hpp"
#include "car/ws/frame_encoder.hpp"
#include "car/ws/handshake.hpp"

namespace car::ws {
namespace {

std::atomic<std::size_t> g_live{0};

// Reads are handled synchronously inside the read callback, so one buffer per loop thread serves
// every connection: an idle connection holds no read buffer at all.
constexpr std::size_t read_buffer_size = 64 * 1024;
thread_local std::array<char, read_buffer_size> t_read_buffer;

// After the close frame (or a rejection) is written we half-close and wait this long at most for
// the peer before closing the socket.
constexpr std::uint64_t linger_ms = 2000;

class WsConnection;

// The FrameSink of one WebSocket: each batch becomes one uv_write of header+payload iovecs.
class WsSink final : public QueuedFrameSink {
 public:
  WsSink(Executor& executor, SinkLimits limits, WsConnection* owner)
      : QueuedFrameSink(executor, limits), owner_(owner) {
    req_.data = this;
  }
  // The transport is gone: later batches complete as closed without touching the socket.
  void detach() { owner_ = nullptr; }
  void peer_gone(std::string reason) { transport_ended(SinkError::closed, std::move(reason)); }

 private:
  void start_write(const Batch& batch) override;
  void shut_down_transport(const SinkEnd& end) override;

  WsConnection* owner_;
  uv_write_t req_{};
  std::vector<std::array<std::uint8_t, max_frame_header>> headers_;
  std::vector<uv_buf_t> bufs_;
  std::shared_ptr<QueuedFrameSink> keep_alive_;  // set while req_ is in flight
};

class WsConnection final : public FrameHandler {
 public:
  WsConnection(uv_stream_t* stream, Server& server, std::shared_ptr<const WsOptions> options,
               std::string peer)
      : stream_(stream),
        server_(server),
        options_(std::move(options)),
        peer_(std::move(peer)),
        handshake_(std::make_unique<HandshakeParser>(options_->max_header_bytes)) {
    stream_->data = this;
    timer_ = new uv_timer_t;
    uv_timer_init(stream_->loop, timer_);
    timer_->data = this;
    g_live.fetch_add(1, std::memory_order_relaxed);
  }

  ~WsConnection() override {
    if (sink_) {
      sink_->set_watermarks(0, 0, {});  // its callback points at us
      sink_->detach();
    }
    g_live.fetch_sub(1, std::memory_order_relaxed);
  }

  void start() {
    uv_timer_start(timer_, [](uv_timer_t* t) {
      auto* self = static_cast<WsConnection*>(t->data);
      log_debug("{}: handshake timed out", self->peer_);
      self->close_now();
    }, static_cast<std::uint64_t>(options_->handshake_timeout.count()), 0);
    start_reading();
  }

  // ---- FrameHandler (called from inside decoder_.feed) ----
  void on_text(std::string_view message) override {
    if (connection_) connection_->receive(message);
  }
  void on_binary(std::size_t size) override {
    log_info("{}: ignoring a binary message of {} bytes (reserved for audio)", peer_, size);
  }
  void on_ping(std::string_view payload) override {
    send_control(encode_frame(Opcode::pong, payload), false);
  }
  void on_pong(std::string_view) override { unanswered_pings_ = 0; }
  void on_close(std::uint16_t code, std::string_view) override {
    // Echo the peer's code (1000 when it sent none), after what is already queued.
    close_code_ = code == as_u16(CloseCode::no_status) ? as_u16(CloseCode::normal) : code;
    stop_reading();
    if (sink_) sink_->close(*close_code_, "peer closed");
  }

  // ---- called by WsSink ----
  void write_batch(uv_write_t* req, uv_buf_t* bufs, unsigned count, uv_write_cb cb) {
    int rc = uv_write(req, stream_, bufs, count, cb);
    if (rc != 0) cb(req, rc);
  }

  void on_sink_end(const SinkEnd& end) {
    // The core is done with this connection. Say goodbye with a close frame unless the socket is
    // gone or stuck (a failed or timed-out write: then only a best-effort try).
    sink_->detach();
    stop_reading();
    uv_timer_stop(timer_);
    if (peer_gone_) {
      close_now();
      return;
    }
    std::uint16_t code = close_code_ ? *close_code_ : end.code;
    std::string reason = close_code_ ? std::string() : end.reason;
    std::string frame = encode_close_frame(code, reason);
    if (end.error == SinkError::deadline_exceeded || end.error == SinkError::io_error) {
      uv_buf_t buf = uv_buf_init(frame.data(), static_cast<unsigned>(frame.size()));
      uv_try_write(stream_, &buf, 1);
      close_now();
      return;
    }
    send_control(std::move(frame), true);
  }

 private:
  struct ControlWrite {
    uv_write_t req;
    std::string bytes;
    bool then_shutdown;
  };

  void start_reading() {
    if (reading_ || closing_) return;
    reading_ = true;
    uv_read_start(
        stream_,
        [](uv_handle_t*, std::size_t, uv_buf_t* buf) {
          *buf = uv_buf_init(t_read_buffer.data(), static_cast<unsigned>(t_read_buffer.size()));
        },
        [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
          auto* self = static_cast<WsConnection*>(s->data);
          if (nread > 0) {
            self->on_bytes({buf->base, static_cast<std::size_t>(nread)});
          } else if (nread < 0) {
            self->on_eof(static_cast<int>(nread));
          }
        });
  }

  void stop_reading() {
    if (!reading_) return;
    reading_ = false;
    uv_read_stop(stream_);
  }

  void on_eof(int status) {
    stop_reading();
    peer_gone_ = true;
    if (status != UV_EOF) log_debug("{}: read failed: {}", peer_, uv_strerror(status));
    if (sink_) {
      sink_->peer_gone(status == UV_EOF ? "peer closed the socket" : uv_strerror(status));
    } else {
      close_now();
    }
  }

  void on_bytes(std::string_view bytes) {
    unanswered_pings_ = 0;
    if (handshake_) {
      on_handshake_bytes(bytes);
      return;
    }
    feed_frames(bytes);
  }

  void feed_frames(std::string_view bytes) {
    if (auto error = decoder_->feed(bytes, *this)) {
      log_info("{}: closing with {}: {}", peer_, as_u16(error->code), error->reason);
      close_code_ = as_u16(error->code);
      stop_reading();
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
      case HandshakeStatus::complete:
        break;
    }
    const UpgradeRequest& request = handshake_->request();
    if (!origin_allowed(request, options_->allowed_origins)) {
      reject(403, "origin not allowed");
      return;
    }
    if (options_->max_connections != 0 && server_.connection_count() >= options_->max_connections) {
      reject(503, "too many connections");
      return;
    }
    send_control(build_accept_response(request), false);
    std::string early(handshake_->leftover());
    handshake_.reset();  // frees the header buffers: an idle connection keeps none of it
    open();
    if (!early.empty()) feed_frames(early);
  }

  void open() {
    decoder_.emplace(Role::server, server_.config().max_message);
    sink_ = std::make_shared<WsSink>(server_.executor(), options_->limits, this);
    std::size_t high = options_->read_pause_high ? options_->read_pause_high : options_->limits.max_bytes / 2;
    std::size_t low = options_->read_pause_low ? options_->read_pause_low : options_->limits.max_bytes / 4;
    WsConnection* self = this;
    sink_->set_watermarks(high, low, [self](bool above) {
      if (self->closing_) return;
      if (above) {
        self->stop_reading();
      } else if (!self->peer_gone_ && !self->close_code_) {
        self->start_reading();
      }
    });
    connection_ = server_.open_connection(peer_, sink_);
    uv_timer_stop(timer_);
    if (options_->ping_interval.count() > 0) {
      auto interval = static_cast<std::uint64_t>(options_->ping_interval.count());
      uv_timer_start(timer_, [](uv_timer_t* t) { static_cast<WsConnection*>(t->data)->on_idle(); },
                     interval, interval);
    }
  }

  // Keepalive: any inbound bytes reset the count; two unanswered pings end the connection.
  void on_idle() {
    if (unanswered_pings_ >= options_->missed_pongs) {
      log_info("{}: no pong after {} pings; closing", peer_, unanswered_pings_);
      uv_timer_stop(timer_);
      if (sink_) sink_->close(as_u16(CloseCode::going_away), "ping timeout");
      return;
    }
    ++unanswered_pings_;
    send_control(encode_frame(Opcode::ping, "car"), false);
  }

  void reject(int status, std::string_view reason) {
    log_info("{}: upgrade refused with {}: {}", peer_, status, reason);
    stop_reading();
    uv_timer_stop(timer_);
    send_control(build_reject_response(status, reason), true);
  }

  // Control frames and handshake responses bypass the sink's queue: each is its own uv_write, so
  // it goes out right after whatever libuv already holds, never behind queued data.
  void send_control(std::string bytes, bool then_shutdown) {
    if (closing_) return;
    auto* w = new ControlWrite{{}, std::move(bytes), then_shutdown};
    w->req.data = this;
    uv_buf_t buf = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
    int rc = uv_write(&w->req, stream_, &buf, 1, [](uv_write_t* req, int status) {
      std::unique_ptr<ControlWrite> owned(reinterpret_cast<ControlWrite*>(req));
      auto* self = static_cast<WsConnection*>(req->data);
      if (owned->then_shutdown) self->half_close(status);
    });
    if (rc != 0) {
      delete w;
      close_now();
      return;
    }
    if (then_shutdown) {
      // Bound the goodbye: a peer that never reads must not keep the socket forever.
      uv_timer_start(timer_, [](uv_timer_t* t) { static_cast<WsConnection*>(t->data)->close_now(); },
                     linger_ms, 0);
    }
  }

  void half_close(int write_status) {
    if (closing_) return;
    if (write_status != 0) {
      close_now();
      return;
    }
    auto* req = new uv_shutdown_t;
    req->data = this;
    int rc = uv_shutdown(req, stream_, [](uv_shutdown_t* r, int) {
      auto* self = static_cast<WsConnection*>(r->data);
      delete r;
      self->close_now();
    });
    if (rc != 0) {
      delete req;
      close_now();
    }
  }

  void close_now() {
    if (closing_) return;
    closing_ = true;
    stop_reading();
    if (sink_ && !sink_->is_open()) {
      // Already ending; nothing to tell the core.
    } else if (sink_) {
      peer_gone_ = true;
      sink_->peer_gone("connection closed");
    }
    uv_timer_stop(timer_);
    uv_close(reinterpret_cast<uv_handle_t*>(timer_), [](uv_handle_t* h) {
      auto* self = static_cast<WsConnection*>(h->data);
      delete reinterpret_cast<uv_timer_t*>(h);
      if (--self->handles_open_ == 0) delete self;
    });
    uv_close(reinterpret_cast<uv_handle_t*>(stream_), [](uv_handle_t* h) {
      auto* self = static_cast<WsConnection*>(h->data);
      if (h->type == UV_TCP) {
        delete reinterpret_cast<uv_tcp_t*>(h);
      } else {
        delete reinterpret_cast<uv_pipe_t*>(h);
      }
      if (--self->handles_open_ == 0) delete self;
    });
  }

  uv_stream_t* stream_;
  uv_timer_t* timer_;
  Server& server_;
  std::shared_ptr<const WsOptions> options_;
  std::string peer_;
  std::unique_ptr<HandshakeParser> handshake_;
  std::optional<FrameDecoder> decoder_;
  std::shared_ptr<WsSink> sink_;
  std::shared_ptr<Connection> connection_;
  std::optional<std::uint16_t> close_code_;  // the close code we owe the peer
  unsigned unanswered_pings_ = 0;
  int handles_open_ = 2;  // stream and timer
  bool reading_ = false;
  bool peer_gone_ = false;
  bool closing_ = false;
};

void WsSink::start_write(const Batch& batch) {
  if (owner_ == nullptr) {
    auto self = shared_from_this();
    executor().post([self] { static_cast<WsSink*>(self.get())->write_done(SinkError::closed); });
    return;
  }
  headers_.resize(batch.size());
  bufs_.clear();
  bufs_.reserve(batch.size() * 2);
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const std::string& payload = *batch[i].frame;
    std::size_t n = encode_frame_header(Opcode::text, payload.size(), true, headers_[i]);
    bufs_.push_back(uv_buf_init(reinterpret_cast<char*>(headers_[i].data()), static_cast<unsigned>(n)));
    bufs_.push_back(uv_buf_init(const_cast<char*>(payload.data()), static_cast<unsigned>(payload.size())));
  }
  keep_alive_ = shared_from_this();
  owner_->write_batch(&req_, bufs_.data(), static_cast<unsigned>(bufs_.size()),
                      [](uv_write_t* req, int status) {
                        auto* self = static_cast<WsSink*>(req->data);
                        auto keep = std::move(self->keep_alive_);
                        if (status != 0 && status != UV_ECANCELED) {
                          log_debug("websocket write failed: {}", uv_strerror(status));
                        }
                        self->write_done(status == 0 ? SinkError::none : SinkError::io_error);
                      });
}

void WsSink::shut_down_transport(const SinkEnd& end) {
  if (owner_ != nullptr) owner_->on_sink_end(end);
}

}  // namespace

void serve_websocket(uv_stream_t* stream, Server& server, std::shared_ptr<const WsOptions> options,
                     std::string peer_label) {
  auto* connection = new WsConnection(stream, server, std::move(options), std::move(peer_label));
  connection->start();
}

std::size_t live_websocket_connections() { return g_live.load(std::memory_order_relaxed); }

}  // namespace car::ws
