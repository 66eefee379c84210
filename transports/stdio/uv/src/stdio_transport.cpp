#include "car/stdio/stdio_transport.hpp"

#include <array>
#include <cstdio>
#include <string>
#include <variant>
#include <vector>

#include "car/connection.hpp"
#include "car/log.hpp"
#include "car/queued_frame_sink.hpp"
#include "car/server.hpp"
#include "car/stdio/content_length_framer.hpp"
#include "car/stdio/ndjson_framer.hpp"

namespace car::stdio {
namespace {

constexpr std::size_t read_chunk = 64 * 1024;

// A descriptor seen through libuv: a stream (pipe, socket, tty) or a plain file/device, which
// libuv can only reach through its fs requests (run on the pool).
struct Endpoint {
  int fd = -1;
  bool is_stream = false;
  uv_stream_t* stream = nullptr;  // owned; freed in its close callback
};

// Opens `fd` as a libuv stream when it is one. Returns false for a descriptor libuv cannot use.
bool open_endpoint(uv_loop_t* loop, int fd, Endpoint& out) {
  out.fd = fd;
  switch (uv_guess_handle(fd)) {
    case UV_TTY: {
      auto* tty = new uv_tty_t;
      if (uv_tty_init(loop, tty, fd, 0) != 0) {
        delete tty;
        return false;
      }
      out.stream = reinterpret_cast<uv_stream_t*>(tty);
      out.is_stream = true;
      return true;
    }
    case UV_NAMED_PIPE: {
      auto* pipe = new uv_pipe_t;
      uv_pipe_init(loop, pipe, 0);
      if (uv_pipe_open(pipe, fd) != 0) {
        uv_close(reinterpret_cast<uv_handle_t*>(pipe),
                 [](uv_handle_t* h) { delete reinterpret_cast<uv_pipe_t*>(h); });
        return false;
      }
      out.stream = reinterpret_cast<uv_stream_t*>(pipe);
      out.is_stream = true;
      return true;
    }
    case UV_FILE:
      out.is_stream = false;
      return true;
    default:
      return false;
  }
}

class StdioConnection;

// Writes frames to the output endpoint: one uv_write (or uv_fs_write) per batch, each frame
// followed by "\n" (NDJSON) or preceded by its Content-Length header.
class StdioSink final : public QueuedFrameSink {
 public:
  StdioSink(Executor& executor, SinkLimits limits, uv_loop_t* loop, Endpoint out, Framing framing,
            std::function<void()> on_shut_down)
      : QueuedFrameSink(executor, limits),
        loop_(loop),
        out_(out),
        framing_(framing),
        on_shut_down_(std::move(on_shut_down)) {
    write_req_.data = this;
    fs_req_.data = this;
  }

 private:
  void start_write(const Batch& batch) override {
    bufs_.clear();
    headers_.clear();
    headers_.reserve(batch.size());
    static const char newline = '\n';
    for (const auto& p : batch) {
      if (framing_ == Framing::content_length) {
        headers_.push_back(content_length_prefix(p.frame->size()));
        bufs_.push_back(uv_buf_init(headers_.back().data(),
                                    static_cast<unsigned>(headers_.back().size())));
      }
      bufs_.push_back(uv_buf_init(const_cast<char*>(p.frame->data()),
                                  static_cast<unsigned>(p.frame->size())));
      if (framing_ == Framing::ndjson) bufs_.push_back(uv_buf_init(const_cast<char*>(&newline), 1));
    }
    if (out_.is_stream) {
      int rc = uv_write(&write_req_, out_.stream, bufs_.data(), static_cast<unsigned>(bufs_.size()),
                        [](uv_write_t* req, int status) {
                          static_cast<StdioSink*>(req->data)->finished(status);
                        });
      if (rc != 0) finished(rc);
    } else {
      write_file_from(0);
    }
  }

