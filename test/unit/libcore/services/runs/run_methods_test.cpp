// The runs.* read methods and authorization (PROTOCOL.md §7.2, §7.5): subscribe/get_trace/list access
// matrix, get_trace paging by record offset, list order and shape, runs.stats.
#include "run_test_support.hpp"

using namespace car;
using namespace car::test;

namespace {

std::string run_params(const std::string& run) { return R"({"run_id":")" + run + "\"}"; }

// Auth enabled: a writer bound to agent a1 with one recorded run.
struct AuthWorld {
  AuthWorld() : f(Fixture::enabled_auth()) {
    writer = f.peer();
    f.auth(*writer, R"({"token":"secret","agent_id":"a1"})");
    run = f.start(*writer, "a1");
    f.record(*writer, run, 3);
  }
  RunFixture f;
  std::unique_ptr<Peer> writer;
  std::string run;
};

void check_refused(const json::Document& r, const std::string& message) {
  CHECK(error_code(r) == -32603);
  CHECK(error_message(r) == message);
  CHECK_FALSE(r.HasMember("result"));
  // Nothing of the run leaks into the error.
  CHECK_FALSE(r["error"].HasMember("data"));
}

}  // namespace

TEST_SUITE("run_methods") {
  TEST_CASE("case 36: neither bound nor host is refused without data") {
    AuthWorld w;
    auto p = w.f.peer();
    w.f.auth(*p, R"({"token":"secret"})");
    check_refused(w.f.call(*p, "runs.subscribe", run_params(w.run)), "not authorized for run");
    check_refused(w.f.call(*p, "runs.get_trace", run_params(w.run)), "not authorized for run");
    check_refused(w.f.call(*p, "runs.list", R"({"agent_id":"a1"})"), "not authorized for agent");
    CHECK(error_message(w.f.call(*p, "runs.stats")) == "not authorized for stats");
    CHECK(w.f.runs->subscriber_stats().empty());  // the refused subscribe registered nothing
    // Bound to another agent: the same.
    auto other = w.f.peer();
    w.f.auth(*other, R"({"token":"secret","agent_id":"a2"})");
    check_refused(w.f.call(*other, "runs.subscribe", run_params(w.run)), "not authorized for run");
    check_refused(w.f.call(*other, "runs.list", R"({"agent_id":"a1"})"), "not authorized for agent");
    CHECK(w.f.call(*other, "runs.list", R"({"agent_id":"a2"})")["result"]["runs"].Size() == 0);
    // Ended runs (served from the store) are refused the same way.
    w.f.call(*w.writer, "runs.complete", R"({"run_id":")" + w.run + R"(","outcome":{}})");
    check_refused(w.f.call(*p, "runs.subscribe", run_params(w.run)), "not authorized for run");
  }

  TEST_CASE("case 36: the host role, the bound agent and the starter are allowed") {
    AuthWorld w;
    auto host = w.f.peer();
    w.f.auth(*host, R"({"host_token":"host-secret"})");
    CHECK(w.f.call(*host, "runs.subscribe", run_params(w.run))["result"]["cursor"].GetInt() == 3);
    CHECK(w.f.call(*host, "runs.get_trace", run_params(w.run))["result"]["records"].Size() == 4);
    CHECK(w.f.call(*host, "runs.list", R"({"agent_id":"a1"})")["result"]["runs"].Size() == 1);
    auto stats = w.f.call(*host, "runs.stats");
    REQUIRE(stats["result"]["subscribers"].Size() == 1);
    auto& s = stats["result"]["subscribers"][0];
    CHECK(std::string(s["run_id"].GetString()) == w.run);
    CHECK(std::string(s["client_id"].GetString()) == host->connection->client_id());
    for (const char* field :
         {"queued", "dropped", "frames_written", "bytes_written", "last_write_us"}) {
      CAPTURE(field);
      CHECK(s[field].IsUint64());
    }
    // The bound writer itself.
    CHECK(w.f.call(*w.writer, "runs.list", R"({"agent_id":"a1"})")["result"]["runs"].Size() == 1);
    CHECK(w.f.call(*w.writer, "runs.subscribe", run_params(w.run)).HasMember("result"));
    // A starter that is not bound to the agent may read its run, but not list the agent.
    auto starter = w.f.peer();
    w.f.auth(*starter, R"({"token":"secret"})");
    auto own = w.f.start(*starter, "a9");
    CHECK(w.f.call(*starter, "runs.subscribe", run_params(own)).HasMember("result"));
    CHECK(w.f.call(*starter, "runs.get_trace", run_params(own)).HasMember("result"));
    check_refused(w.f.call(*starter, "runs.list", R"({"agent_id":"a9"})"),
                  "not authorized for agent");
    // The host role does not grant writes.
    auto r = w.f.call(*host, "runs.record_turns",
                      R"({"run_id":")" + w.run + R"(","turns":[{}]})");
    CHECK(std::string(r["result"]["dropped"].GetString()) == "run_not_found");
  }

  TEST_CASE("with auth disabled every read is allowed, stats too") {
    RunFixture f;
    auto writer = f.peer();
    auto reader = f.peer();
    auto run = f.start(*writer, "a1");
    CHECK(f.call(*reader, "runs.subscribe", run_params(run)).HasMember("result"));
    CHECK(f.call(*reader, "runs.get_trace", run_params(run)).HasMember("result"));
    CHECK(f.call(*reader, "runs.list", R"({"agent_id":"a1"})").HasMember("result"));
    auto stats = f.call(*reader, "runs.stats", run_params(run));
    CHECK(stats["result"]["subscribers"].Size() == 1);
    CHECK(f.call(*reader, "runs.stats", run_params("other"))["result"]["subscribers"].Size() == 0);
  }

  TEST_CASE("case 37: get_trace unknown, record offsets, equal to the live records") {
    RunFixture f;
    auto writer = f.peer();
    auto watcher = f.peer();
    auto unknown = f.call(*watcher, "runs.get_trace", run_params("nope"));
    CHECK(std::string(unknown["result"]["run_id"].GetString()) == "nope");
    CHECK(unknown["result"]["not_found"].GetBool());
    auto run = f.start(*writer);
    f.call(*watcher, "runs.subscribe", run_params(run));
    f.record(*writer, run, 2, R"({"prompt":"a","tool":"t","parameters":{"x":[1,2]},"index":9})");
    f.record(*writer, run, 1);
    f.call(*writer, "runs.complete", R"({"run_id":")" + run + R"(","outcome":{"status":"ok"}})");
    auto full = f.call(*watcher, "runs.get_trace", run_params(run));
    auto& result = full["result"];
    CHECK(std::string(result["run_id"].GetString()) == run);
    CHECK(std::string(result["agent_id"].GetString()) == "a1");
    CHECK(result["cursor"].GetInt() == 0);
    CHECK_FALSE(result.HasMember("next_cursor"));
    auto& records = result["records"];
    REQUIRE(records.Size() == 5);
    CHECK(std::string(records[0]["record"].GetString()) == "started");
    CHECK(std::string(records[4]["record"].GetString()) == "ended");
    // The turn records equal those delivered live, byte for byte.
    auto events = watcher->events();
    REQUIRE(events.size() == 4);
    for (rapidjson::SizeType i = 1; i <= 3; ++i) {
      CHECK(json::stringify(records[i]) ==
            json::stringify(parse_json(events[i - 1])["params"]["record"]));
    }
    auto from3 = f.call(*watcher, "runs.get_trace", R"({"run_id":")" + run + R"(","cursor":3})");
    CHECK(from3["result"]["cursor"].GetInt() == 3);
    REQUIRE(from3["result"]["records"].Size() == 2);
    CHECK(from3["result"]["records"][0]["index"].GetInt() == 2);
    auto past = f.call(*watcher, "runs.get_trace", R"({"run_id":")" + run + R"(","cursor":50})");
    CHECK(past["result"]["records"].Size() == 0);
    CHECK(error_code(f.call(*watcher, "runs.get_trace",
                            R"({"run_id":")" + run + R"(","cursor":-1})")) == -32602);
  }

  TEST_CASE("get_trace pages by bytes and says where to go on") {
    RunConfig rc;
    rc.max_trace_page_bytes = 300;
    RunFixture f(Fixture::disabled_auth(), rc);
    auto p = f.peer();
    auto run = f.start(*p);
    f.record(*p, run, 10, R"({"prompt":")" + std::string(100, 'x') + R"("})");
    std::vector<int> indices;
    long long cursor = 0;
    for (int guard = 0; guard < 20; ++guard) {
      auto r = f.call(*p, "runs.get_trace",
                      R"({"run_id":")" + run + R"(","cursor":)" + std::to_string(cursor) + "}");
      auto& records = r["result"]["records"];
      CHECK(records.Size() >= 1);
      for (const auto& rec : records.GetArray()) {
        if (rec.HasMember("index")) indices.push_back(rec["index"].GetInt());
      }
      if (!r["result"].HasMember("next_cursor")) break;
      cursor = r["result"]["next_cursor"].GetInt64();
    }
    CHECK(indices == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  }

  TEST_CASE("case 38: list is empty for an unknown agent, else newest first with summaries") {
    RunFixture f;
    auto p = f.peer();
    auto empty = f.call(*p, "runs.list", R"({"agent_id":"nobody"})");
    CHECK(std::string(empty["result"]["agent_id"].GetString()) == "nobody");
    CHECK(empty["result"]["runs"].IsArray());
    CHECK(empty["result"]["runs"].Size() == 0);
    std::vector<std::string> ids;
    for (int i = 0; i < 3; ++i) ids.push_back(f.start(*p, "a1"));  // same millisecond, likely
    f.record(*p, ids[1], 4);
    f.call(*p, "runs.complete", R"({"run_id":")" + ids[0] + R"(","outcome":{}})");
    f.start(*p, "a2");
    auto list = f.call(*p, "runs.list", R"({"agent_id":"a1"})");
    auto& runs = list["result"]["runs"];
    REQUIRE(runs.Size() == 3);
    CHECK(std::string(runs[0]["run_id"].GetString()) == ids[2]);
    CHECK(std::string(runs[1]["run_id"].GetString()) == ids[1]);
    CHECK(std::string(runs[2]["run_id"].GetString()) == ids[0]);
    CHECK(std::string(runs[0]["started_at"].GetString()) >
          std::string(runs[1]["started_at"].GetString()));
    CHECK(runs[1]["turn_count"].GetInt() == 4);
    CHECK(std::string(runs[1]["status"].GetString()) == "in_progress");
    CHECK_FALSE(runs[1].HasMember("ended_at"));
    CHECK(std::string(runs[2]["status"].GetString()) == "completed");
    CHECK(runs[2].HasMember("ended_at"));
    CHECK(std::string(runs[2]["intent"].GetString()) == "test");
    CHECK(std::string(runs[2]["agent_id"].GetString()) == "a1");
    CHECK(runs[2]["turn_count"].GetInt() == 0);
  }

  TEST_CASE("params are validated with -32602") {
    RunFixture f;
    auto p = f.peer();
    CHECK(error_code(f.call(*p, "runs.subscribe", "{}")) == -32602);
    CHECK(error_code(f.call(*p, "runs.unsubscribe", R"({"run_id":5})")) == -32602);
    CHECK(error_code(f.call(*p, "runs.list", "{}")) == -32602);
    CHECK(error_code(f.call(*p, "runs.get_trace", R"({"run_id":""})")) == -32602);
    CHECK(error_code(f.call(*p, "runs.record_turns", R"({"run_id":"x","turns":{}})")) == -32602);
    CHECK(error_code(f.call(*p, "runs.complete", R"({"run_id":"x","outcome":"done"})")) ==
          -32602);
  }

  TEST_CASE("record_turns params failures carry its usage text, checked before the run") {
    RunFixture f;
    auto p = f.peer();
    const std::string usage = "runs.record_turns requires { run_id, turns: [RunTurn] }: ";
    struct Bad {
      const char* params;
      const char* detail;
    };
    // Run "nope" does not exist: a params failure still wins over run_not_found.
    const Bad cases[] = {
        {R"({})", "run_id is required"},
        {R"({"turns":[{}]})", "run_id is required"},
        {R"({"run_id":null,"turns":[{}]})", "run_id is required"},
        {R"({"run_id":7,"turns":[{}]})", "run_id must be a non-empty string"},
        {R"({"run_id":"nope"})", "turns is required"},
        {R"({"run_id":"nope","turns":null})", "turns is required"},
        {R"({"run_id":"nope","turns":"x"})", "turns must be an array"},
        {R"({"run_id":"nope","turns":[]})", "turns must be a non-empty array"},
    };
    for (const auto& c : cases) {
      CAPTURE(c.params);
      auto r = f.call(*p, "runs.record_turns", c.params);
      CHECK(error_code(r) == -32602);
      CHECK(error_message(r) == usage + c.detail);
    }
    // Well-formed params on an unknown run reach the run checks.
    auto missing = f.call(*p, "runs.record_turns", R"({"run_id":"nope","turns":[{}]})");
    CHECK(std::string(missing["result"]["dropped"].GetString()) == "run_not_found");
  }
}
