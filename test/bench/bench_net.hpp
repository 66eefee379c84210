// car-bench's client plumbing: one epoll loop, connections that frame messages three ways
// (WebSocket client frames, NDJSON lines, Content-Length blocks), connecting over TCP or a Unix
// socket, the client side of the WebSocket upgrade, and spawning a stdio daemon on pipes.
//
// The hot path never allocates once buffers have grown to their working size: inbound bytes go
// through one fixed read buffer, the WebSocket decoder reuses its message buffer, and outbound
// bytes are appended to a per-connection string whose capacity is kept.
//
// Threads: everything is single-threaded; a Loop and its connections belong to one thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "car/ws/frame_decoder.hpp"

namespace car_bench {

enum class Framing { websocket, line, content_length };

class Conn;

// Receives each complete inbound message of a connection.
class MessageHandler {
 public:
  virtual ~MessageHandler() = default;
  virtual void on_message(Conn& conn, std::string_view message) = 0;
  // The peer closed or the connection failed; the connection is no longer polled.
  virtual void on_closed(Conn& conn, std::string_view why) { (void)conn, (void)why; }
};

// One client connection. `rfd` and `wfd` are the same socket, or the two ends of a stdio pair.
class Conn final : private car::ws::FrameHandler {
 public:
  Conn(int rfd, int wfd, Framing framing, MessageHandler* handler, std::size_t index);
  ~Conn() override;
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  // Queues bytes (already framed); they go out at the next flush().
  void queue(std::string_view bytes) { out_.append(bytes); }
  // Writes as much queued output as the socket takes; returns false on a write error.
  bool flush();
  bool want_write() const { return out_off_ < out_.size(); }
  // Reads what is available and delivers complete messages; false on EOF or error.
  bool read_some();

  int rfd() const { return rfd_; }
  int wfd() const { return wfd_; }
  std::size_t index() const { return index_; }
  bool closed() const { return closed_; }
  void mark_closed() { closed_ = true; }
  // Bytes that arrived before the connection was registered (after the 101 response).
  void feed_initial(std::string_view bytes);

  // Per-connection scratch for scenarios.
  std::vector<std::uint64_t> sent_ns;
  std::uint64_t last_cursor = 0;
  std::uint64_t received = 0;
  std::uint64_t missing = 0;
  std::uint64_t duplicates = 0;
  std::uint64_t gaps = 0;
  bool registered_epollout = false;

 private:
  void on_text(std::string_view message) override { handler_->on_message(*this, message); }
  void on_binary(std::size_t) override {}
  void on_ping(std::string_view) override {}
  void on_pong(std::string_view) override {}
  void on_close(std::uint16_t, std::string_view) override { closed_ = true; }
  void deliver(std::string_view bytes);
  void deliver_line(std::string_view bytes);
  void deliver_content_length(std::string_view bytes);

  int rfd_;
  int wfd_;
  Framing framing_;
  MessageHandler* handler_;
  std::size_t index_;
  car::ws::FrameDecoder decoder_;
  std::string in_;  // partial line / Content-Length block (not used for WebSocket)
  std::string out_;
  std::size_t out_off_ = 0;
  bool closed_ = false;
};

// A level-triggered epoll loop over connections.
class Loop {
 public:
  Loop();
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  void add(Conn& conn);
  void remove(Conn& conn);
  // Flushes every connection with queued output (call after queuing outside a callback).
  void flush_all(std::vector<std::unique_ptr<Conn>>& conns);
  // Runs one epoll_wait (up to `timeout_ms`) and handles what it returns; after reading a
  // connection its queued output is flushed. Returns the number of events handled.
  int poll_once(int timeout_ms);

 private:
  void update_write_interest(Conn& conn);
  int epfd_;
};

// A target address: "ws-tcp:HOST:PORT", "ws-unix:PATH", "raw-tcp:HOST:PORT", "raw-unix:PATH".
struct Address {
  bool unix_socket = false;
  std::string host;  // TCP
  int port = 0;      // TCP
  std::string path;  // Unix
};

// Connects (blocking) and returns the fd, or -1 with a message on stderr. `rcvbuf` > 0 sets
// SO_RCVBUF before connecting. TCP sockets get TCP_NODELAY.
int connect_to(const Address& address, int rcvbuf = 0);

// Performs the client side of the WebSocket upgrade on a blocking fd (5 s timeout). Bytes that
// arrived after the 101 response are appended to `leftover`. Returns false on failure.
bool websocket_upgrade(int fd, std::string& leftover);

void set_nonblocking(int fd);

// A daemon speaking JSON-RPC on its stdin/stdout.
struct Child {
  pid_t pid = -1;
  int to_child = -1;    // its stdin
  int from_child = -1;  // its stdout
};

// Forks and execs argv[0] with its stdin/stdout on pipes, pinned to `cpu` if >= 0. Its stderr
// is inherited. Returns pid -1 on failure.
Child spawn_child(const std::vector<std::string>& argv, int cpu);

// Closes the child's stdin (EOF ends a stdio daemon) and waits up to `timeout_ms` for it to exit,
// then SIGKILLs it. Returns its exit status (or -1).
int finish_child(Child& child, int timeout_ms);

// Pins the calling process to `cpu` (>= 0); no-op for -1.
void pin_to_cpu(int cpu);

// Raises RLIMIT_NOFILE to its hard limit.
void raise_fd_limit();

}  // namespace car_bench
