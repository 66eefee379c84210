// A run's trace read back from the stream (fleet_trace.cpp) and the replies shaped from it
// (fleet_json.cpp): cursors and statuses as the local service gives them, paging, the bounded
// snapshot, and the local shapes plus host_id.
#include "car/fleet/fleet_json.hpp"
#include "car/fleet/fleet_trace.hpp"

#include <doctest/doctest.h>

#include <fmt/format.h>

#include <string>

#include "car/json.hpp"

using namespace car;
using namespace car::fleet;

namespace {

StoredTrace sample(int turns, bool ended, std::size_t pad = 0) {
  StoredTrace t;
  t.host_id = "h1";
  t.agent_id = "bot";
  t.run_id = "r1";
  std::uint64_t seq = 10;
  CHECK(t.add(0, R"({"record":"started","run_id":"r1","agent_id":"bot","intent":"x","started_at":"t"})", seq++));
  for (int i = 0; i < turns; ++i) {
    CHECK(t.add(static_cast<std::uint64_t>(i + 1),
                fmt::format(R"({{"record":"turn","index":{},"prompt":"{}"}})", i, std::string(pad, 'x')),
                seq++));
  }
  if (ended) {
    CHECK(t.add(static_cast<std::uint64_t>(turns + 1),
                R"({"record":"ended","termination":"outcome","outcome":{},"ended_at":"t2"})", seq++));
  }
  return t;
}

json::Document parse(std::string_view text) {
  json::Document doc;
  REQUIRE_FALSE(json::parse(text, doc));
  return doc;
}

}  // namespace

