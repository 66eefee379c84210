// The per-request debug record (request_log.cpp, written from reply.cpp) and the record sink of
// car/log.hpp: which fields a request line carries, that params and tokens never reach it, that
// nothing is written above debug, and that the older text sink still works.
#include <mutex>

#include "../../test_support.hpp"

using namespace car;
using namespace car::test;

namespace {

// A copy of one record (the sink's views end with the call).
struct Captured {
  LogLevel level;
  std::string message;
  std::string connection;
  std::string method;
  std::string id_json;
  std::optional<std::int64_t> duration_us;
  std::optional<int> error_code;
  std::string described;
};

// Installs a record sink for its lifetime at `level`; restores the stderr sink and info after.
struct RecordCapture {
  explicit RecordCapture(LogLevel level) {
    set_log_level(level);
    set_log_record_sink([this](const LogRecord& r) {
      std::lock_guard lock(mutex);
      records.push_back({r.level, std::string(r.message), std::string(r.connection),
                         std::string(r.method), std::string(r.id_json), r.duration_us, r.error_code,
                         describe_log_record(r)});
    });
  }
  ~RecordCapture() {
    set_log_record_sink({});
    set_log_level(LogLevel::info);
  }
  std::vector<Captured> requests() {
    std::lock_guard lock(mutex);
    std::vector<Captured> out;
    for (const auto& r : records) {
      if (r.message == "request" || r.message == "notification") out.push_back(r);
    }
    return out;
  }
  std::mutex mutex;
  std::vector<Captured> records;
};

void add_methods(Server& server, std::vector<Reply>* parked) {
  server.methods().add("echo", {optional("value", ParamType::any)},
                       [](const Request&, Reply reply) { reply.ok("true"); });
  server.methods().add("park", {},
                       [parked](const Request&, Reply reply) { parked->push_back(reply); });
}

}  // namespace

