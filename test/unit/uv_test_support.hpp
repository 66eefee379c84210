#pragma once

// Helpers for the tests of the libuv glue (UvExecutor, the WebSocket, Unix-socket and stdio
// transports): a private loop that is only ever run until a condition holds or a deadline passes
// (never a sleep), a raw libuv stream peer (TCP, Unix socket or pipe) that records every byte it
// reads, and a private temporary directory.

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <uv.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

namespace car::test {

using namespace std::chrono_literals;

// A libuv loop owned by one test. Destroying it runs the close callbacks of everything still
// closing (bounded), then checks that nothing was left open.
class TestLoop {
 public:
  TestLoop() : loop_(new uv_loop_t) {
    // Writing to a socket or pipe the peer closed must be an EPIPE error, not a fatal signal (the
    // library leaves SIGPIPE to its embedder; car-daemon ignores it the same way).
    std::signal(SIGPIPE, SIG_IGN);
    REQUIRE(uv_loop_init(loop_) == 0);
    uv_timer_init(loop_, &deadline_);
    deadline_.data = this;
    // The deadline never keeps the loop alive by itself; it only bounds a blocking poll.
    uv_unref(reinterpret_cast<uv_handle_t*>(&deadline_));
  }
  TestLoop(const TestLoop&) = delete;
  TestLoop& operator=(const TestLoop&) = delete;

  ~TestLoop() {
    // Let what is closing finish (each close callback needs one iteration), at most 5 s.
    arm(5000ms);
    while (!expired_ && uv_run(loop_, UV_RUN_ONCE) != 0) {
    }
    uv_timer_stop(&deadline_);
    uv_close(reinterpret_cast<uv_handle_t*>(&deadline_), nullptr);
    uv_run(loop_, UV_RUN_NOWAIT);
    int open = 0;
    uv_walk(
        loop_,
        [](uv_handle_t* h, void* arg) {
          MESSAGE("handle left open: " << uv_handle_type_name(uv_handle_get_type(h)));
          ++*static_cast<int*>(arg);
        },
        &open);
    CHECK_MESSAGE(open == 0, "the test left libuv handles open");
    if (uv_loop_close(loop_) == 0) {
      delete loop_;
    }  // else: handles still point at the loop; leaking it is the only safe choice
  }

  uv_loop_t* get() const { return loop_; }

  // Runs the loop until `done()` holds, at most `limit`. Returns done() (evaluated again: keep it
  // idempotent). Also returns (false) when nothing is left that could make progress.
  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds limit = 5000ms) {
    if (done()) return true;
    arm(limit);
    bool alive = true;
    while (!done() && !expired_ && alive) alive = uv_run(loop_, UV_RUN_ONCE) != 0;
    uv_timer_stop(&deadline_);
    return done();
  }

  // Runs the loop for `span` (or until nothing is active), for "this must not happen" checks.
  void run_for(std::chrono::milliseconds span) {
    arm(span);
    while (!expired_ && uv_run(loop_, UV_RUN_ONCE) != 0) {
    }
    uv_timer_stop(&deadline_);
  }

  // Active handles of one type (ours excluded), e.g. to see that no timer is left armed.
  int active_handles(uv_handle_type type) {
    struct Count {
      uv_handle_type type;
      const uv_handle_t* skip;
      int n;
    } count{type, reinterpret_cast<const uv_handle_t*>(&deadline_), 0};
    uv_walk(
        loop_,
        [](uv_handle_t* h, void* arg) {
          auto* c = static_cast<Count*>(arg);
          if (h != c->skip && uv_handle_get_type(h) == c->type && uv_is_active(h) &&
              !uv_is_closing(h)) {
            ++c->n;
          }
        },
        &count);
    return count.n;
  }

 private:
  void arm(std::chrono::milliseconds limit) {
    expired_ = false;
    uv_update_time(loop_);
    uv_timer_start(
        &deadline_, [](uv_timer_t* t) { static_cast<TestLoop*>(t->data)->expired_ = true; },
        static_cast<std::uint64_t>(limit.count()), 0);
  }

  uv_loop_t* loop_;
  uv_timer_t deadline_{};
  bool expired_ = false;
};

// One end of a byte stream driven by the test on the loop: connects (TCP or Unix socket) or
// adopts a descriptor (pipe), writes what the test gives it and records everything it reads.
// Its handle is freed in the close callback, so it may be destroyed at any time on the loop thread.
class StreamPeer {
 public:
  StreamPeer(const StreamPeer&) = delete;
  StreamPeer& operator=(const StreamPeer&) = delete;
  ~StreamPeer() { close(); }

  static std::unique_ptr<StreamPeer> connect_tcp(uv_loop_t* loop, const std::string& ip, int port) {
    sockaddr_storage addr{};
    if (ip.find(':') != std::string::npos) {
      REQUIRE(uv_ip6_addr(ip.c_str(), port, reinterpret_cast<sockaddr_in6*>(&addr)) == 0);
    } else {
      REQUIRE(uv_ip4_addr(ip.c_str(), port, reinterpret_cast<sockaddr_in*>(&addr)) == 0);
    }
    auto* tcp = new uv_tcp_t;
    uv_tcp_init(loop, tcp);
    std::unique_ptr<StreamPeer> peer(new StreamPeer(reinterpret_cast<uv_stream_t*>(tcp)));
    int rc = uv_tcp_connect(&peer->state_->connect_req, tcp, reinterpret_cast<sockaddr*>(&addr),
                            &StreamPeer::on_connect);
    if (rc != 0) peer->state_->connect_status = rc;
    return peer;
  }

