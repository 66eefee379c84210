// The stdio transport (stdio_transport.cpp) on pipes and regular files: NDJSON and Content-Length
// requests answered byte for byte, framing errors, EOF answering what is in flight before
// on_finished, stop(), and descriptors libuv cannot use (PROTOCOL.md §1).
#include "car/stdio/stdio_transport.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "../../../uv_test_support.hpp"
#include "../../ws/uv/ws_test_client.hpp"

using namespace car;
using namespace car::test;

namespace {

// Writes all of `bytes` to a blocking descriptor (small amounts: a pipe buffer holds them).
void write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), bytes.size());
    REQUIRE(n > 0);
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// The transport reads `in_fd` and writes `out_fd`; the test writes requests into `to_transport`
// and reads replies from `reader` (its end of the output pipe), all on the fixture's loop.
struct StdioFixture : UvServerFixture {
  StdioFixture() {
    int in[2];
    int out[2];
    REQUIRE(::pipe2(in, O_CLOEXEC) == 0);
    REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
    in_fd = in[0];
    to_transport = in[1];
    out_fd = out[1];
    reader = StreamPeer::open_fd(loop.get(), out[0]);
    // Parks "park" requests until the test answers them.
    server.methods().add("park", {},
                         [this](const Request&, Reply reply) { parked.push_back(reply); });
  }

  ~StdioFixture() {
    close_input();
    if (transport) {
      transport->stop();
      CHECK(loop.run_until([this] { return finished > 0; }));
    }
    transport.reset();
    reader.reset();
    parked.clear();
    finish();
  }

  void start(stdio::Framing framing) {
    stdio::StdioOptions options;
    options.framing = framing;
    options.input_fd = in_fd;
    options.output_fd = out_fd;
    transport = stdio::start_stdio(loop.get(), server, options, [this] {
      ++finished;
      finished_with_parked = parked.size();
    });
    REQUIRE(transport != nullptr);
  }

  void close_input() {
    if (to_transport >= 0) ::close(to_transport);
    to_transport = -1;
  }

  // Waits for exactly `bytes` on the output (and fails on anything else).
  void expect_output(const std::string& bytes) {
    bool got =
        loop.run_until([&] { return reader->received().size() >= bytes.size() || reader->eof(); });
    CHECK_MESSAGE(got, "output so far: " << reader->received());
    CHECK(reader->received() == bytes);
    reader->received().clear();
  }

  int in_fd = -1;
  int out_fd = -1;
  int to_transport = -1;
  std::unique_ptr<StreamPeer> reader;
  std::shared_ptr<stdio::StdioTransport> transport;
  std::vector<Reply> parked;
  int finished = 0;
  std::size_t finished_with_parked = 0;
};

}  // namespace