TEST_SUITE("request_log") {
  TEST_CASE("a request answered ok logs method, id, duration and connection, no error code") {
    RecordCapture capture(LogLevel::debug);
    Fixture f;
    std::vector<Reply> parked;
    add_methods(f.server, &parked);
    f.call(R"({"jsonrpc":"2.0","id":7,"method":"echo","params":{"value":"PARAM-SECRET"}})");
    auto lines = capture.requests();
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].level == LogLevel::debug);
    CHECK(lines[0].message == "request");
    CHECK(lines[0].method == "echo");
    CHECK(lines[0].id_json == "7");
    CHECK(lines[0].connection == f.client().connection->client_id());
    REQUIRE(lines[0].duration_us.has_value());
    CHECK(*lines[0].duration_us >= 0);
    CHECK_FALSE(lines[0].error_code.has_value());
    for (const auto& r : capture.records) {
      CHECK(r.described.find("PARAM-SECRET") == std::string::npos);
    }
  }

  TEST_CASE("an error answer carries its code; a string id stays JSON text") {
    RecordCapture capture(LogLevel::debug);
    Fixture f;
    f.call(R"({"jsonrpc":"2.0","id":"a\"b","method":"no.such.method"})");
    auto lines = capture.requests();
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].id_json == R"("a\"b")");
    REQUIRE(lines[0].error_code.has_value());
    CHECK(*lines[0].error_code == -32601);
    CHECK(lines[0].described.find(" error_code=-32601") != std::string::npos);
  }

  TEST_CASE("session.auth never logs its token, failing or succeeding") {
    RecordCapture capture(LogLevel::trace);
    Fixture f(Fixture::enabled_auth());
    auto bad = f.call(
        R"({"jsonrpc":"2.0","id":1,"method":"session.auth","params":{"token":"WRONG-TOKEN-123"}})");
    CHECK(bad.HasMember("error"));
    Fixture g(Fixture::enabled_auth());
    auto good =
        g.call(R"({"jsonrpc":"2.0","id":2,"method":"session.auth","params":{"token":"secret"}})");
    CHECK(good.HasMember("result"));
    auto lines = capture.requests();
    REQUIRE(lines.size() == 2);
    CHECK(lines[0].method == "session.auth");
    CHECK(lines[0].error_code.has_value());
    CHECK_FALSE(lines[1].error_code.has_value());
    for (const auto& r : capture.records) {
      CHECK(r.described.find("WRONG-TOKEN-123") == std::string::npos);
      CHECK(r.described.find("secret") == std::string::npos);
    }
  }

  TEST_CASE("a notification is logged as one, without an id") {
    RecordCapture capture(LogLevel::debug);
    Fixture f;
    std::vector<Reply> parked;
    add_methods(f.server, &parked);
    CHECK(f.exchange(R"({"jsonrpc":"2.0","method":"echo"})").empty());
    auto lines = capture.requests();
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].message == "notification");
    CHECK(lines[0].method == "echo");
    CHECK(lines[0].id_json.empty());
    CHECK(lines[0].duration_us.has_value());
  }

  TEST_CASE("the line is written when the reply is, not when the handler returns") {
    RecordCapture capture(LogLevel::debug);
    Fixture f;
    std::vector<Reply> parked;
    add_methods(f.server, &parked);
    CHECK(f.exchange(R"({"jsonrpc":"2.0","id":1,"method":"park"})").empty());
    CHECK(capture.requests().empty());
    REQUIRE(parked.size() == 1);
    parked[0].error(ErrorCode::server_busy, "later");
    f.executor.run_until_idle();
    auto lines = capture.requests();
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].error_code == -32000);
  }

  TEST_CASE("above debug no request line is written") {
    RecordCapture capture(LogLevel::info);
    Fixture f;
    std::vector<Reply> parked;
    add_methods(f.server, &parked);
    f.call(R"({"jsonrpc":"2.0","id":1,"method":"echo"})");
    CHECK(capture.requests().empty());
    // The same exchange at debug does write one, so the check above can fail.
    set_log_level(LogLevel::debug);
    f.call(R"({"jsonrpc":"2.0","id":2,"method":"echo"})");
    CHECK(capture.requests().size() == 1);
  }

  TEST_CASE("a long method name is cut at a character boundary") {
    RecordCapture capture(LogLevel::debug);
    Fixture f;
    // Byte 256 falls inside the two-byte é: the cut goes before it.
    std::string method = std::string(255, 'a') + "\xC3\xA9" + "tail";
    f.call(R"({"jsonrpc":"2.0","id":1,"method":")" + method + R"("})");
    auto lines = capture.requests();
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].method == std::string(255, 'a'));
  }

  TEST_CASE("the older text sink gets the message with the fields as key=value") {
    std::vector<std::pair<LogLevel, std::string>> lines;
    set_log_level(LogLevel::debug);
    set_log_sink([&lines](LogLevel level, std::string_view line) {
      lines.emplace_back(level, std::string(line));
    });
    {
      Fixture f;
      f.call(R"({"jsonrpc":"2.0","id":3,"method":"nope"})");
      std::string client = f.client().connection->client_id();
      log_info("plain {}", 1);
      set_log_sink({});
      set_log_level(LogLevel::info);
      std::string request_line;
      bool plain = false;
      for (const auto& [level, line] : lines) {
        if (line.rfind("request ", 0) == 0) request_line = line;
        plain = plain || (level == LogLevel::info && line == "plain 1");
      }
      CHECK(plain);
      std::string head = "request connection=" + client + " method=nope id=3 duration_us=";
      std::string tail = " error_code=-32601";
      CHECK(request_line.rfind(head, 0) == 0);
      REQUIRE(request_line.size() > head.size() + tail.size());
      CHECK(request_line.substr(request_line.size() - tail.size()) == tail);
      std::string micros =
          request_line.substr(head.size(), request_line.size() - head.size() - tail.size());
      CHECK(micros.find_first_not_of("0123456789") == std::string::npos);
    }
  }

  TEST_CASE("describe_log_record lists the fields present, in order") {
    LogRecord r;
    r.message = "request";
    r.method = "m";
    r.id_json = "\"x\"";
    r.duration_us = 12;
    CHECK(describe_log_record(r) == "request method=m id=\"x\" duration_us=12");
    LogRecord plain;
    plain.message = "hello";
    CHECK_FALSE(plain.has_fields());
    CHECK(describe_log_record(plain) == "hello");
  }
}