  static std::unique_ptr<StreamPeer> connect_unix(uv_loop_t* loop, const std::string& path) {
    auto* pipe = new uv_pipe_t;
    uv_pipe_init(loop, pipe, 0);
    std::unique_ptr<StreamPeer> peer(new StreamPeer(reinterpret_cast<uv_stream_t*>(pipe)));
    uv_pipe_connect(&peer->state_->connect_req, pipe, path.c_str(), &StreamPeer::on_connect);
    return peer;
  }

  // Adopts `fd` (a pipe or socketpair end); libuv closes it with the handle.
  static std::unique_ptr<StreamPeer> open_fd(uv_loop_t* loop, int fd) {
    auto* pipe = new uv_pipe_t;
    uv_pipe_init(loop, pipe, 0);
    std::unique_ptr<StreamPeer> peer(new StreamPeer(reinterpret_cast<uv_stream_t*>(pipe)));
    REQUIRE(uv_pipe_open(pipe, fd) == 0);
    peer->state_->connect_status = 0;
    peer->start_reading();
    return peer;
  }

  // 1 while connecting, then 0 or the libuv error.
  int connect_status() const { return state_->connect_status; }
  bool connected() const { return state_->connect_status == 0; }
  // Everything read so far; the test may consume from the front.
  std::string& received() { return state_->received; }
  // The other side closed (EOF or a read error such as ECONNRESET).
  bool eof() const { return state_->eof; }
  int read_status() const { return state_->read_status; }
  std::size_t writes_pending() const { return state_->writes_pending; }

  void write(std::string bytes) {
    REQUIRE(state_ != nullptr);
    auto* w = new WriteReq{{}, std::move(bytes), state_};
    w->req.data = w;
    uv_buf_t buf = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
    ++state_->writes_pending;
    int rc = uv_write(&w->req, state_->stream, &buf, 1, [](uv_write_t* req, int) {
      std::unique_ptr<WriteReq> owned(static_cast<WriteReq*>(req->data));
      --owned->state->writes_pending;
    });
    if (rc != 0) {
      --state_->writes_pending;
      delete w;
      FAIL("uv_write failed: " << uv_strerror(rc));
    }
  }

  // Half-closes the write side once queued writes are out (the other end reads EOF).
  void shutdown_write() {
    auto* req = new uv_shutdown_t;
    if (uv_shutdown(req, state_->stream, [](uv_shutdown_t* r, int) { delete r; }) != 0) delete req;
  }

  void close() {
    if (state_ == nullptr) return;
    uv_close(reinterpret_cast<uv_handle_t*>(state_->stream), [](uv_handle_t* h) {
      auto* state = static_cast<State*>(h->data);
      if (uv_handle_get_type(h) == UV_TCP) {
        delete reinterpret_cast<uv_tcp_t*>(h);
      } else {
        delete reinterpret_cast<uv_pipe_t*>(h);
      }
      delete state;
    });
    state_ = nullptr;
  }

 private:
  // Lives until the handle's close callback, so cancelled requests can still report to it.
  struct State {
    explicit State(uv_stream_t* s) : stream(s) {}
    uv_stream_t* stream;
    uv_connect_t connect_req{};
    std::string received;
    int connect_status = 1;
    int read_status = 0;
    bool eof = false;
    std::size_t writes_pending = 0;
  };
  struct WriteReq {
    uv_write_t req;
    std::string bytes;
    State* state;
  };

  explicit StreamPeer(uv_stream_t* stream) : state_(new State(stream)) {
    stream->data = state_;
    state_->connect_req.data = state_;
  }

  static void on_connect(uv_connect_t* req, int status) {
    auto* state = static_cast<State*>(req->data);
    state->connect_status = status;
    if (status == 0 && !uv_is_closing(reinterpret_cast<uv_handle_t*>(state->stream))) {
      read_start(state->stream);
    }
  }

  void start_reading() { read_start(state_->stream); }

  static void read_start(uv_stream_t* stream) {
    uv_read_start(
        stream,
        [](uv_handle_t*, std::size_t suggested, uv_buf_t* buf) {
          *buf = uv_buf_init(new char[suggested], static_cast<unsigned>(suggested));
        },
        [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
          std::unique_ptr<char[]> owned(buf->base);
          auto* state = static_cast<State*>(s->data);
          if (nread > 0) {
            state->received.append(buf->base, static_cast<std::size_t>(nread));
          } else if (nread < 0) {
            state->eof = true;
            state->read_status = static_cast<int>(nread);
            uv_read_stop(s);
          }
        });
  }

  State* state_;
};

// A private directory under the system temp dir (mkdtemp), removed with everything in it.
class PrivateTempDir {
 public:
  PrivateTempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "carcore-uv-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  PrivateTempDir(const PrivateTempDir&) = delete;
  PrivateTempDir& operator=(const PrivateTempDir&) = delete;
  ~PrivateTempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::string& str() const { return path_; }
  std::string operator/(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

}  // namespace car::test