TEST_SUITE("fleet_trace") {
  TEST_CASE("event cursors and statuses follow the local rules") {
    CHECK(event_cursor("started", 0) == 0);
    CHECK(event_cursor("turn", 1) == 1);  // turn 0, the count after it
    CHECK(event_cursor("turn", 8) == 8);
    CHECK(event_cursor("ended", 9) == 8);  // the final count
    CHECK(status_after(R"({"record":"turn","index":0})") == runs::RunStatus::in_progress);
    CHECK(status_after(R"({"record":"ended","termination":"outcome","outcome":{}})") ==
          runs::RunStatus::completed);
    CHECK(status_after(R"({"record":"ended","termination":"incomplete"})") ==
          runs::RunStatus::incomplete);
  }

  TEST_CASE("records are kept by offset: duplicates and records after a hole are not served") {
    StoredTrace t = sample(2, false);
    CHECK_FALSE(t.add(1, R"({"record":"turn","index":0})", 99));
    CHECK_FALSE(t.add(5, R"({"record":"turn","index":4})", 99));
    CHECK(t.records.size() == 3);
    CHECK(t.last_sequence == 99);  // the highest read: a live feed starts after it
    CHECK(t.turn_count() == 2);
    CHECK(t.status() == runs::RunStatus::in_progress);
    StoredTrace done = sample(2, true);
    CHECK(done.turn_count() == 2);
    CHECK(done.status() == runs::RunStatus::completed);
    CHECK_FALSE(done.add(4, R"({"record":"turn","index":3})", 99));  // nothing after an ending
  }

  TEST_CASE("a record republished after later ones fills its hole") {
    // The broker refused offset 3 and stored 4 and 5; the retry stored 3 after them.
    StoredTrace t = sample(2, false);  // offsets 0..2
    CHECK_FALSE(t.add(4, R"({"record":"turn","index":3})", 20));
    CHECK_FALSE(t.add(5, R"({"record":"ended","termination":"outcome"})", 21));
    CHECK(t.records.size() == 3);
    CHECK(t.add(3, R"({"record":"turn","index":2})", 22));
    CHECK(t.records.size() == 6);
    CHECK(t.ended);
    CHECK(*t.records[3] == R"({"record":"turn","index":2})");
    CHECK(*t.records[4] == R"({"record":"turn","index":3})");
    CHECK(t.ahead.empty());
    CHECK(t.last_sequence == 22);
    CHECK_FALSE(t.add(4, R"({"record":"turn","index":3})", 23));  // the republished duplicates
  }

  TEST_CASE("pages hold at most max_bytes (at least one record) and name the next cursor") {
    StoredTrace t = sample(4, true, 100);
    TracePage all = page_of(t, 0, 1 << 20);
    CHECK(all.records.size() == 6);
    CHECK_FALSE(all.next_cursor);
    TracePage small = page_of(t, 1, 300);  // a turn is 139 bytes
    CHECK(small.records.size() == 2);
    REQUIRE(small.next_cursor);
    CHECK(*small.next_cursor == 3);
    TracePage tiny = page_of(t, 2, 1);
    CHECK(tiny.records.size() == 1);
    CHECK(page_of(t, 6, 100).records.empty());
  }

  TEST_CASE("a snapshot keeps the newest turns within its bound and says where they start") {
    StoredTrace t = sample(5, false, 100);
    TraceSnapshot whole = snapshot_of(t, 1 << 20);
    CHECK(whole.turns.size() == 5);
    CHECK(whole.turns_from == 0);
    TraceSnapshot newest = snapshot_of(t, 300);
    CHECK(newest.turns.size() == 2);
    CHECK(newest.turns_from == 3);
    CHECK(*newest.turns.back() == *t.records[5]);
    TraceSnapshot one = snapshot_of(t, 1);
    CHECK(one.turns.size() == 1);
    CHECK(one.turns_from == 4);
    CHECK(snapshot_of(sample(0, false), 100).turns.empty());
  }

  TEST_CASE("replies: the local shapes plus host_id") {
    StoredTrace t = sample(2, false);
    auto snap = parse(snapshot_result(t, snapshot_of(t, 1 << 20)));
    CHECK(json::view(snap["run_id"]) == "r1");
    CHECK(json::view(snap["agent_id"]) == "bot");
    CHECK(json::view(snap["host_id"]) == "h1");
    CHECK(snap["turns_so_far"].Size() == 2);
    CHECK(snap["cursor"].GetUint64() == 2);
    CHECK(json::view(snap["status"]) == "in_progress");
    CHECK_FALSE(snap.HasMember("turns_from"));

    auto page = parse(trace_page_result(t, page_of(t, 1, 1 << 20), 1));
    CHECK(page["records"].Size() == 2);
    CHECK(page["cursor"].GetUint64() == 1);
    CHECK(json::view(page["host_id"]) == "h1");
    CHECK_FALSE(page.HasMember("next_cursor"));

    auto event = parse(trace_event_text(t, *t.records[2], 2, runs::RunStatus::in_progress));
    CHECK(json::view(event["method"]) == "runs.trace.event");
    CHECK(event["params"]["cursor"].GetUint64() == 2);
    CHECK(json::view(event["params"]["record"]["record"]) == "turn");
    CHECK(json::view(event["params"]["host_id"]) == "h1");

    CHECK(trace_gap_text("r1", 3, 9, 6) ==
          R"({"jsonrpc":"2.0","method":"runs.trace.gap","params":{"run_id":"r1","from_cursor":3,"to_cursor":9,"dropped":6}})");
    CHECK(trace_not_found_result("r9") == R"({"run_id":"r9","not_found":true})");
  }

  TEST_CASE("runs.list and fleet.hosts replies") {
    FleetRunPage page;
    FleetRun run;
    run.host_id = "h2";
    run.agent_id = "bot";
    run.run_id = "r2";
    run.intent = "x";
    run.started_at = "t";
    run.turn_count = 3;
    page.runs.push_back(run);
    page.next_before = "r2";
    auto list = parse(list_result("bot", std::nullopt, page));
    CHECK(json::view(list["agent_id"]) == "bot");
    CHECK_FALSE(list.HasMember("host_id"));
    REQUIRE(list["runs"].Size() == 1);
    CHECK(json::view(list["runs"][0]["host_id"]) == "h2");
    CHECK(json::view(list["runs"][0]["status"]) == "in_progress");
    CHECK(list["runs"][0]["turn_count"].GetUint64() == 3);
    CHECK_FALSE(list["runs"][0].HasMember("ended_at"));
    CHECK(json::view(list["next_before"]) == "r2");

    FleetHost host{"h1", 1'764'756'000'123'000'000, 4, 20, 1};
    auto hosts = parse(hosts_result(std::span<const FleetHost>(&host, 1), 3, 1, 100));
    REQUIRE(hosts["hosts"].Size() == 1);
    CHECK(json::view(hosts["hosts"][0]["host_id"]) == "h1");
    CHECK(json::view(hosts["hosts"][0]["last_record_at"]) == "2025-12-03T10:00:00.123Z");
    CHECK(hosts["hosts"][0]["runs_seen"].GetUint64() == 4);
    CHECK(hosts["runs_indexed"].GetUint64() == 3);
    CHECK(hosts["max_runs"].GetUint64() == 100);
  }
}
