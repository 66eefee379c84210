// The two baseline servers of car-bench, both single-threaded epoll loops:
//
//   echo-server         the floor: reads NDJSON request lines and answers each with the fixed
//                       reply line (its id patched in), no JSON, no WebSocket.
//   ws-prebuilt-server  transport-only WebSocket: the real upgrade (carcore's sans-I/O
//                       HandshakeParser) and frame decoding (FrameDecoder), then every text frame
//                       is answered with one pre-encoded reply frame (its id patched in).
//
// Both copy the 6-digit request id (the requests car-bench sends have it at a fixed offset) into
// the reply, so the client can match replies exactly as it does with car-daemon.
#include "bench_servers.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_map>

#include "bench_net.hpp"
#include "bench_support.hpp"
#include "car/ws/frame_decoder.hpp"
#include "car/ws/frame_encoder.hpp"
#include "car/ws/handshake.hpp"

namespace car_bench {
namespace {

volatile sig_atomic_t g_stop = 0;

char g_server_buffer[256 * 1024];

struct ServerConn final : car::ws::FrameHandler {
  int fd = -1;
  bool websocket = false;
  bool upgraded = false;
  bool closing = false;
  bool epollout = false;
  std::unique_ptr<car::ws::HandshakeParser> handshake;
  std::unique_ptr<car::ws::FrameDecoder> decoder;
  std::string partial;  // raw mode: the unfinished request line
  std::string out;
  std::size_t out_off = 0;
  const std::string* reply_frame = nullptr;  // websocket: the pre-encoded reply frame
  std::size_t reply_id_offset = 0;
  const std::string* reply_line = nullptr;  // raw mode

  void answer(std::string_view request) {
    const std::string& reply = websocket ? *reply_frame : *reply_line;
    std::size_t at = out.size();
    out.append(reply);
    std::size_t id_at = websocket ? reply_id_offset : kIdOffset;
    if (request.size() >= kIdOffset + kIdDigits) {
      std::memcpy(out.data() + at + id_at, request.data() + kIdOffset, kIdDigits);
    }
  }
  void on_text(std::string_view message) override { answer(message); }
  void on_binary(std::size_t) override {}
  void on_ping(std::string_view payload) override {
    out.append(car::ws::encode_frame(car::ws::Opcode::pong, payload));
  }
  void on_pong(std::string_view) override {}
  void on_close(std::uint16_t code, std::string_view) override {
    out.append(car::ws::encode_close_frame(code == 1005 ? 1000 : code, ""));
    closing = true;
  }

  void feed_raw(std::string_view bytes) {
    if (!partial.empty()) {
      auto nl = bytes.find('\n');
      if (nl == std::string_view::npos) {
        partial.append(bytes);
        return;
      }
      partial.append(bytes.substr(0, nl));
      answer(partial);
      partial.clear();
      bytes.remove_prefix(nl + 1);
    }
    while (!bytes.empty()) {
      auto nl = bytes.find('\n');
      if (nl == std::string_view::npos) {
        partial.append(bytes);
        return;
      }
      answer(bytes.substr(0, nl));
      bytes.remove_prefix(nl + 1);
    }
  }

  // Returns false when the connection should be closed.
  bool feed(std::string_view bytes) {
    if (!websocket) {
      feed_raw(bytes);
      return true;
    }
    if (!upgraded) {
      auto status = handshake->feed(bytes);
      if (status == car::ws::HandshakeStatus::need_more) return true;
      if (status == car::ws::HandshakeStatus::rejected) {
        out.append(car::ws::build_reject_response(handshake->reject_status(),
                                                  handshake->reject_reason()));
        closing = true;
        return true;
      }
      out.append(car::ws::build_accept_response(handshake->request()));
      upgraded = true;
      std::string leftover(handshake->leftover());
      handshake.reset();
      if (leftover.empty()) return true;
      bytes = leftover;
      return !decoder->feed(bytes, *this).has_value();
    }
    return !decoder->feed(bytes, *this).has_value();
  }

