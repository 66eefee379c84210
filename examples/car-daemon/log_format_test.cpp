// car-daemon's log line formats (log_format.cpp): RFC 3339 time stamps, the text and JSON
// layouts, the request fields, and the escaping that keeps every record one parseable line.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "car/json.hpp"
#include "log_format.hpp"

using namespace car;
using namespace car::daemon;

namespace {

// 2026-12-03T08:10:00.123Z
LogTime sample_time() {
  using namespace std::chrono;
  return LogTime(sys_days(year(2026) / 12 / 3).time_since_epoch() + hours(8) + minutes(10) +
                 milliseconds(123) + microseconds(999));
}

LogRecord request_record() {
  LogRecord r;
  r.level = LogLevel::debug;
  r.message = "request";
  r.connection = "c-1";
  r.method = "runs.get";
  r.id_json = "\"abc\"";
  r.duration_us = 1234;
  r.error_code = -32602;
  return r;
}

json::Document parse_line(const std::string& line) {
  REQUIRE(!line.empty());
  CHECK(line.back() == '\n');
  CHECK(line.find('\n') == line.size() - 1);
  json::Document doc;
  doc.Parse(line.c_str(), line.size() - 1);
  REQUIRE_MESSAGE(!doc.HasParseError(), "not JSON: " << line);
  REQUIRE(doc.IsObject());
  return doc;
}

}  // namespace

TEST_SUITE("log_format") {
  TEST_CASE("text: RFC 3339 UTC with milliseconds (truncated), the level tag, the message") {
    LogRecord r;
    r.level = LogLevel::info;
    r.message = "shutting down (SIGTERM)";
    CHECK(format_text_log_line(sample_time(), r) ==
          "2026-12-03T08:10:00.123Z [car info] shutting down (SIGTERM)\n");
    CHECK(format_text_log_line(LogTime(), r).rfind("1970-01-01T00:00:00.000Z [car info] ", 0) == 0);
  }

  TEST_CASE("text: request fields as key=value in a fixed order") {
    CHECK(format_text_log_line(sample_time(), request_record()) ==
          "2026-12-03T08:10:00.123Z [car debug] request connection=c-1 method=runs.get id=\"abc\" "
          "duration_us=1234 error_code=-32602\n");
  }

  TEST_CASE("text: a control character cannot end the line or reach the terminal") {
    LogRecord r;
    r.level = LogLevel::warn;
    r.message = "a\nb\tc\x1b[31m\x7f\xff";
    CHECK(format_text_log_line(sample_time(), r) ==
          "2026-12-03T08:10:00.123Z [car warn] a\\nb\\tc\\u001b[31m\\u007f\xEF\xBF\xBD\n");
  }

  TEST_CASE("json: time, level and message always; request fields when present") {
    auto doc = parse_line(format_json_log_line(sample_time(), request_record()));
    CHECK(std::string(doc["time"].GetString()) == "2026-12-03T08:10:00.123Z");
    CHECK(std::string(doc["level"].GetString()) == "debug");
    CHECK(std::string(doc["message"].GetString()) == "request");
    CHECK(std::string(doc["connection"].GetString()) == "c-1");
    CHECK(std::string(doc["method"].GetString()) == "runs.get");
    CHECK(std::string(doc["id"].GetString()) == "abc");
    CHECK(doc["duration_us"].GetInt64() == 1234);
    CHECK(doc["error_code"].GetInt() == -32602);

    LogRecord plain;
    plain.level = LogLevel::error;
    plain.message = "x";
    auto bare = parse_line(format_json_log_line(sample_time(), plain));
    CHECK(bare.MemberCount() == 3);
    CHECK(std::string(bare["level"].GetString()) == "error");
  }

  TEST_CASE("json: a numeric id stays a number, a notification has no id") {
    auto r = request_record();
    r.id_json = "42";
    r.error_code.reset();
    auto doc = parse_line(format_json_log_line(sample_time(), r));
    CHECK(doc["id"].IsInt());
    CHECK(doc["id"].GetInt() == 42);
    CHECK_FALSE(doc.HasMember("error_code"));
    r.message = "notification";
    r.id_json = {};
    CHECK_FALSE(parse_line(format_json_log_line(sample_time(), r)).HasMember("id"));
  }

  TEST_CASE("json: quotes, backslashes, control characters and bad UTF-8 are escaped") {
    LogRecord r;
    r.level = LogLevel::info;
    std::string message = "q\"b\\s\nn\x01 \xC3\xA9 \xC3 \xED\xA0\x80!";
    r.message = message;
    std::string line = format_json_log_line(sample_time(), r);
    CHECK(line.find("q\\\"b\\\\s\\nn\\u0001") != std::string::npos);
    auto doc = parse_line(line);
    // Valid characters survive; the lone lead byte and the encoded surrogate become U+FFFD.
    CHECK(std::string(doc["message"].GetString()) ==
          "q\"b\\s\nn\x01 \xC3\xA9 \xEF\xBF\xBD \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD!");
  }

  TEST_CASE("repair_utf8 keeps valid text byte for byte") {
    CHECK(repair_utf8("plain") == "plain");
    CHECK(repair_utf8("\xF0\x9F\x98\x80") == "\xF0\x9F\x98\x80");
    CHECK(repair_utf8("\x80") == "\xEF\xBF\xBD");
    CHECK(repair_utf8("a\xE2\x82") == "a\xEF\xBF\xBD\xEF\xBF\xBD");
    CHECK(repair_utf8("") == "");
  }

  TEST_CASE("format_log_line picks the format") {
    auto r = request_record();
    CHECK(format_log_line(LogLineFormat::json, sample_time(), r) ==
          format_json_log_line(sample_time(), r));
    CHECK(format_log_line(LogLineFormat::text, sample_time(), r) ==
          format_text_log_line(sample_time(), r));
  }
}
