// floor-server: the cost floor of carcore's work on one core (issue 14). One thread, one
// level-triggered epoll loop, non-blocking sockets, the real WebSocket upgrade and frame decoding
// (carcore's sans-I/O codec, as ws-prebuilt-server uses), and baseline_rpc for the JSON work:
// RapidJSON parse of every request, dispatch, RapidJSON Writer for every reply and event.
//
// Why epoll and not libuv: the floor is the kernel interface with nothing in between — no
// callback layer, no write-request objects — and libuv is carcore's own choice, which the floor
// must not share if it is to show what that choice costs.
//
// What it leaves out on purpose: bounds (output queues grow without limit, the decoder takes
// messages up to 1 GiB), deadlines, auth, approval, persistence.
//
// Writes: a connection's pending output is a list of segments — its own bytes (replies and
// control frames, framed into one reused string) and shared event batches — sent with one
// writev. Replies to a read go out in one writev after the whole read is handled. Fan-out writes
// each subscriber at once (inside runs.record_turns, before the producer's reply is queued), so
// the order is: fan-out, then the reply; the floor does not persist.
#include "floor_server.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "baseline_rpc.hpp"
#include "bench_net.hpp"
#include "bench_support.hpp"
#include "car/ws/frame_decoder.hpp"
#include "car/ws/frame_encoder.hpp"
#include "car/ws/handshake.hpp"

namespace car_bench {
namespace {

volatile sig_atomic_t g_stop = 0;
char g_read_buffer[256 * 1024];
constexpr std::size_t kMaxMessage = std::size_t{1} << 30;

class FloorServer;

class FloorConn final : public car::ws::FrameHandler, public baseline::Peer {
 public:
  FloorConn(FloorServer& server, int fd)
      : server_(server),
        fd_(fd),
        handshake_(std::make_unique<car::ws::HandshakeParser>()),
        decoder_(car::ws::Role::server, kMaxMessage) {}

  int fd() const { return fd_; }
  bool dead() const { return dead_; }
  void kill() { dead_ = true; }
  bool done() const { return dead_ || (closing_ && out_.empty()); }
  bool wants_write() const { return !out_.empty(); }
  bool epollout = false;

  // Handles what one read returned.
  void feed(std::string_view bytes);
  // Writes pending output (one writev per round) until done or the socket is full.
  void flush();

  void send_text(std::string_view json) override {
    std::array<std::uint8_t, car::ws::max_frame_header> header{};
    std::size_t n = car::ws::encode_frame_header(car::ws::Opcode::text, json.size(), true, header);
    std::string& own = own_tail();
    own.append(reinterpret_cast<const char*>(header.data()), n);
    own.append(json);
  }
  void send_batch(const baseline::SharedBatch& batch) override;

 private:
  struct Segment {
    baseline::SharedBatch batch;  // shared event bytes, or null for `own`
    std::string own;
    std::size_t offset = 0;
    std::string_view bytes() const {
      return batch ? std::string_view(batch->bytes) : std::string_view(own);
    }
  };

  // The connection's own bytes go at the tail of the queue (after any batch already queued).
  std::string& own_tail() {
    if (out_.empty() || out_.back().batch) {
      out_.emplace_back();
      out_.back().own.swap(spare_);  // keep one string's capacity across replies
    }
    return out_.back().own;
  }

  void on_text(std::string_view message) override;
  void on_binary(std::size_t) override {}
  void on_ping(std::string_view payload) override {
    own_tail().append(car::ws::encode_frame(car::ws::Opcode::pong, payload));
  }
  void on_pong(std::string_view) override {}
  void on_close(std::uint16_t code, std::string_view) override {
    own_tail().append(car::ws::encode_close_frame(code == 1005 ? 1000 : code, ""));
    closing_ = true;
  }

  FloorServer& server_;
  int fd_;
  std::unique_ptr<car::ws::HandshakeParser> handshake_;  // freed once upgraded
  car::ws::FrameDecoder decoder_;
  std::deque<Segment> out_;
  std::string spare_;
  bool closing_ = false;
  bool dead_ = false;
  bool in_read_ = false;
};

class FloorServer {
 public:
  explicit FloorServer(int epfd) : epfd_(epfd) {}
  baseline::Rpc rpc;

  void accept_all(int lfd, bool tcp) {
    for (int accepted = 0; accepted < 256; ++accepted) {
      int fd = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      if (tcp) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      }
      auto conn = std::make_unique<FloorConn>(*this, fd);
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLRDHUP;
      ev.data.ptr = conn.get();
      epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
      conns_.emplace(conn.get(), std::move(conn));
    }
  }

  void on_ready(FloorConn& c, std::uint32_t events) {
    if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0U) {
      for (int round = 0; round < 4 && !c.dead(); ++round) {
        ssize_t r = ::read(c.fd(), g_read_buffer, sizeof g_read_buffer);
        if (r > 0) {
          c.feed(std::string_view(g_read_buffer, static_cast<std::size_t>(r)));
          if (static_cast<std::size_t>(r) < sizeof g_read_buffer) break;
          continue;
        }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        doomed(c);  // EOF or error
        break;
      }
    }
    if (!c.dead()) c.flush();
    if (c.done()) doomed(c);
    if (!c.dead()) update_interest(c);
  }

