#include "bench_net.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "bench_support.hpp"

namespace car_bench {
namespace {

// One read buffer for the whole process: the loop is single-threaded and a read is fully
// delivered before the next one.
char g_read_buffer[256 * 1024];

}  // namespace

Conn::Conn(int rfd, int wfd, Framing framing, MessageHandler* handler, std::size_t index)
    : rfd_(rfd),
      wfd_(wfd),
      framing_(framing),
      handler_(handler),
      index_(index),
      decoder_(car::ws::Role::client, 64 * 1024 * 1024) {
  in_.reserve(64 * 1024);
  out_.reserve(64 * 1024);
}

Conn::~Conn() {
  if (rfd_ >= 0) ::close(rfd_);
  if (wfd_ >= 0 && wfd_ != rfd_) ::close(wfd_);
}

bool Conn::flush() {
  while (out_off_ < out_.size()) {
    ssize_t n = ::write(wfd_, out_.data() + out_off_, out_.size() - out_off_);
    if (n > 0) {
      out_off_ += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    return false;
  }
  // Everything written: reset without giving the capacity back.
  out_.clear();
  out_off_ = 0;
  return true;
}

bool Conn::read_some() {
  // A bounded number of reads per readiness event keeps one busy connection from starving the
  // others (level-triggered epoll reports it again).
  for (int round = 0; round < 4; ++round) {
    ssize_t n = ::read(rfd_, g_read_buffer, sizeof g_read_buffer);
    if (n > 0) {
      deliver(std::string_view(g_read_buffer, static_cast<std::size_t>(n)));
      if (closed_) return false;
      if (static_cast<std::size_t>(n) < sizeof g_read_buffer) return true;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    return false;  // EOF or error
  }
  return true;
}

void Conn::feed_initial(std::string_view bytes) {
  if (!bytes.empty()) deliver(bytes);
}

void Conn::deliver(std::string_view bytes) {
  switch (framing_) {
    case Framing::websocket:
      if (auto error = decoder_.feed(bytes, *this)) {
        std::fprintf(stderr, "car-bench: bad frame from server: %s\n", error->reason.c_str());
        closed_ = true;
      }
      return;
    case Framing::line:
      deliver_line(bytes);
      return;
    case Framing::content_length:
      deliver_content_length(bytes);
      return;
  }
}

void Conn::deliver_line(std::string_view bytes) {
  // Complete lines are delivered straight from the read buffer; only a trailing partial line is
  // copied.
  if (!in_.empty()) {
    auto nl = bytes.find('\n');
    if (nl == std::string_view::npos) {
      in_.append(bytes);
      return;
    }
    in_.append(bytes.substr(0, nl));
    handler_->on_message(*this, in_);
    in_.clear();
    bytes.remove_prefix(nl + 1);
  }
  while (!bytes.empty()) {
    auto nl = bytes.find('\n');
    if (nl == std::string_view::npos) {
      in_.append(bytes);
      return;
    }
    handler_->on_message(*this, bytes.substr(0, nl));
    bytes.remove_prefix(nl + 1);
  }
}

void Conn::deliver_content_length(std::string_view bytes) {
  // Simple and correct rather than zero-copy: accumulate, then peel complete blocks.
  in_.append(bytes);
  std::size_t pos = 0;
  while (true) {
    std::string_view rest(in_.data() + pos, in_.size() - pos);
    auto end = rest.find("\r\n\r\n");
    if (end == std::string_view::npos) break;
    std::uint64_t length = 0;
    if (!find_uint(rest.substr(0, end), "Content-Length: ", length)) {
      std::fprintf(stderr, "car-bench: header block without Content-Length\n");
      closed_ = true;
      break;
    }
    std::size_t body = end + 4;
    if (rest.size() < body + length) break;
    handler_->on_message(*this, rest.substr(body, length));
    pos += body + length;
  }
  in_.erase(0, pos);
}

Loop::Loop() : epfd_(epoll_create1(EPOLL_CLOEXEC)) {
  if (epfd_ < 0) {
    std::perror("epoll_create1");
    std::exit(1);
  }
}

Loop::~Loop() { ::close(epfd_); }

void Loop::add(Conn& conn) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP;
  ev.data.ptr = &conn;
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, conn.rfd(), &ev) != 0) std::perror("epoll_ctl add");
  if (conn.wfd() != conn.rfd()) {
    // A stdio pair: the write end is watched only for writability, when needed.
    conn.registered_epollout = false;
  }
}

void Loop::remove(Conn& conn) {
  epoll_ctl(epfd_, EPOLL_CTL_DEL, conn.rfd(), nullptr);
  if (conn.wfd() != conn.rfd() && conn.registered_epollout) {
    epoll_ctl(epfd_, EPOLL_CTL_DEL, conn.wfd(), nullptr);
  }
  conn.registered_epollout = false;
  conn.mark_closed();
}

