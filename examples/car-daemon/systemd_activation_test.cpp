// take_inherited_sockets() with libsystemd (systemd_activation.hpp): the LISTEN_* protocol as a
// service manager speaks it, with a real socket on fd 3 and the variables set in this process.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "systemd_activation.hpp"

using namespace car::daemon;

namespace {

// Puts a fresh socket (listening when `listening`) on fd 3, where LISTEN_FDS starts, without
// FD_CLOEXEC as a service manager passes it. Any fd 3 of the test runner is replaced.
void socket_on_fd3(int type, bool listening) {
  int fd = ::socket(AF_INET, type, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  if (listening) REQUIRE(::listen(fd, 4) == 0);
  if (fd != 3) {
    REQUIRE(::dup2(fd, 3) == 3);
    ::close(fd);
  }
}

void set_listen_env(const std::string& pid, const char* names) {
  ::setenv("LISTEN_PID", pid.c_str(), 1);
  ::setenv("LISTEN_FDS", "1", 1);
  ::setenv("LISTEN_FDNAMES", names, 1);
}

bool listen_env_unset() {
  return std::getenv("LISTEN_PID") == nullptr && std::getenv("LISTEN_FDS") == nullptr &&
         std::getenv("LISTEN_FDNAMES") == nullptr;
}

}  // namespace

TEST_SUITE("systemd_activation") {
  TEST_CASE("this build has systemd support") { CHECK(systemd_supported()); }

  TEST_CASE("a listening TCP socket for this pid is taken, named, made close-on-exec") {
    socket_on_fd3(SOCK_STREAM, true);
    set_listen_env(std::to_string(::getpid()), "web");
    auto taken = take_inherited_sockets();
    REQUIRE_MESSAGE(taken.ok(), (taken.ok() ? "" : taken.error().message));
    REQUIRE(taken.value().size() == 1);
    const auto& socket = taken.value()[0];
    CHECK(socket.fd == 3);
    CHECK(socket.kind == InheritedSocket::Kind::tcp);
    CHECK(socket.host == "127.0.0.1");
    CHECK(socket.port != 0);
    CHECK(socket.name == "web");
    CHECK(listen_env_unset());  // nothing the daemon starts sees them
    CHECK((::fcntl(3, F_GETFD) & FD_CLOEXEC) != 0);
    ::close(3);
  }

  TEST_CASE("LISTEN_PID of another process: nothing is taken, fd 3 is left alone") {
    socket_on_fd3(SOCK_STREAM, true);
    set_listen_env(std::to_string(::getpid() + 1), "web");
    auto taken = take_inherited_sockets();
    REQUIRE(taken.ok());
    CHECK(taken.value().empty());
    CHECK(listen_env_unset());
    CHECK((::fcntl(3, F_GETFD) & FD_CLOEXEC) == 0);
    ::close(3);
  }

  TEST_CASE("no LISTEN_* variables: nothing is taken") {
    ::unsetenv("LISTEN_PID");
    ::unsetenv("LISTEN_FDS");
    ::unsetenv("LISTEN_FDNAMES");
    auto taken = take_inherited_sockets();
    REQUIRE(taken.ok());
    CHECK(taken.value().empty());
  }

  TEST_CASE("a socket that is not listening, or not a stream, is an Error naming fd and name") {
    socket_on_fd3(SOCK_STREAM, false);
    set_listen_env(std::to_string(::getpid()), "web");
    auto not_listening = take_inherited_sockets();
    REQUIRE_FALSE(not_listening.ok());
    CHECK(not_listening.error().message.find("inherited fd 3 'web': not a listening TCP or Unix "
                                             "stream socket") == 0);
    ::close(3);
    socket_on_fd3(SOCK_DGRAM, false);
    set_listen_env(std::to_string(::getpid()), "");
    auto datagram = take_inherited_sockets();
    REQUIRE_FALSE(datagram.ok());
    CHECK(datagram.error().message.find("inherited fd 3: not a listening") == 0);
    ::close(3);
  }

  TEST_CASE("a LISTEN_FDS that is not a number is an Error") {
    ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
    ::setenv("LISTEN_FDS", "two", 1);
    auto taken = take_inherited_sockets();
    REQUIRE_FALSE(taken.ok());
    CHECK(taken.error().message.find("socket activation: LISTEN_FDS, LISTEN_PID or LISTEN_FDNAMES "
                                     "is unusable") == 0);
    CHECK(listen_env_unset());
  }
}

TEST_SUITE("systemd_activation") {
  TEST_CASE("LISTEN_FDNAMES naming another number of fds is an Error") {
    socket_on_fd3(SOCK_STREAM, true);
    set_listen_env(std::to_string(::getpid()), "web:extra");
    auto taken = take_inherited_sockets();
    REQUIRE_FALSE(taken.ok());
    CHECK(taken.error().message.find("socket activation:") == 0);
    CHECK(listen_env_unset());
    ::close(3);
  }
}