TEST_SUITE("stdio_transport") {
  TEST_CASE("NDJSON: every request line is answered with one line, in order; notifications not") {
    StdioFixture f;
    f.start(stdio::Framing::ndjson);
    write_all(f.to_transport, echo_request(1, R"("a")") + "\n" +
                                  R"({"jsonrpc":"2.0","method":"echo","params":{"value":0}})"
                                  "\n" +
                                  echo_request(2, "[true]") + "\r\n");
    f.expect_output(echo_reply(1, R"("a")") + "\n" + echo_reply(2, "[true]") + "\n");
    // A message split across writes is reassembled.
    std::string split = echo_request(3, "3");
    write_all(f.to_transport, split.substr(0, 9));
    f.loop.run_for(std::chrono::milliseconds(20));  // the first part is read on its own
    write_all(f.to_transport, split.substr(9) + "\n");
    f.expect_output(echo_reply(3, "3") + "\n");
    CHECK(f.finished == 0);
  }

  TEST_CASE("Content-Length: requests in, replies out with their own Content-Length header") {
    StdioFixture f;
    f.start(stdio::Framing::content_length);
    std::string a = echo_request(1, R"("x")");
    std::string b =
        R"({"jsonrpc":"2.0","id":2,"method":"server.handshake","params":{"protocol_version":2}})";
    write_all(f.to_transport, "Content-Length: " + std::to_string(a.size()) + "\r\n\r\n" + a +
                                  "Content-Length: " + std::to_string(b.size()) + "\r\n\r\n" + b);
    std::string reply = echo_reply(1, R"("x")");
    REQUIRE(f.loop.run_until(
        [&] { return f.reader->received().find("\"id\":2") != std::string::npos; }));
    auto& out = f.reader->received();
    std::string first = "Content-Length: " + std::to_string(reply.size()) + "\r\n\r\n" + reply;
    REQUIRE(out.substr(0, first.size()) == first);
    std::string rest = out.substr(first.size());
    const std::string header = "Content-Length: ";
    REQUIRE(rest.substr(0, header.size()) == header);
    auto body_at = rest.find("\r\n\r\n");
    REQUIRE(body_at != std::string::npos);
    std::string body = rest.substr(body_at + 4);
    CHECK(std::stoul(rest.substr(header.size())) == body.size());
    auto hello = parse_json(body);
    CHECK(hello["id"].GetInt() == 2);
    CHECK(hello["result"]["protocol_version"].GetInt() == 2);
  }

  TEST_CASE("framing errors are answered -32700 and the stream carries on") {
    StdioFixture f;
    f.start(stdio::Framing::content_length);
    std::string a = echo_request(1, "1");
    write_all(f.to_transport, "Content-Length: abc\r\n\r\nContent-Length: " +
                                  std::to_string(a.size()) + "\r\n\r\n" + a);
    REQUIRE(f.loop.run_until(
        [&] { return f.reader->received().find(echo_reply(1, "1")) != std::string::npos; }));
    auto& out = f.reader->received();
    auto first_body = out.find("\r\n\r\n") + 4;
    auto second_header = out.find("Content-Length: ", first_body);
    REQUIRE(second_header != std::string::npos);
    auto error = parse_json(out.substr(first_body, second_header - first_body));
    CHECK(error["id"].IsNull());
    CHECK(error_code(error) == -32700);
  }

  TEST_CASE("NDJSON: a line that is not JSON is answered -32700") {
    StdioFixture f;
    f.start(stdio::Framing::ndjson);
    write_all(f.to_transport, "not json\n" + echo_request(2, "2") + "\n");
    REQUIRE(f.loop.run_until(
        [&] { return f.reader->received().find("\"id\":2") != std::string::npos; }));
    auto& out = f.reader->received();
    auto newline = out.find('\n');
    REQUIRE(newline != std::string::npos);
    auto error = parse_json(out.substr(0, newline));
    CHECK(error["id"].IsNull());
    CHECK(error_code(error) == -32700);
    CHECK(out.substr(newline + 1) == echo_reply(2, "2") + "\n");
  }

  TEST_CASE("EOF: a request in flight is answered and flushed, and only then on_finished runs") {
    StdioFixture f;
    f.start(stdio::Framing::ndjson);
    write_all(f.to_transport, R"({"jsonrpc":"2.0","id":9,"method":"park"})"
                              "\n" +
                                  echo_request(1, "1") + "\n");
    f.close_input();
    REQUIRE(f.loop.run_until([&] { return f.parked.size() == 1; }));
    f.expect_output(echo_reply(1, "1") + "\n");
    // The input is at EOF, but the parked request keeps the transport alive.
    f.loop.run_for(std::chrono::milliseconds(30));
    CHECK(f.finished == 0);
    CHECK_FALSE(f.reader->eof());
    f.parked.front().ok(R"("late")");
    f.parked.clear();
    REQUIRE(f.loop.run_until([&] { return f.finished == 1; }));
    CHECK(f.finished_with_parked == 0);
    // The reply was written before the output was closed.
    REQUIRE(f.loop.run_until([&] { return f.reader->eof(); }));
    CHECK(f.reader->received() == R"({"jsonrpc":"2.0","id":9,"result":"late"})"
                                  "\n");
    CHECK(f.server.connection_count() == 0);
    f.loop.run_for(std::chrono::milliseconds(10));
    CHECK(f.finished == 1);  // exactly once
    f.transport.reset();
  }

  TEST_CASE("EOF with nothing in flight finishes at once; a partial last line is still served") {
    StdioFixture f;
    f.start(stdio::Framing::ndjson);
    write_all(f.to_transport, echo_request(4, "4"));  // no newline before EOF
    f.close_input();
    REQUIRE(f.loop.run_until([&] { return f.finished == 1; }));
    REQUIRE(f.loop.run_until([&] { return f.reader->eof(); }));
    CHECK(f.reader->received() == echo_reply(4, "4") + "\n");
    f.transport.reset();
  }

  TEST_CASE("stop(): reading stops, what is queued is flushed, then on_finished runs") {
    StdioFixture f;
    f.start(stdio::Framing::ndjson);
    write_all(f.to_transport, echo_request(1, "1") + "\n");
    f.expect_output(echo_reply(1, "1") + "\n");
    f.transport->stop();
    REQUIRE(f.loop.run_until([&] { return f.finished == 1; }));
    REQUIRE(f.loop.run_until([&] { return f.reader->eof(); }));
    CHECK(f.reader->received().empty());
    CHECK(f.server.connection_count() == 0);
    f.transport.reset();
  }

  TEST_CASE("regular files: requests read from a file, replies appended to a file") {
    PrivateTempDir dir;
    UvServerFixture f;
    const std::string in_path = dir / "requests.ndjson";
    const std::string out_path = dir / "replies.ndjson";
    std::ofstream(in_path) << echo_request(1, R"("f")") << "\n" << echo_request(2, "{}") << "\n";
    int in_fd = ::open(in_path.c_str(), O_RDONLY | O_CLOEXEC);
    int out_fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    REQUIRE(in_fd >= 0);
    REQUIRE(out_fd >= 0);
    int finished = 0;
    stdio::StdioOptions options;
    options.input_fd = in_fd;
    options.output_fd = out_fd;
    auto transport =
        stdio::start_stdio(f.loop.get(), f.server, options, [&finished] { ++finished; });
    REQUIRE(transport != nullptr);
    CHECK(f.loop.run_until([&] { return finished == 1; }));
    CHECK(read_file(out_path) == echo_reply(1, R"("f")") + "\n" + echo_reply(2, "{}") + "\n");
    transport.reset();
    // Files are not closed by the transport (only streams are adopted by libuv).
    CHECK(::close(in_fd) == 0);
    CHECK(::close(out_fd) == 0);
  }

  TEST_CASE("descriptors libuv cannot use: start_stdio returns null and on_finished never runs") {
    UvServerFixture f;
    int finished = 0;
    stdio::StdioOptions options;
    options.input_fd = -1;
    options.output_fd = -1;
    auto transport =
        stdio::start_stdio(f.loop.get(), f.server, options, [&finished] { ++finished; });
    CHECK(transport == nullptr);
    f.loop.run_for(std::chrono::milliseconds(10));
    CHECK(finished == 0);
    CHECK(f.server.connection_count() == 0);
  }
}
