// RunService: the run lifecycle (PROTOCOL.md §7.1–7.3, 7.6): agent resolution, idempotency,
// completion, turn rules, ordering and durability of appends, the grace window, shutdown, eviction
// and restart.
#include <fstream>

#include "run_test_support.hpp"

using namespace car;
using namespace car::test;
using namespace std::chrono_literals;

namespace {

std::string dropped_of(const json::Document& r) {
  REQUIRE_MESSAGE(r.HasMember("result"), json::stringify(r));
  if (!r["result"].HasMember("dropped")) return {};
  return r["result"]["dropped"].GetString();
}

std::size_t file_lines(const std::string& path) {
  std::ifstream in(path);
  std::size_t n = 0;
  for (std::string line; std::getline(in, line);) ++n;
  return n;
}

// A store whose appends fail on demand (disk full), delegating everything else.
struct FailingStore : RunStore {
  explicit FailingStore(std::shared_ptr<RunStore> inner) : inner_(std::move(inner)) {}
  std::optional<std::string> append(std::string_view agent, std::string_view run,
                                    std::span<const std::string> records) override {
    if (fail.load()) return std::string("No space left on device");
    return inner_->append(agent, run, records);
  }
  std::optional<RunLocation> find(std::string_view run) override { return inner_->find(run); }
  std::optional<StoredTrace> read(std::string_view run) override { return inner_->read(run); }
  std::vector<RunSummary> list(std::string_view agent) override { return inner_->list(agent); }
  std::atomic<bool> fail{false};
  std::shared_ptr<RunStore> inner_;
};

}  // namespace