  // Files may take a partial write: continue from the first unwritten byte.
  void write_file_from(std::size_t first_buf) {
    file_first_buf_ = first_buf;
    keep_alive_ = shared_from_this();  // the fs request lives in this object
    int rc = uv_fs_write(loop_, &fs_req_, out_.fd, bufs_.data() + first_buf,
                         static_cast<unsigned>(bufs_.size() - first_buf), -1, [](uv_fs_t* req) {
                           auto* self = static_cast<StdioSink*>(req->data);
                           auto keep_alive = std::move(self->keep_alive_);
                           auto result = req->result;
                           uv_fs_req_cleanup(req);
                           self->file_written(result);
                         });
    if (rc != 0) {
      keep_alive_.reset();
      finished(rc);
    }
  }

  void file_written(ssize_t result) {
    if (result < 0) {
      finished(static_cast<int>(result));
      return;
    }
    auto left = static_cast<std::size_t>(result);
    std::size_t i = file_first_buf_;
    while (i < bufs_.size() && left >= bufs_[i].len) left -= bufs_[i++].len;
    if (i == bufs_.size()) {
      finished(0);
      return;
    }
    bufs_[i].base += left;
    bufs_[i].len -= static_cast<unsigned>(left);
    write_file_from(i);
  }

  void finished(int status) {
    if (status != 0) log_warn("stdio: write to output failed: {}", uv_strerror(status));
    // Keep this sink alive across write_done (it may end the sink and drop other references).
    auto self = shared_from_this();
    write_done(status == 0 ? SinkError::none : SinkError::io_error);
  }

  void shut_down_transport(const SinkEnd&) override {
    if (on_shut_down_) {
      auto fn = std::move(on_shut_down_);
      on_shut_down_ = nullptr;
      fn();
    }
  }

  uv_loop_t* loop_;
  Endpoint out_;
  Framing framing_;
  std::function<void()> on_shut_down_;
  uv_write_t write_req_{};
  uv_fs_t fs_req_{};
  std::vector<uv_buf_t> bufs_;
  std::vector<std::string> headers_;
  std::size_t file_first_buf_ = 0;
  std::shared_ptr<QueuedFrameSink> keep_alive_;  // set while a file write is in flight
};

class StdioConnection final : public StdioTransport,
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
        content_length_(server.config().max_message) {
    read_req_.data = this;
  }

  bool start() {
    if (!open_endpoint(loop_, options_.input_fd, in_) ||
        !open_endpoint(loop_, options_.output_fd, out_)) {
      log_error("stdio: cannot use fds {}/{} for input/output", options_.input_fd,
                options_.output_fd);
      return false;
    }
    self_ = shared_from_this();  // released once every handle is closed
    handles_open_ = (in_.is_stream ? 1 : 0) + (out_.is_stream ? 1 : 0);
    if (in_.is_stream) in_.stream->data = this;
    if (out_.is_stream) out_.stream->data = this;
    sink_ = std::make_shared<StdioSink>(server_.executor(), options_.limits, loop_, out_,
                                        options_.framing, [this] { close_handles(); });
    // Backpressure: stop reading while half the sink's byte bound is waiting to be written.
    sink_->set_watermarks(options_.limits.max_bytes / 2, options_.limits.max_bytes / 4,
                          [this](bool above) { above ? pause_reading() : resume_reading(); });
    connection_ = server_.open_connection("stdio", sink_);
    resume_reading();
    return true;
  }

  void stop() override {
    if (!connection_) return;
    pause_reading();
    connection_->close(1001, "shutting down");
  }

  // FrameEvents
  void on_message(std::string_view text) override { connection_->receive(text); }
  void on_framing_error(std::string_view detail) override { connection_->framing_error(detail); }

 private:
  void feed(std::string_view bytes) {
    if (options_.framing == Framing::ndjson) {
      ndjson_.feed(bytes, *this);
    } else {
      content_length_.feed(bytes, *this);
    }
  }

  void on_eof() {
    if (eof_) return;
    eof_ = true;
    pause_reading();
    if (options_.framing == Framing::ndjson) {
      ndjson_.finish(*this);
    } else {
      content_length_.finish(*this);
    }
    connection_->finish_input();
  }