  // A connection that failed inside a fan-out cannot be freed there (the subscriber list is being
  // walked); it is marked and freed by reap() after the event.
  void doomed(FloorConn& c) {
    c.kill();
    if (!reap_.empty() && reap_.back() == &c) return;
    reap_.push_back(&c);
  }
  void reap() {
    for (FloorConn* c : reap_) {
      auto it = conns_.find(c);
      if (it == conns_.end()) continue;
      rpc.forget(*c);
      epoll_ctl(epfd_, EPOLL_CTL_DEL, c->fd(), nullptr);
      ::close(c->fd());
      conns_.erase(it);
    }
    reap_.clear();
  }

  void update_interest(FloorConn& c) {
    bool want = c.wants_write();
    if (want == c.epollout) return;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP | (want ? EPOLLOUT : 0U);
    ev.data.ptr = &c;
    epoll_ctl(epfd_, EPOLL_CTL_MOD, c.fd(), &ev);
    c.epollout = want;
  }

  void close_all() {
    for (auto& [ptr, conn] : conns_) ::close(conn->fd());
    conns_.clear();
  }

 private:
  int epfd_;
  std::unordered_map<FloorConn*, std::unique_ptr<FloorConn>> conns_;
  std::vector<FloorConn*> reap_;
};

void FloorConn::feed(std::string_view bytes) {
  in_read_ = true;
  if (handshake_) {
    auto status = handshake_->feed(bytes);
    if (status == car::ws::HandshakeStatus::need_more) {
      in_read_ = false;
      return;
    }
    if (status == car::ws::HandshakeStatus::rejected) {
      own_tail().append(car::ws::build_reject_response(handshake_->reject_status(),
                                                       handshake_->reject_reason()));
      closing_ = true;
      in_read_ = false;
      return;
    }
    own_tail().append(car::ws::build_accept_response(handshake_->request()));
    std::string leftover(handshake_->leftover());
    handshake_.reset();
    if (!leftover.empty() && decoder_.feed(leftover, *this).has_value()) dead_ = true;
  } else if (decoder_.feed(bytes, *this).has_value()) {
    dead_ = true;
  }
  in_read_ = false;
  if (dead_) server_.doomed(*this);
}

void FloorConn::on_text(std::string_view message) {
  if (!closing_) server_.rpc.handle(*this, message);
}

void FloorConn::send_batch(const baseline::SharedBatch& batch) {
  if (dead_) return;
  out_.push_back(Segment{batch, {}, 0});
  // A subscriber is written at once; the connection being read flushes when its read is done.
  if (!in_read_) {
    flush();
    if (dead_) {
      server_.doomed(*this);
    } else {
      server_.update_interest(*this);
    }
  }
}

void FloorConn::flush() {
  constexpr std::size_t kMaxIov = 64;
  std::array<iovec, kMaxIov> iov{};
  while (!out_.empty()) {
    std::size_t count = 0;
    for (auto it = out_.begin(); it != out_.end() && count < kMaxIov; ++it, ++count) {
      std::string_view b = it->bytes().substr(it->offset);
      iov[count].iov_base = const_cast<char*>(b.data());
      iov[count].iov_len = b.size();
    }
    ssize_t n = ::writev(fd_, iov.data(), static_cast<int>(count));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) dead_ = true;
      return;
    }
    auto left = static_cast<std::size_t>(n);
    while (left > 0 && !out_.empty()) {
      Segment& s = out_.front();
      std::size_t rest = s.bytes().size() - s.offset;
      if (left < rest) {
        s.offset += left;
        break;
      }
      left -= rest;
      if (!s.batch) {
        s.own.clear();
        spare_.swap(s.own);
      }
      out_.pop_front();
    }
    if (!out_.empty() && static_cast<std::size_t>(n) == 0) return;
  }
}

}  // namespace

int run_floor_server(const ServerOptions& options) {
  raise_fd_limit();
  pin_to_cpu(options.cpu);
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_stop = 1; };
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  ServerOptions listen_options = options;
  listen_options.websocket = true;  // the `listening ws://...` line
  std::string url;
  int lfd = listen_socket(listen_options, url);
  if (lfd < 0) return 1;
  const bool tcp = options.unix_path.empty();
  int epfd = epoll_create1(EPOLL_CLOEXEC);
  epoll_event lev{};
  lev.events = EPOLLIN;
  lev.data.ptr = nullptr;
  epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev);
  std::fprintf(stderr, "listening %s\n", url.c_str());

  FloorServer server(epfd);
  const std::uint64_t deadline =
      now_ns() + static_cast<std::uint64_t>(options.max_seconds) * 1000000000ULL;
  std::array<epoll_event, 256> events{};
  while (g_stop == 0 && now_ns() < deadline) {
    int n = epoll_wait(epfd, events.data(), static_cast<int>(events.size()), 200);
    for (int i = 0; i < n; ++i) {
      if (events[static_cast<std::size_t>(i)].data.ptr == nullptr) {
        server.accept_all(lfd, tcp);
        continue;
      }
      auto* c = static_cast<FloorConn*>(events[static_cast<std::size_t>(i)].data.ptr);
      // A connection reaped earlier in this batch of events is not touched again.
      if (c->dead()) continue;
      server.on_ready(*c, events[static_cast<std::size_t>(i)].events);
    }
    server.reap();
  }
  server.close_all();
  ::close(lfd);
  ::close(epfd);
  if (!options.unix_path.empty()) ::unlink(options.unix_path.c_str());
  return 0;
}

}  // namespace car_bench
