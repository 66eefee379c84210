// The Unix-socket listener (unix_listener.cpp) in a private temporary directory: WebSocket over the
// socket, mode 0600, a stale socket replaced, a live socket or another file never touched, stop()
// removing the file, bad paths (PROTOCOL.md §1, §9 --unix).
#include "car/unix_socket/unix_listener.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <variant>

#include "../ws/uv/ws_test_client.hpp"

using namespace car;
using namespace car::test;

namespace {

using unix_socket::UnixListener;
using Started = Result<std::unique_ptr<UnixListener>>;

Started start(UvServerFixture& f, const std::string& path) {
  return UnixListener::start(f.loop.get(), f.server, std::make_shared<const ws::WsOptions>(), path);
}

std::unique_ptr<UnixListener> take(Started started) {
  if (!started) FAIL("listener did not start: " << started.error().message);
  return std::move(started.value());
}

std::string error_of(Started started) {
  REQUIRE_MESSAGE(!started.ok(), "the listener started");
  return started.error().message;
}

// A socket file nobody listens on, as a crashed daemon leaves behind.
void make_stale_socket(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  ::close(fd);
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_mode;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

void round_trip(WsTestClient& client, int id) {
  client.send_text(echo_request(id, "\"unix\""));
  CHECK(client.next_frame().payload == echo_reply(id, "\"unix\""));
}

}  // namespace

TEST_SUITE("unix_listener") {
  TEST_CASE("serves WebSocket over the socket; the file is a socket with mode 0600") {
    PrivateTempDir dir;
    UvServerFixture f;
    const std::string path = dir / "car.sock";
    auto listener = take(start(f, path));
    CHECK(listener->url() == "unix:" + path);
    CHECK(S_ISSOCK(mode_of(path)));
    CHECK((mode_of(path) & 07777) == 0600);
    WsTestClient c(f.loop, StreamPeer::connect_unix(f.loop.get(), path));
    c.upgrade();
    round_trip(c, 1);
    c.peer().write(client_frame(0x8, close_payload(1000)));
    CHECK(c.next_frame().close_code() == 1000);
    CHECK(c.wait_eof());
  }

  TEST_CASE("a stale socket (nobody listening) is replaced") {
    PrivateTempDir dir;
    UvServerFixture f;
    const std::string path = dir / "stale.sock";
    make_stale_socket(path);
    REQUIRE(S_ISSOCK(mode_of(path)));
    auto listener = take(start(f, path));
    CHECK((mode_of(path) & 07777) == 0600);
    WsTestClient c(f.loop, StreamPeer::connect_unix(f.loop.get(), path));
    c.upgrade();
    round_trip(c, 2);
  }

  TEST_CASE("a live socket is never replaced; the running listener keeps serving") {
    PrivateTempDir dir;
    UvServerFixture f;
    const std::string path = dir / "live.sock";
    auto first = take(start(f, path));
    CHECK(error_of(start(f, path)) == path + " is in use by a running daemon");
    CHECK(S_ISSOCK(mode_of(path)));
    WsTestClient c(f.loop, StreamPeer::connect_unix(f.loop.get(), path));
    c.upgrade();
    round_trip(c, 3);
  }

  TEST_CASE("a file that is not a socket is refused and left alone") {
    PrivateTempDir dir;
    UvServerFixture f;
    const std::string path = dir / "notes.txt";
    std::ofstream(path) << "keep me";
    CHECK(error_of(start(f, path)) == path + " exists and is not a socket; refusing to replace it");
    std::ifstream in(path);
    std::string content;
    std::getline(in, content);
    CHECK(content == "keep me");
  }

  TEST_CASE("stop() removes the socket file and refuses new connections; it is idempotent") {
    PrivateTempDir dir;
    UvServerFixture f;
    const std::string path = dir / "car.sock";
    auto listener = take(start(f, path));
    WsTestClient existing(f.loop, StreamPeer::connect_unix(f.loop.get(), path));
    existing.upgrade();
    listener->stop();
    CHECK_FALSE(exists(path));
    listener->stop();
    auto refused = StreamPeer::connect_unix(f.loop.get(), path);
    REQUIRE(f.loop.run_until([&] { return refused->connect_status() != 1; }));
    CHECK(refused->connect_status() == UV_ENOENT);
    round_trip(existing, 4);
    // A new listener may take the path again.
    auto again = take(start(f, path));
    WsTestClient c(f.loop, StreamPeer::connect_unix(f.loop.get(), path));
    c.upgrade();
    round_trip(c, 5);
  }

  TEST_CASE("destroying the listener removes the file it created") {
    PrivateTempDir dir;
    UvServerFixture f;
    const std::string path = dir / "car.sock";
    take(start(f, path)).reset();
    CHECK_FALSE(exists(path));
  }

  TEST_CASE("an empty or too long path is an Error; nothing is created") {
    PrivateTempDir dir;
    UvServerFixture f;
    CHECK(error_of(start(f, "")).find("is empty or too long") != std::string::npos);
    const std::string long_path = dir / std::string(sizeof(sockaddr_un{}.sun_path), 'x');
    CHECK(error_of(start(f, long_path)).find("is empty or too long") != std::string::npos);
    CHECK_FALSE(exists(long_path));
  }

  TEST_CASE("a path in a missing directory is an Error naming it") {
    PrivateTempDir dir;
    UvServerFixture f;
    const std::string path = dir / "missing/car.sock";
    CHECK(error_of(start(f, path)).find("cannot listen on " + path) == 0);
  }
}

// UnixListener::adopt: a socket bound elsewhere (as systemd's socket activation passes one).
namespace {

int bound_unix_socket(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(fd, 16) == 0);
  return fd;
}

Started adopt(UvServerFixture& f, int fd) {
  return UnixListener::adopt(f.loop.get(), f.server, std::make_shared<const ws::WsOptions>(), fd);
}

}  // namespace

TEST_SUITE("unix_listener") {
  TEST_CASE("adopt(): an inherited socket is served; stop() closes it but leaves its file") {
    PrivateTempDir dir;
    UvServerFixture f;
    const std::string path = dir / "inherited.sock";
    int fd = bound_unix_socket(path);
    auto listener = take(adopt(f, fd));
    CHECK(listener->url() == "unix:" + path);
    WsTestClient c(f.loop, StreamPeer::connect_unix(f.loop.get(), path));
    c.upgrade();
    round_trip(c, 6);
    listener->stop();
    CHECK(exists(path));  // the socket's creator (systemd) owns the file
    CHECK(::fcntl(fd, F_GETFD) == -1);
  }

  TEST_CASE("adopt(): a TCP socket is an Error and the fd is closed") {
    UvServerFixture f;
    int tcp = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(tcp >= 0);
    auto refused = adopt(f, tcp);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().message == "fd " + std::to_string(tcp) + ": not a Unix-domain socket");
    CHECK(::fcntl(tcp, F_GETFD) == -1);
  }
}