  void pause_reading() {
    paused_ = true;
    if (in_.is_stream && reading_) {
      uv_read_stop(in_.stream);
      reading_ = false;
    }
  }

  void resume_reading() {
    if (eof_ || closing_) return;
    paused_ = false;
    if (in_.is_stream) {
      if (reading_) return;
      reading_ = true;
      uv_read_start(
          in_.stream,
          [](uv_handle_t* h, std::size_t, uv_buf_t* buf) {
            auto* self = static_cast<StdioConnection*>(h->data);
            *buf = uv_buf_init(self->buffer_.data(), static_cast<unsigned>(self->buffer_.size()));
          },
          [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
            auto* self = static_cast<StdioConnection*>(s->data);
            if (nread > 0) {
              self->feed({buf->base, static_cast<std::size_t>(nread)});
            } else if (nread < 0) {
              if (nread != UV_EOF) log_warn("stdio: read failed: {}", uv_strerror(static_cast<int>(nread)));
              self->on_eof();
            }
          });
    } else if (!file_read_pending_) {
      read_file();
    }
  }

  void read_file() {
    file_read_pending_ = true;
    uv_buf_t buf = uv_buf_init(buffer_.data(), static_cast<unsigned>(buffer_.size()));
    int rc = uv_fs_read(loop_, &read_req_, in_.fd, &buf, 1, -1, [](uv_fs_t* req) {
      auto* self = static_cast<StdioConnection*>(req->data);
      auto result = req->result;
      uv_fs_req_cleanup(req);
      self->file_read_pending_ = false;
      if (result > 0) {
        self->feed({self->buffer_.data(), static_cast<std::size_t>(result)});
        if (!self->paused_ && !self->eof_ && !self->closing_) self->read_file();
      } else {
        if (result < 0) log_warn("stdio: read failed: {}", uv_strerror(static_cast<int>(result)));
        self->on_eof();
      }
      self->maybe_finish();
    });
    if (rc != 0) {
      file_read_pending_ = false;
      on_eof();
    }
  }

  // The sink has ended: close our handles; when all are closed, report and release ourselves.
  void close_handles() {
    if (closing_) return;
    closing_ = true;
    pause_reading();
    auto close_one = [](Endpoint& e) {
      if (!e.is_stream || e.stream == nullptr) return;
      uv_close(reinterpret_cast<uv_handle_t*>(e.stream), [](uv_handle_t* h) {
        auto* self = static_cast<StdioConnection*>(h->data);
        if (h->type == UV_TTY) {
          delete reinterpret_cast<uv_tty_t*>(h);
        } else {
          delete reinterpret_cast<uv_pipe_t*>(h);
        }
        --self->handles_open_;
        self->maybe_finish();
      });
      e.stream = nullptr;
    };
    close_one(in_);
    close_one(out_);
    maybe_finish();
  }

  void maybe_finish() {
    if (!closing_ || handles_open_ != 0 || file_read_pending_ || finished_) return;
    finished_ = true;
    // Release on a later turn: we may be inside one of our own callbacks.
    server_.executor().post([self = std::move(self_)] {
      if (self->on_finished_) self->on_finished_();
    });
  }

  uv_loop_t* loop_;
  Server& server_;
  StdioOptions options_;
  std::function<void()> on_finished_;
  NdjsonFramer ndjson_;
  ContentLengthFramer content_length_;
  Endpoint in_;
  Endpoint out_;
  std::shared_ptr<StdioSink> sink_;
  std::shared_ptr<Connection> connection_;
  std::shared_ptr<StdioConnection> self_;
  std::array<char, read_chunk> buffer_{};
  uv_fs_t read_req_{};
  int handles_open_ = 0;
  bool reading_ = false;
  bool paused_ = false;
  bool eof_ = false;
  bool closing_ = false;
  bool finished_ = false;
  bool file_read_pending_ = false;
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
