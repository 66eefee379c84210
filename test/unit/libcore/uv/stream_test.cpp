// uv::Stream's filter seam (stream.cpp, stream_sink.cpp; car/uv/stream_filter.hpp) with a
// transparent test filter on a socketpair: every byte read is decoded before on_read, the
// filter's replies go out as they arise, its clean end and its failure become on_read_end
// (UV_EOF, UV_EPROTO), and every byte written — write(), try_write(), shutdown()'s goodbye and a
// StreamSink's batches — is encoded; an encoding failure is an error value, never bytes on the
// wire. TLS behind the same seam: transports/ws/uv/tls_stream_filter_test.cpp.
#include <sys/socket.h>

#include <cctype>
#include <memory>
#include <string>
#include <vector>

#include "../../uv_test_support.hpp"
#include "car/uv/stream.hpp"
#include "car/uv/stream_filter.hpp"
#include "car/uv/stream_sink.hpp"
#include "car/uv/uv_executor.hpp"

using namespace car;
using namespace car::test;

namespace {

// Wire format of the test filter: what the owner writes travels lower-cased inside "<...>", one
// pair per encode() call (so a test sees how many calls a batch took). Read bytes are
// upper-cased for the owner, except '?' (answered with "!" by the filter itself), '~' (a clean
// end) and '^' (a failure).
class TestFilter final : public uv::StreamFilter {
 public:
  Input decode(std::string_view wire, std::string& plain, std::string& reply) override {
    for (char c : wire) {
      if (c == '?') {
        reply += '!';
      } else if (c == '~') {
        return Input::ended;
      } else if (c == '^') {
        error_ = "test failure";
        reply += "alert";
        return Input::failed;
      } else {
        plain += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      }
    }
    return Input::more;
  }
  bool encode(std::span<const uv_buf_t> plain, std::string& wire) override {
    ++encode_calls;
    if (fail_encode) {
      error_ = "cannot encode";
      return false;
    }
    wire += '<';
    for (const uv_buf_t& piece : plain) {
      for (std::size_t i = 0; i < piece.len; ++i) {
        wire += static_cast<char>(std::tolower(static_cast<unsigned char>(piece.base[i])));
      }
    }
    wire += '>';
    return true;
  }
  void finish(std::string& wire) override { wire += "~bye"; }
  std::string_view error() const override { return error_; }

  bool fail_encode = false;
  int encode_calls = 0;

 private:
  std::string error_;
};

// The Stream's owner: records what it is told.
struct Owner final : uv::StreamHandler {
  Owner() : stream(*this) {}
  void on_read(uv::Stream&, std::string_view bytes) override { read.append(bytes); }
  void on_read_end(uv::Stream&, int status) override { end_status = status; }
  void on_closed(uv::Stream&) override { closed = true; }

  uv::Stream stream;
  std::string read;
  int end_status = 0;  // 0: no end reported
  bool closed = false;
};

// A filtered Stream on one end of a socketpair, a StreamPeer on the other.
struct Fixture {
  Fixture() {
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    REQUIRE(owner.stream.open_fd(loop.get(), fds[0]) == 0);
    REQUIRE(owner.stream.set_filter(&filter) == 0);
    peer = StreamPeer::open_fd(loop.get(), fds[1]);
    owner.stream.start_reading();
  }
  ~Fixture() {
    owner.stream.close();
    peer->close();
    CHECK(loop.run_until([this] { return owner.closed; }));
    executor.shutdown();
  }

  TestLoop loop;
  uv::UvExecutor executor{loop.get()};
  TestFilter filter;
  Owner owner;
  std::unique_ptr<StreamPeer> peer;
};

}  // namespace

TEST_SUITE("stream") {
  TEST_CASE("filtered reads: the owner sees decoded bytes; the filter's replies go out by themselves") {
    Fixture f;
    CHECK(f.owner.stream.filter() == &f.filter);
    CHECK(f.owner.stream.set_filter(&f.filter) == UV_EALREADY);
    f.peer->write("ab?c");
    CHECK(f.loop.run_until([&] { return f.owner.read == "ABC" && f.peer->received() == "!"; }));
    CHECK(f.owner.end_status == 0);
  }

  TEST_CASE("write and try_write are encoded; shutdown sends the filter's goodbye before EOF") {
    Fixture f;
    REQUIRE(f.owner.stream.write("HeLLo") == 0);
    CHECK(f.owner.stream.try_write("WORLD") == 5);
    int shut = 1;
    REQUIRE(f.owner.stream.shutdown([&](int status) { shut = status; }) == 0);
    CHECK(f.loop.run_until([&] { return f.peer->eof(); }));
    CHECK(f.peer->received() == "<hello><world>~bye");
    CHECK(shut == 0);
  }

  TEST_CASE("the filter's clean end is UV_EOF after the bytes before it; a failure is UV_EPROTO") {
    {
      Fixture f;
      f.peer->write("last~ignored");
      CHECK(f.loop.run_until([&] { return f.owner.end_status != 0; }));
      CHECK(f.owner.read == "LAST");
      CHECK(f.owner.end_status == UV_EOF);
    }
    Fixture f;
    f.peer->write("x^");
    CHECK(f.loop.run_until([&] { return f.owner.end_status != 0; }));
    CHECK(f.owner.end_status == UV_EPROTO);
    CHECK(f.filter.error() == "test failure");
    // The failure's reply (a TLS alert) is sent best-effort.
    CHECK(f.loop.run_until([&] { return f.peer->received() == "alert"; }));
  }

  TEST_CASE("an encoding failure is UV_EPROTO from write and try_write, and nothing is sent") {
    Fixture f;
    f.filter.fail_encode = true;
    CHECK(f.owner.stream.write("x") == UV_EPROTO);
    CHECK(f.owner.stream.try_write("x") == UV_EPROTO);
    f.loop.run_for(50ms);
    CHECK(f.peer->received().empty());
  }

  TEST_CASE("a StreamSink on a filtered Stream encodes each batch in one call, framing included") {
    Fixture f;
    uv::StreamSinkOptions options;
    options.framing.suffix = "\n";
    SinkEnd ended;
    bool shut_down = false;
    auto sink = std::make_shared<uv::StreamSink>(f.executor, f.owner.stream, options,
                                                 [&](const SinkEnd& end) {
                                                   ended = end;
                                                   shut_down = true;
                                                 });
    // Both queued before the loop runs: one batch.
    REQUIRE(sink->send(make_frame("ONE")) == SinkError::none);
    REQUIRE(sink->send(make_frame("Two")) == SinkError::none);
    // The bounds count the plaintext frames, not their encoding.
    CHECK(sink->stats().queued_bytes == 6);
    CHECK(f.loop.run_until([&] { return f.peer->received() == "<one\ntwo\n>"; }));
    CHECK(f.filter.encode_calls == 1);

    // A batch the filter cannot encode fails the sink as an I/O error; nothing reaches the wire.
    f.filter.fail_encode = true;
    REQUIRE(sink->send(make_frame("three")) == SinkError::none);
    CHECK(f.loop.run_until([&] { return shut_down; }));
    CHECK(ended.error == SinkError::io_error);
    f.loop.run_for(20ms);
    CHECK(f.peer->received() == "<one\ntwo\n>");
    sink->detach();
  }
}
