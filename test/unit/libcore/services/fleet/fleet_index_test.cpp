// The fleet gateway's index (fleet_index.cpp): summaries built from the exporter's records in
// stream order, several hosts, duplicates and holes, runs.list paging, and the eviction bound.
#include "car/fleet/fleet_index.hpp"

#include <doctest/doctest.h>

#include <fmt/format.h>

#include <string>
#include <vector>

using namespace car;
using namespace car::fleet;

namespace {

struct Feed {
  explicit Feed(FleetIndex& i) : index(i) {}
  FleetIndex& index;
  std::uint64_t sequence = 0;
  std::vector<std::string> texts;  // FleetRecord holds views

  bool add(std::string_view host, std::string_view agent, std::string_view run,
           std::uint64_t offset, std::string json, std::int64_t at_ns = 1000) {
    texts.push_back(std::move(json));
    return index.apply({host, agent, run, offset, ++sequence, at_ns, texts.back()});
  }
  void started(std::string_view host, std::string_view agent, std::string_view run,
               std::string_view at, std::string_view intent = "work") {
    add(host, agent, run, 0,
        fmt::format(R"({{"record":"started","run_id":"{}","agent_id":"{}","client_id":"c",)"
                    R"("intent":"{}","started_at":"{}"}})",
                    run, agent, intent, at));
  }
  void turn(std::string_view host, std::string_view agent, std::string_view run,
            std::uint64_t index_of_turn) {
    add(host, agent, run, index_of_turn + 1,
        fmt::format(R"({{"record":"turn","index":{},"prompt":"p"}})", index_of_turn));
  }
  void ended(std::string_view host, std::string_view agent, std::string_view run,
             std::uint64_t offset, bool outcome) {
    add(host, agent, run, offset,
        outcome ? R"({"record":"ended","termination":"outcome","outcome":{"status":"success"},"ended_at":"2026-12-03T10:00:09.000Z"})"
                : R"({"record":"ended","termination":"incomplete","ended_at":"2026-12-03T10:00:09.000Z"})");
  }
};

}  // namespace

