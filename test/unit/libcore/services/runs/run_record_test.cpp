// The pure record helpers of a run's trace (run_record.hpp): slugs, timestamps, record kinds, and
// turn records with their stamped index and truncation (PROTOCOL.md §7.1, §7.3).
#include "run_test_support.hpp"

using namespace car;
using namespace car::test;

namespace {

std::string started(const std::string& run, const std::string& agent, const std::string& at) {
  return make_started_record({run, agent, "client-1", "intent " + run, std::nullopt, at});
}

}  // namespace

TEST_SUITE("run_record") {
  TEST_CASE("slugs, timestamps and record kinds") {
    CHECK(slugify("My Bot") == "my-bot");
    CHECK(slugify("  --Hello,  World!! 42 ") == "hello-world-42");
    CHECK(slugify("\xC3\xA9t\xC3\xA9") == "t");
    CHECK(slugify("!!!").empty());
    CHECK(slugify("").empty());
    using namespace std::chrono;
    auto t = system_clock::time_point(milliseconds(1795514400123LL));
    CHECK(format_timestamp(t) == "2026-11-24T10:00:00.123Z");
    CHECK(record_kind(R"({"record":"turn","index":0})") == "turn");
    CHECK(record_kind(R"({"record":"turnx"})").empty());
    CHECK(record_kind(started("r", "a", "t")) == "started");
    CHECK(record_kind(make_ended_record({}, "t")) == "ended");
    auto ended = parse_json(make_ended_record({}, "t"));
    CHECK(std::string(ended["termination"].GetString()) == "incomplete");
    CHECK_FALSE(ended.HasMember("outcome"));
  }

  TEST_CASE("turn records: stamped index, truncation on a UTF-8 boundary, oversize marker, too large") {
    json::Document turn;
    SUBCASE("stamp replaces a client index; verifier_verdict defaults to not_run") {
      turn.Parse(R"({"index":99,"record":"x","prompt":"hi","tool":"t"})");
      auto r = parse_json(*make_turn_record(turn, 7));
      CHECK(std::string(r["record"].GetString()) == "turn");
      CHECK(r["index"].GetInt() == 7);
      CHECK(std::string(r["prompt"].GetString()) == "hi");
      CHECK(std::string(r["verifier_verdict"].GetString()) == "not_run");
      turn.Parse(R"({"verifier_verdict":"passed"})");
      CHECK(std::string(parse_json(*make_turn_record(turn, 0))["verifier_verdict"].GetString()) ==
            "passed");
    }
    SUBCASE("strings above 16384 bytes are cut to a valid prefix and marked, at any depth") {
      // 16383 ASCII bytes then a 2-byte character: the cut must not split it.
      std::string long_text = std::string(16383, 'a') + "\xC3\xA9" + "tail";
      json::Builder b;
      b.begin_object().key("output").str(long_text).key("parameters").begin_object();
      b.key("deep").begin_array().str(long_text).end_array().end_object().end_object();
      turn.Parse(b.take().c_str());
      auto r = parse_json(*make_turn_record(turn, 0));
      std::string out = r["output"].GetString();
      CHECK(out == std::string(16383, 'a') + std::string(truncation_marker));
      CHECK(std::string(r["parameters"]["deep"][0].GetString()) == out);
      std::string exact(16384, 'b');
      turn.Parse((R"({"prompt":")" + exact + R"("})").c_str());
      CHECK(std::string(parse_json(*make_turn_record(turn, 0))["prompt"].GetString()) == exact);
    }
    SUBCASE("still above 256 KiB: prompt, parameters and output give way to the marker") {
      CHECK(oversize_marker == "\xE2\x80\xA6[truncated: turn exceeded 256 KiB]");
      json::Builder b;
      b.begin_object().key("prompt").str("short").key("tool").str("keep").key("output").begin_array();
      for (int i = 0; i < 20; ++i) b.str(std::string(16000, 'x'));
      b.end_array().key("parameters").str("p").end_object();
      turn.Parse(b.take().c_str());
      auto record = make_turn_record(turn, 0);
      REQUIRE(record);
      auto r = parse_json(*record);
      CHECK(std::string(r["output"].GetString()) == oversize_marker);
      CHECK(std::string(r["parameters"].GetString()) == oversize_marker);
      // Replaced even though it was short: the contract replaces all three (PROTOCOL.md §7.3).
      CHECK(std::string(r["prompt"].GetString()) == oversize_marker);
      CHECK(std::string(r["tool"].GetString()) == "keep");
    }
    SUBCASE("only the bulk members present are replaced; none is added") {
      json::Builder b;
      b.begin_object().key("tool").str("t").key("prompt").begin_array();
      for (int i = 0; i < 20; ++i) b.str(std::string(16000, 'x'));
      b.end_array().end_object();
      turn.Parse(b.take().c_str());
      auto r = parse_json(*make_turn_record(turn, 3));
      CHECK(std::string(r["prompt"].GetString()) == oversize_marker);
      CHECK_FALSE(r.HasMember("parameters"));
      CHECK_FALSE(r.HasMember("output"));
      CHECK(r["index"].GetInt() == 3);
    }
    SUBCASE("the marker names the limit in force") {
      CHECK(oversize_marker_for(TurnLimits{}) == oversize_marker);
      TurnLimits kib;
      kib.max_turn_bytes = 8 * 1024;
      CHECK(oversize_marker_for(kib) == "\xE2\x80\xA6[truncated: turn exceeded 8 KiB]");
      TurnLimits odd;
      odd.max_turn_bytes = 5000;
      CHECK(oversize_marker_for(odd) == "\xE2\x80\xA6[truncated: turn exceeded 5000 bytes]");
      json::Builder b;
      b.begin_object().key("output").str(std::string(6000, 'y')).end_object();
      turn.Parse(b.take().c_str());
      auto r = parse_json(*make_turn_record(turn, 0, odd));
      CHECK(std::string(r["output"].GetString()) == oversize_marker_for(odd));
    }
    SUBCASE("too large even then: nothing") {
      // The bulk is in a member that is not replaced, so the turn cannot be shrunk enough.
      json::Builder b;
      b.begin_object().key("prompt").str("p").key("cli_outcome").begin_array();
      for (int i = 0; i < 20; ++i) b.str(std::string(16000, 'x'));
      b.end_array().end_object();
      turn.Parse(b.take().c_str());
      CHECK_FALSE(make_turn_record(turn, 0).has_value());
    }
  }
}
