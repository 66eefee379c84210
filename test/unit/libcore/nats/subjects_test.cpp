#include "car/nats/subjects.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace car::nats;

TEST_SUITE("subjects") {
  TEST_CASE("plain ids stay readable, everything else is escaped") {
    CHECK(encode_subject_token("agent-1_x") == "agent-1_x");
    CHECK(encode_subject_token("a.b") == "a%2Eb");
    CHECK(encode_subject_token(">") == "%3E");
    CHECK(encode_subject_token("*") == "%2A");
    CHECK(encode_subject_token("a b") == "a%20b");
    CHECK(encode_subject_token("%") == "%25");
    CHECK(encode_subject_token("") == "%");
    CHECK(encode_subject_token("\xC3\xA9") == "%C3%A9");
  }

  TEST_CASE("decoding inverts encoding for every byte") {
    std::string all;
    for (int c = 0; c < 256; ++c) all.push_back(static_cast<char>(c));
    std::string token = encode_subject_token(all);
    CHECK(token.find_first_of(".*> \t\r\n") == std::string::npos);
    auto back = decode_subject_token(token);
    REQUIRE(back);
    CHECK(*back == all);
    CHECK(decode_subject_token("%") == std::string());
  }

  TEST_CASE("tokens the encoder cannot produce are refused") {
    CHECK_FALSE(decode_subject_token(""));
    CHECK_FALSE(decode_subject_token("a%"));
    CHECK_FALSE(decode_subject_token("a%2"));
    CHECK_FALSE(decode_subject_token("a%2e"));  // lower-case hex
    CHECK_FALSE(decode_subject_token("%41"));   // 'A' is never escaped
    CHECK_FALSE(decode_subject_token("a.b"));
    CHECK_FALSE(decode_subject_token("%%"));
  }

  TEST_CASE("run subjects round-trip through parse_run_subject") {
    std::string subject = run_subject("car", "host.1", "agent>x", "run 7");
    CHECK(subject == "car.runs.host%2E1.agent%3Ex.run%207");
    auto parsed = parse_run_subject("car", subject);
    REQUIRE(parsed);
    CHECK(parsed->host_id == "host.1");
    CHECK(parsed->agent_id == "agent>x");
    CHECK(parsed->run_id == "run 7");
    CHECK_FALSE(parse_run_subject("car", "car.runs.a.b"));
    CHECK_FALSE(parse_run_subject("car", "car.runs.a.b.c.d"));
    CHECK_FALSE(parse_run_subject("car", "car.host.a.events"));
    CHECK_FALSE(parse_run_subject("car", "cars.runs.a.b.c"));
    CHECK_FALSE(parse_run_subject("other", subject));
    CHECK_FALSE(parse_run_subject("car", "car.runs.a..c"));
  }

  TEST_CASE("filters use wildcards only where an id is absent") {
    CHECK(runs_filter("car", std::nullopt, std::nullopt) == "car.runs.*.*.*");
    CHECK(runs_filter("car", "h", std::nullopt) == "car.runs.h.*.*");
    CHECK(runs_filter("car", std::nullopt, "*") == "car.runs.*.%2A.*");
    CHECK(host_events_filter("car") == "car.host.*.events");
  }

  TEST_CASE("host event subjects and message ids") {
    std::string subject = host_events_subject("car", "h 1");
    CHECK(subject == "car.host.h%201.events");
    CHECK(parse_host_events_subject("car", subject) == std::string("h 1"));
    CHECK_FALSE(parse_host_events_subject("car", "car.host.h.other"));
    CHECK(record_message_id("h", "r", 3) == "h/r/3");
    CHECK(host_event_message_id("h", "b", 9) == "h/events/b/9");
  }
}
