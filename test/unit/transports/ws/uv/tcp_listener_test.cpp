// The TCP listener (tcp_listener.cpp) on loopback: port 0 and url(), IPv6 hosts in brackets, a
// port in use, stop() refusing new connections while existing ones carry on, and several
// connections served at once (PROTOCOL.md §1, §9 --listen).
#include "car/ws/tcp_listener.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <variant>

#include "ws_test_client.hpp"

using namespace car;
using namespace car::test;

namespace {

using Started = Result<std::unique_ptr<ws::TcpListener>>;

Started start(UvServerFixture& f, const std::string& host, std::uint16_t port,
              ws::WsOptions options = {}) {
  return ws::TcpListener::start(f.loop.get(), f.server,
                                std::make_shared<const ws::WsOptions>(std::move(options)), host,
                                port);
}

std::unique_ptr<ws::TcpListener> take(Started started) {
  if (!started) FAIL("listener did not start: " << started.error().message);
  return std::move(started.value());
}

int port_of(const ws::TcpListener& listener) {
  return std::stoi(listener.url().substr(listener.url().rfind(':') + 1));
}

// Whether this machine has an IPv6 loopback to bind (containers often have none).
bool ipv6_loopback_available() {
  int fd = ::socket(AF_INET6, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in6 addr{};
  addr.sin6_family = AF_INET6;
  addr.sin6_addr = in6addr_loopback;
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// Upgrades and checks one echo round trip with `id`.
void round_trip(WsTestClient& client, int id) {
  client.send_text(echo_request(id, std::to_string(id * 10)));
  CHECK(client.next_frame().payload == echo_reply(id, std::to_string(id * 10)));
}

}  // namespace

TEST_SUITE("tcp_listener") {
  TEST_CASE("port 0 binds a free port on 127.0.0.1; url() names it; connections are served") {
    UvServerFixture f;
    auto listener = take(start(f, "127.0.0.1", 0));
    const std::string prefix = "ws://127.0.0.1:";
    REQUIRE(listener->url().substr(0, prefix.size()) == prefix);
    int port = port_of(*listener);
    CHECK(port > 0);
    CHECK(port < 65536);
    WsTestClient c(f.loop, StreamPeer::connect_tcp(f.loop.get(), "127.0.0.1", port));
    c.upgrade();
    round_trip(c, 1);
  }

  TEST_CASE("an IPv6 host is bracketed in url() and served") {
    if (!ipv6_loopback_available()) {
      MESSAGE("no IPv6 loopback here; skipped");
      return;
    }
    UvServerFixture f;
    auto listener = take(start(f, "::1", 0));
    const std::string prefix = "ws://[::1]:";
    REQUIRE(listener->url().substr(0, prefix.size()) == prefix);
    WsTestClient c(f.loop, StreamPeer::connect_tcp(f.loop.get(), "::1", port_of(*listener)));
    c.upgrade();
    round_trip(c, 2);
  }

  TEST_CASE("a port in use is an Error naming host and port") {
    UvServerFixture f;
    auto first = take(start(f, "127.0.0.1", 0));
    auto port = static_cast<std::uint16_t>(port_of(*first));
    auto second = start(f, "127.0.0.1", port);
    REQUIRE_FALSE(second.ok());
    CHECK(second.error().message.find("cannot listen on 127.0.0.1:" + std::to_string(port)) == 0);
    // The first listener is unaffected.
    WsTestClient c(f.loop, StreamPeer::connect_tcp(f.loop.get(), "127.0.0.1", port));
    c.upgrade();
    round_trip(c, 3);
  }

  TEST_CASE("stop() refuses new connections, keeps existing ones, and is idempotent") {
    UvServerFixture f;
    auto listener = take(start(f, "127.0.0.1", 0));
    int port = port_of(*listener);
    WsTestClient existing(f.loop, StreamPeer::connect_tcp(f.loop.get(), "127.0.0.1", port));
    existing.upgrade();
    listener->stop();
    listener->stop();
    auto refused = StreamPeer::connect_tcp(f.loop.get(), "127.0.0.1", port);
    REQUIRE(f.loop.run_until([&] { return refused->connect_status() != 1; }));
    CHECK(refused->connect_status() == UV_ECONNREFUSED);
    round_trip(existing, 4);
    listener.reset();  // destroying a stopped listener is fine too
    round_trip(existing, 5);
  }

  TEST_CASE("several connections at once: each gets its own replies") {
    UvServerFixture f;
    auto listener = take(start(f, "127.0.0.1", 0));
    int port = port_of(*listener);
    std::vector<WsTestClient> clients;
    for (int i = 0; i < 3; ++i) {
      clients.emplace_back(f.loop, StreamPeer::connect_tcp(f.loop.get(), "127.0.0.1", port));
      clients.back().upgrade();
    }
    CHECK(f.server.connection_count() == 3);
    CHECK(ws::live_websocket_connections() == f.live_before + 3);
    // Interleave the requests, then read each client's reply.
    for (int i = 0; i < 3; ++i)
      clients[static_cast<std::size_t>(i)].send_text(echo_request(i, std::to_string(i)));
    for (int i = 0; i < 3; ++i) {
      CHECK(clients[static_cast<std::size_t>(i)].next_frame().payload ==
            echo_reply(i, std::to_string(i)));
    }
  }
}

// TcpListener::adopt: a socket bound elsewhere (as systemd's socket activation passes one).
namespace {

// A TCP socket bound to 127.0.0.1 on a free port, listening when `listening`.
int bound_loopback_socket(bool listening) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  if (listening) REQUIRE(::listen(fd, 16) == 0);
  return fd;
}

Started adopt(UvServerFixture& f, int fd) {
  return ws::TcpListener::adopt(f.loop.get(), f.server, std::make_shared<const ws::WsOptions>(),
                               fd);
}

bool fd_is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

}  // namespace

TEST_SUITE("tcp_listener") {
  TEST_CASE("adopt(): an inherited listening socket is served; url() names its bound address") {
    UvServerFixture f;
    int fd = bound_loopback_socket(true);
    auto listener = take(adopt(f, fd));
    const std::string prefix = "ws://127.0.0.1:";
    REQUIRE(listener->url().substr(0, prefix.size()) == prefix);
    WsTestClient c(f.loop, StreamPeer::connect_tcp(f.loop.get(), "127.0.0.1", port_of(*listener)));
    c.upgrade();
    round_trip(c, 7);
    listener->stop();
    CHECK_FALSE(fd_is_open(fd));  // the listener owned it
  }

  TEST_CASE("adopt(): a bound socket that does not listen yet is made to listen") {
    UvServerFixture f;
    auto listener = take(adopt(f, bound_loopback_socket(false)));
    WsTestClient c(f.loop, StreamPeer::connect_tcp(f.loop.get(), "127.0.0.1", port_of(*listener)));
    c.upgrade();
    round_trip(c, 8);
  }

  TEST_CASE("adopt(): a datagram socket, a Unix socket or a pipe is an Error; the fd is closed") {
    UvServerFixture f;
    int udp = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(udp >= 0);
    auto refused = adopt(f, udp);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().message == "fd " + std::to_string(udp) + ": not a stream socket");
    CHECK_FALSE(fd_is_open(udp));

    int local = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(local >= 0);
    auto not_tcp = adopt(f, local);
    REQUIRE_FALSE(not_tcp.ok());
    CHECK(not_tcp.error().message == "fd " + std::to_string(local) + ": not a TCP socket");
    CHECK_FALSE(fd_is_open(local));

    int ends[2];
    REQUIRE(::pipe(ends) == 0);
    auto not_socket = adopt(f, ends[0]);
    REQUIRE_FALSE(not_socket.ok());
    CHECK(not_socket.error().message.find("fd " + std::to_string(ends[0]) + ": not a socket") == 0);
    CHECK_FALSE(fd_is_open(ends[0]));
    ::close(ends[1]);
  }
}