TEST_SUITE("run_service") {
  TEST_CASE("case 28: agent id resolution order") {
    SUBCASE("nothing to resolve from is an error") {
      RunFixture f;
      auto p = f.peer();
      auto r = f.call(*p, "runs.start", R"({"intent":"x"})");
      CHECK(error_code(r) == -32602);
      CHECK(error_message(r) == "cannot resolve agent id");
      r = f.call(*p, "runs.start", R"({"intent":"x","agent_name":"!!!"})");
      CHECK(error_message(r) == "cannot resolve agent id");
    }
    SUBCASE("agent_name alone gives name:<slug>") {
      RunFixture f;
      auto p = f.peer();
      auto r = f.call(*p, "runs.start", R"({"intent":"x","agent_name":"My Bot"})");
      CHECK(std::string(r["result"]["agent_id"].GetString()) == "name:my-bot");
      CHECK(std::string(r["result"]["run_id"].GetString()).size() == 36);  // UUIDv4
    }
    SUBCASE("param, then bound agent, then default agent, then name") {
      RunConfig rc;
      rc.default_agent_id = "default-agent";
      RunFixture f(Fixture::disabled_auth(), rc);
      auto p = f.peer();
      auto r = f.call(*p, "runs.start", R"({"intent":"x","agent_name":"My Bot"})");
      CHECK(std::string(r["result"]["agent_id"].GetString()) == "default-agent");
      f.auth(*p, R"({"token":"x","agent_id":"bound"})");
      r = f.call(*p, "runs.start", R"({"intent":"x","agent_name":"My Bot"})");
      CHECK(std::string(r["result"]["agent_id"].GetString()) == "bound");
      r = f.call(*p, "runs.start", R"({"intent":"x","agent_id":"explicit"})");
      CHECK(std::string(r["result"]["agent_id"].GetString()) == "explicit");
    }
  }

  TEST_CASE("runs.start params") {
    RunFixture f;
    auto p = f.peer();
    CHECK(error_code(f.call(*p, "runs.start", R"({"agent_id":"a"})")) == -32602);
    auto r = f.call(*p, "runs.start", R"({"intent":"x","agent_id":"a","idempotency_key":""})");
    CHECK(error_code(r) == -32602);
    CHECK(error_message(r).rfind("invalid params: idempotency_key", 0) == 0);
    r = f.call(*p, "runs.start",
               R"({"intent":"x","agent_id":"a","idempotency_key":")" + std::string(129, 'k') +
                   "\"}");
    CHECK(error_code(r) == -32602);
    // 128 characters (not bytes) is fine.
    std::string key;
    for (int i = 0; i < 128; ++i) key += "\xC3\xA9";
    r = f.call(*p, "runs.start", R"({"intent":"x","agent_id":"a","idempotency_key":")" + key + "\"}");
    REQUIRE(r.HasMember("result"));
    CHECK(std::string(r["result"]["run_id"].GetString()) == key);
  }

  TEST_CASE("case 29: the same idempotency key twice gives one run") {
    RunFixture f;
    auto p = f.peer();
    auto a = f.start(*p, "a1", R"(,"idempotency_key":"job-1")");
    auto b = f.start(*p, "a1", R"(,"idempotency_key":"job-1")");
    CHECK(a == "job-1");
    CHECK(b == "job-1");
    auto list = f.call(*p, "runs.list", R"({"agent_id":"a1"})");
    CHECK(list["result"]["runs"].Size() == 1);
    auto other = f.call(*p, "runs.start",
                        R"({"intent":"x","agent_id":"a2","idempotency_key":"job-1"})");
    CHECK(error_code(other) == -32602);
    CHECK(error_message(other) == "idempotency key belongs to another agent");
    // After eviction or restart the store answers: a new service on the same directory.
    RunFixture g(Fixture::disabled_auth(), {}, f.dir.str());
    auto q = g.peer();
    CHECK(g.start(*q, "a1", R"(,"idempotency_key":"job-1")") == "job-1");
    CHECK(error_message(g.call(*q, "runs.start",
                               R"({"intent":"x","agent_id":"a2","idempotency_key":"job-1"})")) ==
          "idempotency key belongs to another agent");
    CHECK(g.call(*q, "runs.list", R"({"agent_id":"a1"})")["result"]["runs"].Size() == 1);
  }

  TEST_CASE("case 30: complete twice, unknown run, non-writer") {
    RunFixture f;
    auto p = f.peer();
    auto other = f.peer();
    auto run = f.start(*p);
    auto params = R"({"run_id":")" + run + R"(","outcome":{"status":"success","summary":"done"}})";
    auto nw = f.call(*other, "runs.complete", params);
    CHECK(error_code(nw) == -32602);
    CHECK(error_message(nw) == "unknown run '" + run + "'");
    auto ok = f.call(*p, "runs.complete", params);
    REQUIRE(ok.HasMember("result"));
    CHECK(ok["result"]["ok"].GetBool());
    CHECK(std::string(ok["result"]["run_id"].GetString()) == run);
    auto again = f.call(*p, "runs.complete", params);
    CHECK(error_code(again) == -32603);
    CHECK(error_message(again) == "run '" + run + "' already ended");
    auto unknown = f.call(*p, "runs.complete", R"({"run_id":"nope","outcome":{}})");
    CHECK(error_code(unknown) == -32602);
    CHECK(error_message(unknown) == "unknown run 'nope'");
    CHECK(error_code(f.call(*p, "runs.complete", R"({"run_id":"x"})")) == -32602);
    // The trace ends with the client's outcome.
    auto trace = f.call(*p, "runs.get_trace", R"({"run_id":")" + run + "\"}");
    auto& records = trace["result"]["records"];
    REQUIRE(records.Size() == 2);
    CHECK(std::string(records[1]["termination"].GetString()) == "outcome");
    CHECK(std::string(records[1]["outcome"]["summary"].GetString()) == "done");
    CHECK(records[1].HasMember("ended_at"));
  }

  TEST_CASE("a writer bound to the agent may append and complete; others may not") {
    RunFixture f;
    auto starter = f.peer();
    auto bound = f.peer();
    auto stranger = f.peer();
    f.auth(*bound, R"({"token":"x","agent_id":"a1"})");
    auto run = f.start(*starter, "a1");
    CHECK(f.record(*bound, run)["result"]["ok"].GetBool());
    CHECK(dropped_of(f.record(*stranger, run)) == "run_not_found");
    CHECK(f.call(*bound, "runs.complete", R"({"run_id":")" + run + R"(","outcome":{}})")
              .HasMember("result"));
  }

  TEST_CASE("case 39: record_turns checks in order") {
    RunConfig rc;
    rc.max_turns_per_run = 10;  // the 2000 rule, scaled
    RunFixture f(Fixture::disabled_auth(), rc);
    auto p = f.peer();
    auto stranger = f.peer();
    auto run = f.start(*p);
    auto rt = [&](Peer& who, const std::string& turns) {
      return f.call(who, "runs.record_turns", R"({"run_id":")" + run + R"(","turns":)" + turns + "}");
    };
    // Params come first, in upstream's words (PROTOCOL.md §7.3).
    const std::string usage = "runs.record_turns requires { run_id, turns: [RunTurn] }: ";
    auto empty = rt(*p, "[]");
    CHECK(error_code(empty) == -32602);
    CHECK(error_message(empty) == usage + "turns must be a non-empty array");
    CHECK(error_message(rt(*p, "{}")) == usage + "turns must be an array");
    CHECK(error_message(rt(*p, "[1]")) == usage + "turns[0] must be an object");
    CHECK(error_message(rt(*p, R"([{},{},"x"])")) == usage + "turns[2] must be an object");
    auto no_id = f.call(*p, "runs.record_turns", R"({"run_id":"","turns":[{}]})");
    CHECK(error_code(no_id) == -32602);
    CHECK(error_message(no_id) == usage + "run_id must be a non-empty string");
    // Unknown run and non-writer look the same.
    auto missing = f.call(*p, "runs.record_turns", R"({"run_id":"nope","turns":[{}]})");
    CHECK(dropped_of(missing) == "run_not_found");
    CHECK_FALSE(missing["result"]["ok"].GetBool());
    CHECK(missing["result"]["base_index"].GetInt() == 0);
    CHECK(missing["result"]["count"].GetInt() == 0);
    CHECK(dropped_of(rt(*stranger, "[{}]")) == "run_not_found");
    // Indices are stamped by the daemon.
    auto first = rt(*p, R"([{"index":42},{"index":42}])");
    CHECK(first["result"]["ok"].GetBool());
    CHECK(first["result"]["base_index"].GetInt() == 0);
    CHECK(first["result"]["count"].GetInt() == 2);
    auto second = rt(*p, R"([{"prompt":"x"}])");
    CHECK(second["result"]["base_index"].GetInt() == 2);
    // The limit: 3 + 8 > 10, nothing appended; 7 more fit exactly.
    CHECK(dropped_of(rt(*p, "[{},{},{},{},{},{},{},{}]")) == "run_turn_limit");
    auto fill = rt(*p, "[{},{},{},{},{},{},{}]");
    CHECK(fill["result"]["base_index"].GetInt() == 3);
    CHECK(dropped_of(rt(*p, "[{}]")) == "run_turn_limit");
    // Terminal beats the limit.
    f.call(*p, "runs.complete", R"({"run_id":")" + run + R"(","outcome":{}})");
    CHECK(dropped_of(rt(*p, "[{}]")) == "run_terminal");
    CHECK(dropped_of(rt(*stranger, "[{}]")) == "run_not_found");
    auto trace = f.call(*p, "runs.get_trace", R"({"run_id":")" + run + "\"}");
    auto& records = trace["result"]["records"];
    REQUIRE(records.Size() == 12);
    for (rapidjson::SizeType i = 1; i <= 10; ++i) CHECK(records[i]["index"].GetUint() == i - 1);
  }

  TEST_CASE("case 39: 257 turns is -32602; 2000 per run is the default limit") {
    RunFixture f;
    auto p = f.peer();
    auto run = f.start(*p);
    auto r = f.record(*p, run, 257, "{}");
    CHECK(error_code(r) == -32602);
    CHECK(error_message(r) == "runs.record_turns requires { run_id, turns: [RunTurn] }: turns must hold at most 256 turns");
    for (int i = 0; i < 7; ++i) CHECK(f.record(*p, run, 256, "{}")["result"]["ok"].GetBool());
    CHECK(f.record(*p, run, 208, "{}")["result"]["base_index"].GetInt() == 1792);
    CHECK(dropped_of(f.record(*p, run, 1, "{}")) == "run_turn_limit");
  }

  TEST_CASE("turn_too_large refuses the whole batch and comes after the other checks") {
    RunFixture f;
    auto p = f.peer();
    auto stranger = f.peer();
    auto run = f.start(*p);
    // Bulk in a member the oversize step leaves alone (it replaces only prompt, parameters and
    // output), so the turn stays too large.
    std::string big = "{\"cli_outcome\":[";
    for (int i = 0; i < 20; ++i) big += (i ? "," : "") + ("\"" + std::string(16000, 'x') + "\"");
    big += "]}";
    auto r = f.call(*p, "runs.record_turns",
                    R"({"run_id":")" + run + R"(","turns":[{"prompt":"ok"},)" + big + "]}");
    CHECK(dropped_of(r) == "turn_too_large");
    CHECK(dropped_of(f.call(*stranger, "runs.record_turns",
                            R"({"run_id":")" + run + R"(","turns":[)" + big + "]}")) ==
          "run_not_found");
    // Nothing was appended.
    CHECK(f.record(*p, run)["result"]["base_index"].GetInt() == 0);
  }

  TEST_CASE("pipelined record_turns append in arrival order; acknowledged only once written") {
    RunFixture f;
    auto p = f.peer();
    auto run = f.start(*p);
    f.executor.set_auto_pool(false);
    std::vector<int> ids;
    for (int i = 0; i < 5; ++i) {
      ids.push_back(p->send("runs.record_turns", R"({"run_id":")" + run +
                                                     R"(","turns":[{"prompt":")" +
                                                     std::to_string(i) + R"("},{}]})"));
    }
    f.executor.run_until_idle();
    for (int id : ids) CHECK_FALSE(p->has_reply(id));  // not written yet: not acknowledged
    std::string path = jsonl_run_path(f.dir.str(), "a1", run);
    CHECK(file_lines(path) == 1);
    CHECK(f.executor.run_pool_jobs() == 1);  // one store job took all five calls
    f.executor.run_until_idle();
    CHECK(file_lines(path) == 11);
    for (int i = 0; i < 5; ++i) {
      auto r = p->reply(ids[static_cast<std::size_t>(i)]);
      CHECK(r["result"]["base_index"].GetInt() == 2 * i);
    }
    int trace_id = p->send("runs.get_trace", R"({"run_id":")" + run + "\"}");
    f.executor.run_until_idle();
    CHECK_FALSE(p->has_reply(trace_id));  // reads run on the pool too
    f.executor.run_pool_jobs();
    f.executor.run_until_idle();
    auto trace = p->reply(trace_id);
    auto& records = trace["result"]["records"];
    REQUIRE(records.Size() == 11);
    for (int i = 0; i < 5; ++i) {
      CHECK(std::string(records[static_cast<rapidjson::SizeType>(1 + 2 * i)]["prompt"].GetString()) ==
            std::to_string(i));
    }
    CHECK(f.runs->counters().store_ops >= 6);
  }

  TEST_CASE("a store write failure is -32603 store write failed and nothing breaks") {
    TempDir dir;
    auto failing = std::make_shared<FailingStore>(make_jsonl_run_store(dir.str()));
    RunConfig rc;
    rc.store = failing;
    RunFixture f(Fixture::disabled_auth(), rc);
    auto p = f.peer();
    failing->fail = true;
    auto r = f.call(*p, "runs.start", R"({"intent":"x","agent_id":"a1","idempotency_key":"k"})");
    CHECK(error_code(r) == -32603);
    CHECK(error_message(r) == "store write failed: No space left on device");
    CHECK(f.runs->runs_in_memory() == 0);  // the run is gone
    failing->fail = false;
    auto run = f.start(*p);
    CHECK(f.record(*p, run)["result"]["base_index"].GetInt() == 0);
    failing->fail = true;
    auto failed = f.record(*p, run, 3);
    CHECK(error_message(failed) == "store write failed: No space left on device");
    failing->fail = false;
    // The failed turns left no hole: the next call continues at 1.
    CHECK(f.record(*p, run)["result"]["base_index"].GetInt() == 1);
    failing->fail = true;
    auto c = f.call(*p, "runs.complete", R"({"run_id":")" + run + R"(","outcome":{}})");
    CHECK(error_code(c) == -32603);
    failing->fail = false;
    // Not ended on disk, so the writer may try again.
    CHECK(f.call(*p, "runs.complete", R"({"run_id":")" + run + R"(","outcome":{}})")
              .HasMember("result"));
    CHECK(f.call(*p, "runs.get_trace", R"({"run_id":")" + run + "\"}")["result"]["records"]
              .Size() == 4);
  }

  TEST_CASE("case 35: the writer disconnects; the grace window ends the run incomplete") {
    RunConfig rc;
    rc.grace = 2000ms;
    RunFixture f(Fixture::disabled_auth(), rc);
    auto writer = f.peer();
    auto watcher = f.peer();
    auto run = f.start(*writer);
    f.record(*writer, run, 2);
    f.call(*watcher, "runs.subscribe", R"({"run_id":")" + run + "\"}");
    watcher->forget_notes();
    writer->connection->end();
    f.executor.advance(1999ms);
    CHECK(watcher->events().empty());
    auto list = f.call(*watcher, "runs.list", R"({"agent_id":"a1"})");
    CHECK(std::string(list["result"]["runs"][0]["status"].GetString()) == "in_progress");
    f.executor.advance(1ms);
    auto events = watcher->events();
    REQUIRE(events.size() == 1);
    auto e = parse_json(events[0]);
    CHECK(std::string(e["params"]["record"]["record"].GetString()) == "ended");
    CHECK(std::string(e["params"]["record"]["termination"].GetString()) == "incomplete");
    CHECK(std::string(e["params"]["status"].GetString()) == "incomplete");
    CHECK(e["params"]["cursor"].GetInt() == 2);
    // Persisted.
    auto trace = f.call(*watcher, "runs.get_trace", R"({"run_id":")" + run + R"(","cursor":3})");
    REQUIRE(trace["result"]["records"].Size() == 1);
    CHECK(std::string(trace["result"]["records"][0]["termination"].GetString()) == "incomplete");
    list = f.call(*watcher, "runs.list", R"({"agent_id":"a1"})");
    CHECK(std::string(list["result"]["runs"][0]["status"].GetString()) == "incomplete");
    CHECK(list["result"]["runs"][0].HasMember("ended_at"));
  }

  TEST_CASE("case 35: completing inside the window ends it normally; appends do not stop it") {
    RunFixture f;
    auto writer = f.peer();
    auto agent = f.peer();
    auto run = f.start(*writer, "a1");
    writer->connection->end();
    f.executor.advance(500ms);
    f.auth(*agent, R"({"token":"x","agent_id":"a1"})");
    SUBCASE("complete inside the window") {
      CHECK(f.call(*agent, "runs.complete", R"({"run_id":")" + run + R"(","outcome":{}})")
                .HasMember("result"));
      f.executor.advance(5000ms);
      auto list = f.call(*agent, "runs.list", R"({"agent_id":"a1"})");
      CHECK(std::string(list["result"]["runs"][0]["status"].GetString()) == "completed");
      CHECK(f.call(*agent, "runs.get_trace", R"({"run_id":")" + run + "\"}")["result"]["records"]
                .Size() == 2);
    }
    SUBCASE("an append does not stop the timer") {
      CHECK(f.record(*agent, run)["result"]["ok"].GetBool());
      f.executor.advance(1500ms);
      CHECK(dropped_of(f.record(*agent, run)) == "run_terminal");
      auto c = f.call(*agent, "runs.complete", R"({"run_id":")" + run + R"(","outcome":{}})");
      CHECK(error_message(c) == "run '" + run + "' already ended");
      auto list = f.call(*agent, "runs.list", R"({"agent_id":"a1"})");
      CHECK(std::string(list["result"]["runs"][0]["status"].GetString()) == "incomplete");
    }
  }

  TEST_CASE("graceful shutdown ends every open run incomplete at once") {
    RunFixture f;
    auto p = f.peer();
    auto open1 = f.start(*p);
    auto open2 = f.start(*p);
    auto done = f.start(*p);
    f.call(*p, "runs.complete", R"({"run_id":")" + done + R"(","outcome":{}})");
    f.executor.set_auto_pool(false);
    int flushed = 0;
    f.runs->shutdown([&] { ++flushed; });
    CHECK(flushed == 0);
    CHECK(f.runs->pending_store_ops() == 2);
    f.executor.run_pool_jobs();
    f.executor.run_until_idle();
    CHECK(flushed == 1);
    f.executor.set_auto_pool(true);
    auto list = f.call(*p, "runs.list", R"({"agent_id":"a1"})");
    for (const auto& s : list["result"]["runs"].GetArray()) {
      std::string id = s["run_id"].GetString();
      CHECK(std::string(s["status"].GetString()) == (id == done ? "completed" : "incomplete"));
    }
    auto r = f.call(*p, "runs.start", R"({"intent":"x","agent_id":"a1"})");
    CHECK(error_code(r) == -32603);
    // Nothing left to flush: the callback runs at once.
    f.runs->shutdown([&] { ++flushed; });
    CHECK(flushed == 2);
  }

  TEST_CASE("ended runs beyond the bound leave memory; the store still serves them") {
    RunConfig rc;
    rc.max_ended_runs = 2;
    RunFixture f(Fixture::disabled_auth(), rc);
    auto p = f.peer();
    auto stranger = f.peer();
    std::vector<std::string> ids;
    for (int i = 0; i < 4; ++i) {
      ids.push_back(f.start(*p));
      f.record(*p, ids.back(), 2);
      f.call(*p, "runs.complete", R"({"run_id":")" + ids.back() + R"(","outcome":{}})");
    }
    auto open = f.start(*p);
    CHECK(f.runs->runs_in_memory() == 3);  // two ended + one open
    const std::string& evicted = ids[0];
    CHECK(error_message(f.call(*p, "runs.complete",
                               R"({"run_id":")" + evicted + R"(","outcome":{}})")) ==
          "run '" + evicted + "' already ended");
    CHECK(error_message(f.call(*stranger, "runs.complete",
                               R"({"run_id":")" + evicted + R"(","outcome":{}})")) ==
          "unknown run '" + evicted + "'");
    CHECK(dropped_of(f.record(*p, evicted)) == "run_terminal");
    CHECK(dropped_of(f.record(*stranger, evicted)) == "run_not_found");
    auto sub = f.call(*p, "runs.subscribe", R"({"run_id":")" + evicted + "\"}");
    CHECK(sub["result"]["turns_so_far"].Size() == 2);
    CHECK(std::string(sub["result"]["status"].GetString()) == "completed");
    CHECK(f.call(*p, "runs.list", R"({"agent_id":"a1"})")["result"]["runs"].Size() == 5);
    (void)open;
  }

  TEST_CASE("case 40: a new service on the same state dir serves list and get_trace") {
    TempDir dir;
    std::string list_before, trace_before, crashed;
    {
      RunFixture f(Fixture::disabled_auth(), {}, dir.str());
      auto p = f.peer();
      auto run = f.start(*p);
      f.record(*p, run, 3);
      f.call(*p, "runs.complete", R"({"run_id":")" + run + R"(","outcome":{"status":"ok"}})");
      crashed = f.start(*p);  // never ended: "crash"
      f.record(*p, crashed, 1);
      list_before = json::stringify(f.call(*p, "runs.list", R"({"agent_id":"a1"})")["result"]);
      trace_before = json::stringify(
          f.call(*p, "runs.get_trace", R"({"run_id":")" + run + "\"}")["result"]);
    }
    RunFixture g(Fixture::disabled_auth(), {}, dir.str());
    auto q = g.peer();
    auto list = g.call(*q, "runs.list", R"({"agent_id":"a1"})");
    auto& runs = list["result"]["runs"];
    REQUIRE(runs.Size() == 2);
    // The crashed run's writer is gone: it now reads as incomplete; everything else is equal.
    CHECK(std::string(runs[0]["run_id"].GetString()) == crashed);
    CHECK(std::string(runs[0]["status"].GetString()) == "incomplete");
    runs[0]["status"].SetString("in_progress");
    CHECK(json::stringify(list["result"]) == list_before);
    std::string run_id = parse_json(trace_before)["run_id"].GetString();
    auto trace = g.call(*q, "runs.get_trace", R"({"run_id":")" + run_id + "\"}");
    CHECK(json::stringify(trace["result"]) == trace_before);
    auto sub = g.call(*q, "runs.subscribe", R"({"run_id":")" + crashed + "\"}");
    CHECK(std::string(sub["result"]["status"].GetString()) == "incomplete");
  }
}