  bool flush() {
    while (out_off < out.size()) {
      ssize_t n = ::write(fd, out.data() + out_off, out.size() - out_off);
      if (n > 0) {
        out_off += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
      return false;
    }
    out.clear();
    out_off = 0;
    return true;
  }
};

}  // namespace

int listen_socket(const ServerOptions& options, std::string& url) {
  int fd = -1;
  if (!options.unix_path.empty()) {
    ::unlink(options.unix_path.c_str());
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (options.unix_path.size() >= sizeof sa.sun_path) return -1;
    std::memcpy(sa.sun_path, options.unix_path.c_str(), options.unix_path.size() + 1);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      std::perror("bind");
      return -1;
    }
    url = "unix:" + options.unix_path;
  } else {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<std::uint16_t>(options.tcp_port));
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      std::perror("bind");
      return -1;
    }
    socklen_t len = sizeof sa;
    getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
    url = (options.websocket ? "ws://127.0.0.1:" : "tcp:127.0.0.1:") +
          std::to_string(ntohs(sa.sin_port));
  }
  if (::listen(fd, 4096) != 0) {
    std::perror("listen");
    return -1;
  }
  return fd;
}

int run_server(const ServerOptions& options) {
  raise_fd_limit();
  pin_to_cpu(options.cpu);
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_stop = 1; };
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  std::string url;
  int lfd = listen_socket(options, url);
  if (lfd < 0) return 1;

  // The fixed replies.
  const std::string reply_line = std::string(kReply) + "\n";
  const std::string reply_frame = car::ws::encode_frame(car::ws::Opcode::text, kReply);
  const std::size_t reply_id_offset = reply_frame.size() - std::strlen(kReply) + kIdOffset;

  int epfd = epoll_create1(EPOLL_CLOEXEC);
  epoll_event lev{};
  lev.events = EPOLLIN;
  lev.data.ptr = nullptr;
  epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev);
  std::fprintf(stderr, "listening %s\n", url.c_str());

  std::unordered_map<int, std::unique_ptr<ServerConn>> conns;
  auto drop = [&](ServerConn* c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, nullptr);
    ::close(c->fd);
    conns.erase(c->fd);
  };
  std::uint64_t deadline = now_ns() + static_cast<std::uint64_t>(options.max_seconds) * 1000000000ULL;
  epoll_event events[256];
  while (g_stop == 0 && now_ns() < deadline) {
    int n = epoll_wait(epfd, events, 256, 200);
    for (int i = 0; i < n; ++i) {
      if (events[i].data.ptr == nullptr) {
        for (int accepted = 0; accepted < 256; ++accepted) {
          int fd = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) break;
          if (options.unix_path.empty()) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          }
          auto c = std::make_unique<ServerConn>();
          c->fd = fd;
          c->websocket = options.websocket;
          c->reply_frame = &reply_frame;
          c->reply_id_offset = reply_id_offset;
          c->reply_line = &reply_line;
          if (c->websocket) {
            c->handshake = std::make_unique<car::ws::HandshakeParser>();
            c->decoder = std::make_unique<car::ws::FrameDecoder>(car::ws::Role::server,
                                                                 16 * 1024 * 1024);
          }
          epoll_event ev{};
          ev.events = EPOLLIN | EPOLLRDHUP;
          ev.data.ptr = c.get();
          epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
          conns.emplace(fd, std::move(c));
        }
        continue;
      }
      auto* c = static_cast<ServerConn*>(events[i].data.ptr);
      bool ok = true;
      if ((events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0U) {
        ssize_t r = ::read(c->fd, g_server_buffer, sizeof g_server_buffer);
        if (r > 0) {
          ok = c->feed(std::string_view(g_server_buffer, static_cast<std::size_t>(r)));
        } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
          ok = false;
        }
      }
      if (ok) ok = c->flush();
      if (!ok || (c->closing && c->out.empty())) {
        drop(c);
        continue;
      }
      bool want_out = !c->out.empty();
      if (want_out != c->epollout) {
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLRDHUP | (want_out ? EPOLLOUT : 0U);
        ev.data.ptr = c;
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        c->epollout = want_out;
      }
    }
  }
  for (auto& [fd, c] : conns) ::close(fd);
  ::close(lfd);
  ::close(epfd);
  if (!options.unix_path.empty()) ::unlink(options.unix_path.c_str());
  return 0;
}

}  // namespace car_bench