void Loop::update_write_interest(Conn& conn) {
  bool want = conn.want_write();
  if (want == conn.registered_epollout || conn.closed()) return;
  epoll_event ev{};
  ev.data.ptr = &conn;
  if (conn.wfd() == conn.rfd()) {
    ev.events = EPOLLIN | EPOLLRDHUP | (want ? EPOLLOUT : 0U);
    epoll_ctl(epfd_, EPOLL_CTL_MOD, conn.rfd(), &ev);
  } else {
    ev.events = EPOLLOUT;
    epoll_ctl(epfd_, want ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, conn.wfd(), &ev);
  }
  conn.registered_epollout = want;
}

void Loop::flush_all(std::vector<std::unique_ptr<Conn>>& conns) {
  for (auto& c : conns) {
    if (!c || c->closed() || !c->want_write()) continue;
    if (!c->flush()) {
      remove(*c);
      continue;
    }
    update_write_interest(*c);
  }
}

int Loop::poll_once(int timeout_ms) {
  epoll_event events[256];
  int n = epoll_wait(epfd_, events, 256, timeout_ms);
  if (n < 0) return 0;
  for (int i = 0; i < n; ++i) {
    auto* conn = static_cast<Conn*>(events[i].data.ptr);
    if (conn->closed()) continue;
    bool ok = true;
    if ((events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) != 0U &&
        !(conn->wfd() != conn->rfd() && (events[i].events & EPOLLOUT) != 0U)) {
      ok = conn->read_some();
    }
    if (ok && conn->want_write()) ok = conn->flush();
    if (!ok || conn->closed()) {
      remove(*conn);
      continue;
    }
    update_write_interest(*conn);
  }
  return n;
}

int connect_to(const Address& address, int rcvbuf) {
  int fd = -1;
  if (address.unix_socket) {
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (address.path.size() >= sizeof sa.sun_path) {
      ::close(fd);
      return -1;
    }
    std::memcpy(sa.sun_path, address.path.c_str(), address.path.size() + 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      std::fprintf(stderr, "car-bench: connect %s: %s\n", address.path.c_str(),
                   std::strerror(errno));
      ::close(fd);
      return -1;
    }
    return fd;
  }
  bool v6 = address.host.find(':') != std::string::npos;
  fd = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int rc = -1;
  if (v6) {
    sockaddr_in6 sa{};
    sa.sin6_family = AF_INET6;
    sa.sin6_port = htons(static_cast<std::uint16_t>(address.port));
    inet_pton(AF_INET6, address.host.c_str(), &sa.sin6_addr);
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  } else {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<std::uint16_t>(address.port));
    inet_pton(AF_INET, address.host.c_str(), &sa.sin_addr);
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  }
  if (rc != 0) {
    std::fprintf(stderr, "car-bench: connect %s:%d: %s\n", address.host.c_str(), address.port,
                 std::strerror(errno));
    ::close(fd);
    return -1;
  }
  return fd;
}

bool websocket_upgrade(int fd, std::string& leftover) {
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  static const char kRequest[] =
      "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
  std::size_t len = sizeof kRequest - 1;
  std::size_t off = 0;
  while (off < len) {
    ssize_t n = ::write(fd, kRequest + off, len - off);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return false;
    }
    off += static_cast<std::size_t>(n);
  }
  std::string response;
  char buf[4096];
  while (response.find("\r\n\r\n") == std::string::npos) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      std::fprintf(stderr, "car-bench: upgrade: no response (%s)\n",
                   n == 0 ? "eof" : std::strerror(errno));
      return false;
    }
    response.append(buf, static_cast<std::size_t>(n));
    if (response.size() > 16384) return false;
  }
  if (response.rfind("HTTP/1.1 101", 0) != 0) {
    std::fprintf(stderr, "car-bench: upgrade refused: %.40s\n", response.c_str());
    return false;
  }
  auto end = response.find("\r\n\r\n") + 4;
  leftover.append(response, end, std::string::npos);
  timeval zero{0, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &zero, sizeof zero);
  return true;
}

void set_nonblocking(int fd) {
  int flags = fcntl(fd, F_GETFL, 0);
  fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

void pin_to_cpu(int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(static_cast<unsigned>(cpu), &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) std::perror("sched_setaffinity");
}

void raise_fd_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

Child spawn_child(const std::vector<std::string>& argv, int cpu) {
  Child child;
  int in_pipe[2];
  int out_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0) return child;
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    ::close(in_pipe[0]);
    ::close(in_pipe[1]);
    return child;
  }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) return child;
  if (pid == 0) {
    pin_to_cpu(cpu);
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    execv(args[0], args.data());
    std::perror("execv");
    _exit(127);
  }
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);
  child.pid = pid;
  child.to_child = in_pipe[1];
  child.from_child = out_pipe[0];
  return child;
}

int finish_child(Child& child, int timeout_ms) {
  if (child.pid < 0) return -1;
  if (child.to_child >= 0) {
    ::close(child.to_child);
    child.to_child = -1;
  }
  int status = 0;
  for (int waited = 0; waited < timeout_ms; waited += 10) {
    pid_t r = waitpid(child.pid, &status, WNOHANG);
    if (r == child.pid) {
      child.pid = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    usleep(10000);
  }
  kill(child.pid, SIGKILL);
  waitpid(child.pid, &status, 0);
  child.pid = -1;
  return -1;
}

}  // namespace car_bench
