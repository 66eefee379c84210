// What an inherited socket is, how it is named, and the --no-auth exposure rule for it
// (inherited_sockets.hpp; docs/SYSTEMD.md).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <cstddef>
#include <cstring>

#include "inherited_sockets.hpp"

using namespace car::daemon;

namespace {

InheritedSocket described(const sockaddr_storage& address, socklen_t length, int fd = 3) {
  auto result = describe_inherited_socket(fd, reinterpret_cast<const sockaddr*>(&address), length);
  REQUIRE_MESSAGE(result.ok(), (result.ok() ? "" : result.error().message));
  return result.value();
}

sockaddr_storage ipv4(const char* host, std::uint16_t port) {
  sockaddr_storage storage{};
  auto* in4 = reinterpret_cast<sockaddr_in*>(&storage);
  in4->sin_family = AF_INET;
  in4->sin_port = htons(port);
  REQUIRE(::inet_pton(AF_INET, host, &in4->sin_addr) == 1);
  return storage;
}

sockaddr_storage ipv6(const char* host, std::uint16_t port) {
  sockaddr_storage storage{};
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&storage);
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons(port);
  REQUIRE(::inet_pton(AF_INET6, host, &in6->sin6_addr) == 1);
  return storage;
}

// A sockaddr_un holding `name` (len bytes, may start with NUL) and its getsockname length.
socklen_t unix_address(sockaddr_storage& storage, const char* name, std::size_t len) {
  storage = {};
  auto* un = reinterpret_cast<sockaddr_un*>(&storage);
  un->sun_family = AF_UNIX;
  std::memcpy(un->sun_path, name, len);
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
}

Options no_auth() {
  Options options;
  options.no_auth = true;
  return options;
}

}  // namespace

TEST_SUITE("inherited_sockets") {
  TEST_CASE("an IPv4 or IPv6 address is a tcp socket with its numeric host and port") {
    auto a = ipv4("127.0.0.1", 9100);
    auto four = described(a, sizeof(sockaddr_in));
    CHECK(four.kind == InheritedSocket::Kind::tcp);
    CHECK(four.host == "127.0.0.1");
    CHECK(four.port == 9100);
    CHECK(four.fd == 3);
    auto b = ipv6("::1", 443);
    auto six = described(b, sizeof(sockaddr_in6), 4);
    CHECK(six.kind == InheritedSocket::Kind::tcp);
    CHECK(six.host == "::1");
    CHECK(six.port == 443);
    CHECK(six.fd == 4);
  }

  TEST_CASE("a Unix address is a unix_stream socket: a path, an abstract @name, or unnamed") {
    sockaddr_storage storage;
    auto length = unix_address(storage, "/run/car-daemon.sock", sizeof "/run/car-daemon.sock");
    auto path = described(storage, length);
    CHECK(path.kind == InheritedSocket::Kind::unix_stream);
    CHECK(path.path == "/run/car-daemon.sock");
    length = unix_address(storage, "\0car", 4);
    CHECK(described(storage, length).path == "@car");
    length = unix_address(storage, "", 0);
    CHECK(described(storage, length).path.empty());
  }

  TEST_CASE("another family or a truncated address is an Error naming the fd") {
    sockaddr_storage storage{};
    storage.ss_family = AF_APPLETALK;
    auto other = describe_inherited_socket(5, reinterpret_cast<const sockaddr*>(&storage),
                                           sizeof storage);
    REQUIRE_FALSE(other.ok());
    CHECK(other.error().message.find("inherited fd 5: address family") == 0);
    auto a = ipv4("127.0.0.1", 1);
    auto truncated = describe_inherited_socket(3, reinterpret_cast<const sockaddr*>(&a), 4);
    REQUIRE_FALSE(truncated.ok());
    CHECK(truncated.error().message == "inherited fd 3: its address is truncated");
  }

  TEST_CASE("labels name the fd, the LISTEN_FDNAMES name when there is one, and the address") {
    InheritedSocket tcp;
    tcp.fd = 3;
    tcp.host = "127.0.0.1";
    tcp.port = 9100;
    CHECK(inherited_socket_label(tcp) == "fd 3 (127.0.0.1:9100)");
    tcp.name = "web";
    CHECK(inherited_socket_label(tcp) == "fd 3 'web' (127.0.0.1:9100)");
    tcp.host = "::";
    tcp.name.clear();
    CHECK(inherited_socket_label(tcp) == "fd 3 ([::]:9100)");
    InheritedSocket local;
    local.fd = 4;
    local.kind = InheritedSocket::Kind::unix_stream;
    local.path = "/run/car-daemon.sock";
    CHECK(inherited_socket_label(local) == "fd 4 (unix:/run/car-daemon.sock)");
  }

  TEST_CASE("without authentication, only loopback TCP and Unix sockets are accepted") {
    InheritedSocket loopback;
    loopback.host = "127.0.0.1";
    InheritedSocket local;
    local.kind = InheritedSocket::Kind::unix_stream;
    local.path = "/run/x.sock";
    InheritedSocket wildcard;
    wildcard.fd = 5;
    wildcard.host = "0.0.0.0";
    wildcard.port = 9100;
    CHECK_FALSE(check_inherited_exposure(no_auth(), {loopback, local}).has_value());
    auto refused = check_inherited_exposure(no_auth(), {loopback, wildcard});
    REQUIRE(refused.has_value());
    CHECK(refused->message.find(
              "inherited socket fd 5 (0.0.0.0:9100): authentication is disabled") == 0);
    auto allowed = no_auth();
    allowed.allow_unauthenticated_remote = true;
    CHECK_FALSE(check_inherited_exposure(allowed, {wildcard}).has_value());
    CHECK_FALSE(check_inherited_exposure(Options{}, {wildcard}).has_value());  // with auth
  }
}