TEST_SUITE("fleet_index") {
  TEST_CASE("summaries of two hosts' runs, newest started_at first, each with its host") {
    FleetIndex index;
    Feed f{index};
    f.started("h1", "bot", "r1", "2026-12-03T10:00:00.000Z", "first");
    f.started("h2", "bot", "r2", "2026-12-03T10:00:01.000Z", "second");
    f.turn("h1", "bot", "r1", 0);
    f.turn("h1", "bot", "r1", 1);
    f.turn("h2", "bot", "r2", 0);
    f.ended("h1", "bot", "r1", 3, true);

    auto page = index.list("bot", std::nullopt, std::nullopt, std::nullopt);
    REQUIRE(page);
    REQUIRE(page.value().runs.size() == 2);
    const FleetRun& newest = page.value().runs[0];
    CHECK(newest.run_id == "r2");
    CHECK(newest.host_id == "h2");
    CHECK(newest.intent == "second");
    CHECK(newest.status == runs::RunStatus::in_progress);
    CHECK(newest.turn_count == 1);
    CHECK_FALSE(newest.ended_at);
    const FleetRun& older = page.value().runs[1];
    CHECK(older.run_id == "r1");
    CHECK(older.host_id == "h1");
    CHECK(older.status == runs::RunStatus::completed);
    CHECK(older.turn_count == 2);
    CHECK(older.ended_at == std::optional<std::string>("2026-12-03T10:00:09.000Z"));
    CHECK(older.first_sequence == 1);
    CHECK(older.last_sequence == 6);

    auto only_h1 = index.list("bot", std::string_view("h1"), std::nullopt, std::nullopt);
    REQUIRE(only_h1);
    REQUIRE(only_h1.value().runs.size() == 1);
    CHECK(only_h1.value().runs[0].run_id == "r1");
    auto nobody = index.list("other", std::nullopt, std::nullopt, std::nullopt);
    REQUIRE(nobody);
    CHECK(nobody.value().runs.empty());
  }

  TEST_CASE("an incomplete ending reads incomplete") {
    FleetIndex index;
    Feed f{index};
    f.started("h1", "bot", "r1", "2026-12-03T10:00:00.000Z");
    f.ended("h1", "bot", "r1", 1, false);
    auto found = index.find("r1");
    REQUIRE(found.size() == 1);
    CHECK(found[0].status == runs::RunStatus::incomplete);
    CHECK(found[0].turn_count == 0);
  }

  TEST_CASE("a duplicate offset is ignored, a hole is counted and applied") {
    FleetIndex index;
    Feed f{index};
    f.started("h1", "bot", "r1", "2026-12-03T10:00:00.000Z");
    f.turn("h1", "bot", "r1", 0);
    CHECK_FALSE(f.add("h1", "bot", "r1", 1, R"({"record":"turn","index":0})"));
    CHECK(index.records_ignored() == 1);
    CHECK(index.find("r1")[0].turn_count == 1);
    f.turn("h1", "bot", "r1", 5);  // offsets 2..5 never arrived
    CHECK(index.offset_gaps() == 1);
    CHECK(index.find("r1")[0].turn_count == 2);
    CHECK(index.find("r1")[0].next_offset == 7);
  }

  TEST_CASE("the same run id on two hosts is two runs; find names both or the one asked for") {
    FleetIndex index;
    Feed f{index};
    f.started("h1", "bot", "same", "2026-12-03T10:00:00.000Z");
    f.started("h2", "bot", "same", "2026-12-03T10:00:01.000Z");
    CHECK(index.find("same").size() == 2);
    auto on_h2 = index.find("same", std::string_view("h2"));
    REQUIRE(on_h2.size() == 1);
    CHECK(on_h2[0].host_id == "h2");
    CHECK(index.find("same", std::string_view("h3")).empty());
    CHECK(index.find("missing").empty());
  }

  TEST_CASE("paging with limit and before, as the local runs.list") {
    FleetIndex index;
    Feed f{index};
    for (int i = 0; i < 5; ++i) {
      f.started(i % 2 == 0 ? "h1" : "h2", "bot", fmt::format("r{}", i),
                fmt::format("2026-12-03T10:00:0{}.000Z", i));
    }
    auto first = index.list("bot", std::nullopt, std::size_t{2}, std::nullopt);
    REQUIRE(first);
    REQUIRE(first.value().runs.size() == 2);
    CHECK(first.value().runs[0].run_id == "r4");
    CHECK(first.value().runs[1].run_id == "r3");
    REQUIRE(first.value().next_before);
    CHECK(*first.value().next_before == "r3");
    auto second = index.list("bot", std::nullopt, std::size_t{2}, std::string_view("r3"));
    REQUIRE(second);
    CHECK(second.value().runs[0].run_id == "r2");
    CHECK(second.value().runs[1].run_id == "r1");
    auto last = index.list("bot", std::nullopt, std::size_t{2}, std::string_view("r1"));
    REQUIRE(last);
    REQUIRE(last.value().runs.size() == 1);
    CHECK(last.value().runs[0].run_id == "r0");
    CHECK_FALSE(last.value().next_before);

    auto bad = index.list("bot", std::nullopt, std::size_t{2}, std::string_view("nope"));
    REQUIRE_FALSE(bad);
    CHECK(bad.error().code == static_cast<int>(ErrorCode::invalid_params));
    CHECK(bad.error().message == "unknown run 'nope' for 'before'");
  }

  TEST_CASE("hosts: last record time, runs and records seen") {
    FleetIndex index;
    Feed f{index};
    f.add("h1", "a", "r1", 0, R"({"record":"started","intent":"x","started_at":"t"})", 5000);
    f.add("h1", "a", "r1", 1, R"({"record":"turn","index":0})", 7000);
    f.add("h2", "b", "r2", 0, R"({"record":"started","intent":"y","started_at":"t"})", 6000);
    auto hosts = index.hosts();
    REQUIRE(hosts.size() == 2);
    CHECK(hosts[0].host_id == "h1");
    CHECK(hosts[0].last_record_ns == 7000);
    CHECK(hosts[0].runs_seen == 1);
    CHECK(hosts[0].records_seen == 2);
    CHECK(hosts[1].host_id == "h2");
    CHECK(hosts[1].last_record_ns == 6000);
    auto agents = index.agents();
    REQUIRE(agents.size() == 2);
    CHECK(agents[0] == std::pair<std::string, bool>("a", true));
    CHECK(agents[1] == std::pair<std::string, bool>("b", true));
  }

  TEST_CASE("past max_runs the run first seen earliest is evicted, and counted") {
    FleetIndex index(FleetIndexLimits{3, 16});
    Feed f{index};
    for (int i = 0; i < 5; ++i) {
      f.started("h1", "bot", fmt::format("r{}", i), fmt::format("2026-12-03T10:00:0{}.000Z", i));
    }
    CHECK(index.run_count() == 3);
    CHECK(index.runs_evicted() == 2);
    CHECK(index.find("r0").empty());
    CHECK(index.find("r1").empty());
    CHECK(index.find("r2").size() == 1);
    auto page = index.list("bot", std::nullopt, std::nullopt, std::nullopt);
    REQUIRE(page);
    CHECK(page.value().runs.size() == 3);
    auto hosts = index.hosts();
    CHECK(hosts[0].runs_seen == 5);
    CHECK(hosts[0].runs_evicted == 2);
    // A record of an evicted run starts a new summary (without its `started` fields).
    f.turn("h1", "bot", "r0", 3);
    REQUIRE(index.find("r0").size() == 1);
    CHECK(index.find("r0")[0].intent.empty());
    CHECK(index.run_count() == 3);
  }

  TEST_CASE("past max_hosts a new host's records are ignored") {
    FleetIndex index(FleetIndexLimits{100, 1});
    Feed f{index};
    f.started("h1", "bot", "r1", "t1");
    CHECK_FALSE(f.add("h2", "bot", "r2", 0, R"({"record":"started"})"));
    CHECK(index.hosts().size() == 1);
    CHECK(index.records_ignored() == 1);
    CHECK(index.find("r2").empty());
  }

  TEST_CASE("runs sharing a first stream sequence (a recreated stream) are still evicted") {
    car::fleet::FleetIndex index({.max_runs = 1, .max_hosts = 8});
    std::string started = R"({"record":"started","intent":"x","started_at":"t"})";
    CHECK(index.apply({"h", "a", "r1", 0, 7, 1, started}));
    CHECK(index.apply({"h", "a", "r2", 0, 7, 2, started}));  // same sequence 7: must not hang
    CHECK(index.run_count() == 1);
    CHECK(index.runs_evicted() == 1);
    CHECK(index.find("r1").empty());
    CHECK(index.find("r2").size() == 1);
    CHECK(index.apply({"h", "a", "r3", 0, 7, 3, started}));
    CHECK(index.find("r3").size() == 1);
    CHECK(index.runs_evicted() == 2);
  }
}
