#include "car/stdio/stdio_transport.hpp"

#include "car/connection.hpp"
#include "car/log.hpp"
#include "car/server.hpp"
#include "car/stdio/content_length_framer.hpp"
#include "car/stdio/ndjson_framer.hpp"
#include "car/uv/stream.hpp"
#include "car/uv/stream_sink.hpp"

namespace car::stdio {
namespace {

// "Content-Length: N\r\n\r\n" before each frame, written into the sink's per-frame prefix room
// without allocating a string per frame.
std::size_t content_length_header(std::string_view payload, char* out) {
  return write_content_length_prefix(payload.size(), out);
}

uv::StreamSinkOptions sink_options(const StdioOptions& options) {
  uv::StreamSinkOptions sink;
  sink.limits = options.limits;
  if (options.framing == Framing::content_length) {
    sink.framing.max_prefix = max_content_length_prefix;
    sink.framing.prefix = &content_length_header;
  } else {
    sink.framing.suffix = "\n";
  }
  sink.name = "stdio";
  sink.write_error_level = LogLevel::warn;
  return sink;
}

// One connection over two descriptors: requests are read from `in_` and split by the framer,
// frames are written to `out_` by the sink (TTYs, pipes and regular files alike: uv::Stream hides
// the difference). Owns itself from start() until both streams are closed.
class StdioConnection final : public StdioTransport,
                              public uv::StreamHandler,
                              public FrameEvents,
                              public std::enable_shared_from_this<StdioConnection> {
 public:
  StdioConnection(uv_loop_t* loop, Server& server, StdioOptions options,
                  std::function<void()> on_finished)
      : loop_(loop),
        server_(server),
        options_(options),
        on_finished_(std::move(on_finished)),
        ndjson_(server.config().max_message),
        content_length_(server.config().max_message),
        in_(*this),
        out_(*this) {}

  bool start() {
    self_ = shared_from_this();  // released once every stream is closed
    streams_open_ = 1;
    int rc = in_.open_fd(loop_, options_.input_fd);
    if (rc == 0) {
      streams_open_ = 2;
      rc = out_.open_fd(loop_, options_.output_fd);
    }
    if (rc != 0) {
      log_error("stdio: cannot use fds {}/{} for input/output", options_.input_fd,
                options_.output_fd);
      on_finished_ = nullptr;  // start_stdio reports the failure; on_finished never runs
      close_streams();
      return false;
    }
    sink_ = std::make_shared<uv::StreamSink>(server_.executor(), out_, sink_options(options_),
                                             [this](const SinkEnd& end) {
                                               if (end.failed()) {
                                                 failed_ = true;
                                                 log_error("stdio: output failed ({}): {}",
                                                           to_string(end.error), end.reason);
                                               }
                                               close_streams();
                                             });
    // Backpressure: stop reading while half the sink's byte bound is waiting to be written.
    sink_->throttle_reading(in_);
    connection_ = server_.open_connection("stdio", sink_);
    in_.start_reading();
    return true;
  }

  void stop() override {
    if (!connection_) return;
    in_.stop_reading();
    connection_->close(1001, "shutting down");
  }

  bool failed() const override { return failed_; }

  // ---- FrameEvents ----
  void on_message(std::string_view text) override { connection_->receive(text); }
  void on_framing_error(std::string_view detail) override { connection_->framing_error(detail); }

  // ---- uv::StreamHandler (only in_ is read) ----
  void on_read(uv::Stream&, std::string_view bytes) override {
    if (options_.framing == Framing::ndjson) {
      ndjson_.feed(bytes, *this);
    } else {
      content_length_.feed(bytes, *this);
    }
  }

  // EOF: answer what is in flight, flush, then the connection ends and so do we.
  void on_read_end(uv::Stream&, int status) override {
    if (status != UV_EOF) log_warn("stdio: read failed: {}", uv_strerror(status));
    if (options_.framing == Framing::ndjson) {
      ndjson_.finish(*this);
    } else {
      content_length_.finish(*this);
    }
    connection_->finish_input();
  }

  void on_closed(uv::Stream&) override {
    close_streams();  // a no-op unless a stream closed on its own (a handler threw)
    if (--streams_open_ != 0) return;
    // Report and release on a later turn: we are inside a close callback of our own.
    server_.executor().post([self = std::move(self_)] {
      if (self->on_finished_) self->on_finished_();
    });
  }

 private:
  // The sink has ended (or start failed): close both streams; on_closed counts them.
  void close_streams() {
    if (closing_) return;
    closing_ = true;
    if (sink_) sink_->detach();
    in_.close();
    out_.close();
  }

  uv_loop_t* loop_;
  Server& server_;
  StdioOptions options_;
  std::function<void()> on_finished_;
  NdjsonFramer ndjson_;
  ContentLengthFramer content_length_;
  uv::Stream in_;
  uv::Stream out_;
  std::shared_ptr<uv::StreamSink> sink_;
  std::shared_ptr<Connection> connection_;
  std::shared_ptr<StdioConnection> self_;
  int streams_open_ = 0;  // opened and not yet closed
  bool closing_ = false;
  bool failed_ = false;
};

}  // namespace

std::shared_ptr<StdioTransport> start_stdio(uv_loop_t* loop, Server& server, StdioOptions options,
                                            std::function<void()> on_finished) {
  auto transport =
      std::make_shared<StdioConnection>(loop, server, options, std::move(on_finished));
  if (!transport->start()) return nullptr;
  return transport;
}

}  // namespace car::stdio
