// RunConfig::sync = batch (car-daemon --sync batch): a call is answered only after the store job
// that wrote it has synced, one sync serves every call queued on the run meanwhile (group
// commit), and a failed sync fails every call it covered.
#include <doctest/doctest.h>

#include <mutex>

#include "run_test_support.hpp"

using namespace car;
using namespace car::test;

namespace {

// Wraps the JSONL store and keeps the order of appends and syncs; its sync can be made to fail.
struct JournalingStore : RunStore {
  explicit JournalingStore(std::shared_ptr<RunStore> inner) : inner_(std::move(inner)) {}
  std::optional<std::string> append(std::string_view agent, std::string_view run,
                                    std::span<const std::string> records) override {
    note("append");
    return inner_->append(agent, run, records);
  }
  std::optional<std::string> sync(std::string_view agent, std::string_view run) override {
    note("sync");
    if (fail_sync) return std::string("Input/output error");
    return inner_->sync(agent, run);
  }
  std::optional<RunLocation> find(std::string_view run) override { return inner_->find(run); }
  std::optional<StoredTrace> read(std::string_view run) override { return inner_->read(run); }
  std::vector<RunSummary> list(std::string_view agent) override { return inner_->list(agent); }

  void note(const char* what) {
    std::lock_guard lock(mutex);
    journal.emplace_back(what);
  }
  std::vector<std::string> take() {
    std::lock_guard lock(mutex);
    return std::exchange(journal, {});
  }

  std::mutex mutex;
  std::vector<std::string> journal;
  bool fail_sync = false;
  std::shared_ptr<RunStore> inner_;
};

RunConfig journaled(std::shared_ptr<JournalingStore> store, StoreSync sync) {
  RunConfig rc;
  rc.store = std::move(store);
  rc.sync = sync;
  return rc;
}

std::string turns_call(const std::string& run) {
  return R"({"run_id":")" + run + R"(","turns":[{"prompt":"p","output":"o"}]})";
}

}  // namespace

TEST_SUITE("store_sync") {
  TEST_CASE("batch: pipelined calls share one sync and none is answered before it") {
    TempDir dir;
    auto store = std::make_shared<JournalingStore>(make_jsonl_run_store(dir.str()));
    RunFixture f(Fixture::disabled_auth(), journaled(store, StoreSync::batch));
    auto p = f.peer();
    auto run = f.start(*p);
    CHECK(store->take() == std::vector<std::string>{"append", "sync"});

    f.executor.set_auto_pool(false);
    std::vector<int> ids;
    for (int i = 0; i < 8; ++i) ids.push_back(p->send("runs.record_turns", turns_call(run)));
    f.executor.run_ready();
    // Accepted and queued for the store, not written: nobody has an answer yet.
    for (int id : ids) CHECK_FALSE(p->has_reply(id));
    CHECK(f.executor.run_pool_jobs() == 1);  // the run's one store job took all eight
    CHECK(store->take() == std::vector<std::string>{"append", "append", "append", "append",
                                                    "append", "append", "append", "append", "sync"});
    f.executor.set_auto_pool(true);
    f.executor.run_until_idle();
    for (std::size_t i = 0; i < ids.size(); ++i) {
      auto r = p->reply(ids[i]);
      REQUIRE(r.HasMember("result"));
      CHECK(r["result"]["base_index"].GetInt() == static_cast<int>(i));
    }
  }

  TEST_CASE("batch: a failed sync fails every call it covered, publishes none, stops the run") {
    TempDir dir;
    auto store = std::make_shared<JournalingStore>(make_jsonl_run_store(dir.str()));
    RunFixture f(Fixture::disabled_auth(), journaled(store, StoreSync::batch));
    auto writer = f.peer();
    auto reader = f.peer();
    auto run = f.start(*writer);
    auto sub = f.call(*reader, "runs.subscribe", R"({"run_id":")" + run + R"("})");
    REQUIRE(sub.HasMember("result"));
    reader->forget_notes();

    store->fail_sync = true;
    f.executor.set_auto_pool(false);
    int a = writer->send("runs.record_turns", turns_call(run));
    int b = writer->send("runs.record_turns", turns_call(run));
    f.executor.run_ready();
    f.executor.run_pool_jobs();
    f.executor.set_auto_pool(true);
    f.executor.run_until_idle();
    // Had either call been answered before the sync, it would have said success.
    for (int id : {a, b}) {
      auto r = writer->reply(id);
      CHECK(error_code(r) == -32603);
      CHECK(error_message(r) == "store write failed: sync failed: Input/output error");
    }
    CHECK(reader->events().empty());
    // What the failed sync covered may or may not be on disk: the log takes nothing more.
    store->fail_sync = false;
    store->take();
    auto later = f.record(*writer, run);
    CHECK(error_message(later) ==
          "store write failed: an earlier sync of this run failed: Input/output error");
    CHECK(store->take().empty());  // refused before any write
  }

  TEST_CASE("none: records are acknowledged after their write and never synced") {
    TempDir dir;
    auto store = std::make_shared<JournalingStore>(make_jsonl_run_store(dir.str()));
    RunFixture f(Fixture::disabled_auth(), journaled(store, StoreSync::none));
    auto p = f.peer();
    auto run = f.start(*p);
    CHECK(f.record(*p, run, 2).HasMember("result"));
    CHECK(f.call(*p, "runs.complete", R"({"run_id":")" + run + R"(","outcome":{}})")
              .HasMember("result"));
    CHECK(store->take() == std::vector<std::string>{"append", "append", "append"});
  }

  TEST_CASE("the JSONL store syncs a run it holds and names the file of one it does not") {
    TempDir dir;
    auto store = make_jsonl_run_store(dir.str());
    std::vector<std::string> records = {R"({"record":"started","run_id":"r1","agent_id":"a"})"};
    REQUIRE_FALSE(store->append("a", "r1", records));
    CHECK_FALSE(store->sync("a", "r1"));
    auto missing = store->sync("a", "nope");
    REQUIRE(missing);
    CHECK(missing->find("nope.jsonl") != std::string::npos);
  }
}
