// The trace fan-out (trace_fanout.cpp over StreamSubscriber) (PROTOCOL.md §7.4): bounded per-subscriber queues with drops
// and gap notices, batch drains on the pool, one serialization per record, reply-before-events,
// failure isolation, and a threaded run on a real libuv loop and pool (for TSan).
#include <future>
#include <stdexcept>
#include <thread>

#include "run_test_support.hpp"

using namespace car;
using namespace car::test;
using car::uv::UvExecutor;
using namespace std::chrono_literals;

namespace {

// A sink that keeps the Frame objects it writes, to compare pointers across subscribers.
class PointerSink final : public QueuedFrameSink {
 public:
  explicit PointerSink(Executor& executor) : QueuedFrameSink(executor, {}) {}
  std::vector<Frame> frames() const {
    std::lock_guard lock(mutex_);
    return frames_;
  }

 private:
  void start_write(const Batch& batch) override {
    {
      std::lock_guard lock(mutex_);
      for (const auto& p : batch) frames_.push_back(p.frame);
    }
    auto self = std::static_pointer_cast<PointerSink>(shared_from_this());
    executor().post([self] { self->write_done(SinkError::none); });
  }
  void shut_down_transport(const SinkEnd&) override {}

  mutable std::mutex mutex_;
  std::vector<Frame> frames_;
};

std::string sub_params(const std::string& run) { return R"({"run_id":")" + run + "\"}"; }

std::vector<std::uint64_t> cursors(const std::vector<std::string>& events) {
  std::vector<std::uint64_t> out;
  for (const auto& e : events) out.push_back(cursor_of(e));
  return out;
}

std::vector<std::uint64_t> range(std::uint64_t from, std::uint64_t to) {
  std::vector<std::uint64_t> out;
  for (auto i = from; i <= to; ++i) out.push_back(i);
  return out;
}

// A store that throws from its nth append (an embedder's database that lost its connection).
class ThrowingStore final : public RunStore {
 public:
  ThrowingStore(std::shared_ptr<RunStore> inner, int nth) : inner_(std::move(inner)), nth_(nth) {}
  std::optional<std::string> append(std::string_view agent, std::string_view run,
                                    std::span<const std::string> records) override {
    if (++appends_ == nth_) throw std::runtime_error("database connection lost");
    return inner_->append(agent, run, records);
  }
  std::optional<RunLocation> find(std::string_view id) override { return inner_->find(id); }
  std::optional<StoredTrace> read(std::string_view id) override { return inner_->read(id); }
  std::vector<RunSummary> list(std::string_view agent) override { return inner_->list(agent); }

 private:
  std::shared_ptr<RunStore> inner_;
  int nth_;
  int appends_ = 0;
};

std::string empty_turns(int n) {
  std::string out = "[";
  for (int i = 0; i < n; ++i) out += i == 0 ? "{}" : ",{}";
  return out + "]";
}

std::string big_turn(std::size_t bytes) {
  return R"({"prompt":"p","output":")" + std::string(bytes, 'o') + R"("})";
}

// A libuv loop on its own thread with a UvExecutor created and destroyed there. stop() (or the
// destructor, when a REQUIRE fails) shuts the executor down on the loop and joins.
struct LoopThread {
  LoopThread() {
    uv_loop_init(&loop);
    std::promise<void> ready;
    auto started = ready.get_future();
    thread = std::thread([this, &ready] {
      auto owned = std::make_unique<UvExecutor>(&loop);
      executor = owned.get();
      ready.set_value();
      uv_run(&loop, UV_RUN_DEFAULT);
      // UvExecutor::post still touches the executor after queueing its task, so the thread that
      // posted the shutdown must be out of post() before the executor is destroyed.
      posted_stop.get_future().wait();
      owned.reset();
      uv_run(&loop, UV_RUN_DEFAULT);  // close callbacks of the executor's handles
    });
    started.wait();
  }
  void stop() {
    if (!thread.joinable()) return;
    executor->post([e = executor] { e->shutdown(); });
    posted_stop.set_value();
    thread.join();
    uv_loop_close(&loop);
  }
  ~LoopThread() { stop(); }
  LoopThread(const LoopThread&) = delete;
  LoopThread& operator=(const LoopThread&) = delete;

  uv_loop_t loop{};
  UvExecutor* executor = nullptr;
  std::promise<void> posted_stop;
  std::thread thread;
};

}  // namespace

TEST_SUITE("trace_fanout") {
  TEST_CASE("case 31: subscribe after 7 turns; the next turn arrives once with cursor 8") {
    RunFixture f;
    auto writer = f.peer();
    auto watcher = f.peer();
    auto run = f.start(*writer);
    f.record(*writer, run, 7);
    auto snap = f.call(*watcher, "runs.subscribe", sub_params(run));
    auto& result = snap["result"];
    CHECK(std::string(result["run_id"].GetString()) == run);
    CHECK(std::string(result["agent_id"].GetString()) == "a1");
    CHECK(result["turns_so_far"].Size() == 7);
    CHECK(result["cursor"].GetInt() == 7);
    CHECK(std::string(result["status"].GetString()) == "in_progress");
    CHECK(result["turns_so_far"][6]["index"].GetInt() == 6);
    f.record(*writer, run, 1);
    auto events = watcher->events();
    REQUIRE(events.size() == 1);
    auto e = parse_json(events[0]);
    CHECK(e["params"]["cursor"].GetInt() == 8);
    CHECK(e["params"]["record"]["index"].GetInt() == 7);
    CHECK(std::string(e["params"]["status"].GetString()) == "in_progress");
    CHECK(std::string(e["params"]["run_id"].GetString()) == run);
    CHECK(std::string(e["params"]["agent_id"].GetString()) == "a1");
    CHECK_FALSE(e.HasMember("id"));
  }

  TEST_CASE("cursor arithmetic: started 0, turns 1..n, ended n") {
    RunFixture f;
    auto writer = f.peer();
    auto watcher = f.peer();
    // Hold the pool so the watcher subscribes before `started` is written.
    f.executor.set_auto_pool(false);
    int start_id = writer->send("runs.start",
                                R"({"intent":"x","agent_id":"a1","idempotency_key":"run-c"})");
    f.executor.run_until_idle();
    f.executor.run_pool_jobs();  // the store lookup of the key; queues the `started` write
    f.executor.run_until_idle();
    CHECK_FALSE(writer->has_reply(start_id));
    int sub_id = watcher->send("runs.subscribe", sub_params("run-c"));
    f.executor.run_until_idle();
    auto snap = watcher->reply(sub_id);
    CHECK(snap["result"]["cursor"].GetInt() == 0);
    CHECK(snap["result"]["turns_so_far"].Size() == 0);
    f.executor.set_auto_pool(true);
    f.executor.run_until_idle();
    CHECK(writer->has_reply(start_id));
    f.record(*writer, "run-c", 3);
    f.record(*writer, "run-c", 2);
    f.call(*writer, "runs.complete", R"({"run_id":"run-c","outcome":{"status":"failed"}})");
    auto events = watcher->events();
    REQUIRE(events.size() == 7);
    CHECK(record_kind_of(events[0]) == "started");
    CHECK(cursors(events) == std::vector<std::uint64_t>{0, 1, 2, 3, 4, 5, 5});
    auto last = parse_json(events[6]);
    CHECK(std::string(last["params"]["record"]["record"].GetString()) == "ended");
    // completed whatever the outcome's own status
    CHECK(std::string(last["params"]["status"].GetString()) == "completed");
    auto started = parse_json(events[0]);
    CHECK(std::string(started["params"]["record"]["client_id"].GetString()) ==
          writer->connection->client_id());
  }

  TEST_CASE("serialize once: every subscriber gets the same Frame object") {
    RunFixture f;
    auto writer = f.peer();
    auto s1 = std::make_shared<PointerSink>(f.executor);
    auto s2 = std::make_shared<PointerSink>(f.executor);
    auto c1 = f.server.open_connection("p1", s1);
    auto c2 = f.server.open_connection("p2", s2);
    auto run = f.start(*writer);
    c1->receive(R"({"jsonrpc":"2.0","id":1,"method":"runs.subscribe","params":{"run_id":")" + run +
                "\"}}");
    c2->receive(R"({"jsonrpc":"2.0","id":1,"method":"runs.subscribe","params":{"run_id":")" + run +
                "\"}}");
    f.executor.run_until_idle();
    f.record(*writer, run, 3);
    auto f1 = s1->frames();
    auto f2 = s2->frames();
    REQUIRE(f1.size() == 4);  // reply + 3 events
    REQUIRE(f2.size() == 4);
    CHECK(f1[0] != f2[0]);  // replies are per connection
    for (std::size_t i = 1; i < 4; ++i) {
      CHECK(f1[i].get() == f2[i].get());
      CHECK(f1[i]->find("runs.trace.event") != std::string::npos);
    }
    CHECK(f.runs->counters().events_published == 3);
  }

  TEST_CASE("the store job that publishes drains what it published: no extra pool hop") {
    RunFixture f;
    auto writer = f.peer();
    auto watcher = f.peer();
    auto run = f.start(*writer);
    f.call(*watcher, "runs.subscribe", sub_params(run));
    auto before = f.runs->counters();
    f.executor.set_auto_pool(false);
    std::vector<int> ids;
    for (int i = 0; i < 10; ++i) {
      ids.push_back(writer->send("runs.record_turns",
                                 R"({"run_id":")" + run + R"(","turns":[{},{}]})"));
    }
    f.executor.run_until_idle();
    CHECK(f.executor.pending_pool_jobs() == 1);  // one store job for ten calls
    CHECK(watcher->events().empty());
    // The job writes and publishes op by op; the first publish claims the subscriber's pass and
    // the job runs it at once (no pool job of its own). The other 18 events queue behind that
    // batch, which is still in the sink until the loop runs.
    f.executor.run_pool_jobs();
    auto mid = f.runs->counters();
    CHECK(mid.drain_hops - before.drain_hops == 1);
    CHECK(mid.drain_passes - before.drain_passes == 1);
    CHECK(mid.events_drained - before.events_drained == 2);
    CHECK(f.executor.pending_pool_jobs() == 0);
    // The loop writes that batch; its completion schedules one pool pass for all 18.
    f.executor.run_until_idle();
    CHECK(watcher->events().size() == 2);
    CHECK(f.executor.pending_pool_jobs() == 1);
    f.executor.run_pool_jobs();
    f.executor.run_until_idle();
    CHECK(cursors(watcher->events()) == range(1, 20));
    auto after = f.runs->counters();
    CHECK(after.drain_hops - before.drain_hops == 2);
    CHECK(after.drain_passes - before.drain_passes == 2);
    CHECK(after.events_drained - before.events_drained == 20);
    CHECK(after.events_dropped == before.events_dropped);
    CHECK(after.store_jobs - before.store_jobs == 1);
    CHECK(after.store_ops - before.store_ops == 10);
    for (int id : ids) CHECK(writer->has_reply(id));
    auto stats = f.runs->subscriber_stats(run);
    REQUIRE(stats.size() == 1);
    CHECK(stats[0].drain_passes == 2);
    CHECK(stats[0].events_drained == 20);
    CHECK(stats[0].frames_written == 20);
  }

  TEST_CASE("one store job publishing 400 events reaches an idle subscriber without a drop") {
    // Each op's pass runs right after that op: the first 200 go to the sink, the next 200 wait
    // in the (then empty) 256-event queue instead of piling up behind an unrun pass.
    RunFixture f;
    auto writer = f.peer();
    auto watcher = f.peer();
    auto run = f.start(*writer);
    f.call(*watcher, "runs.subscribe", sub_params(run));
    f.executor.set_auto_pool(false);
    for (int i = 0; i < 2; ++i) {
      writer->send("runs.record_turns",
                   R"({"run_id":")" + run + R"(","turns":)" + empty_turns(200) + "}");
    }
    f.executor.run_until_idle();
    CHECK(f.executor.pending_pool_jobs() == 1);
    f.executor.run_pool_jobs();
    f.executor.set_auto_pool(true);
    f.executor.run_until_idle();
    CHECK(cursors(watcher->events()) == range(1, 400));
    CHECK(watcher->gaps().empty());
    CHECK(f.runs->counters().events_dropped == 0);
  }

  TEST_CASE("a store that throws fails that call only; delivery and the run carry on") {
    TempDir dir;
    RunConfig rc;
    rc.store = std::make_shared<ThrowingStore>(make_jsonl_run_store(dir.str()), 3);
    RunFixture f(Fixture::disabled_auth(), rc);
    auto writer = f.peer();
    auto watcher = f.peer();
    auto run = f.start(*writer);  // append 1
    f.call(*watcher, "runs.subscribe", sub_params(run));
    f.executor.set_auto_pool(false);
    std::string one = R"({"run_id":")" + run + R"(","turns":[{}]})";
    int ok_id = writer->send("runs.record_turns", one);      // append 2
    int failed_id = writer->send("runs.record_turns", one);  // append 3 throws
    f.executor.run_until_idle();
    CHECK_NOTHROW(f.executor.run_pool_jobs());
    f.executor.set_auto_pool(true);
    f.executor.run_until_idle();
    REQUIRE(writer->has_reply(ok_id));
    CHECK(writer->reply(ok_id)["result"]["ok"].GetBool());
    REQUIRE(writer->has_reply(failed_id));
    CHECK(writer->reply(failed_id).HasMember("error"));
    CHECK(cursors(watcher->events()) == range(1, 1));  // the acknowledged turn was delivered
    // The next call continues without a hole in the indices.
    auto next = f.call(*writer, "runs.record_turns", one);
    CHECK(next["result"]["base_index"].GetUint64() == 1);
    CHECK(cursors(watcher->events()) == range(1, 2));
  }

  TEST_CASE("while a batch is in the sink, later events wait and go out as one pool pass") {
    RunFixture f;
    auto writer = f.peer();
    std::vector<std::unique_ptr<Peer>> watchers;
    for (int i = 0; i < 3; ++i) watchers.push_back(f.peer());
    auto run = f.start(*writer);
    for (auto& w : watchers) f.call(*w, "runs.subscribe", sub_params(run));
    f.executor.set_auto_pool(false);
    auto before = f.runs->counters();
    // First call: one store job publishes and drains for all three subscribers in one hop.
    writer->send("runs.record_turns", R"({"run_id":")" + run + R"(","turns":[{}]})");
    f.executor.run_until_idle();
    f.executor.run_pool_jobs();
    auto mid = f.runs->counters();
    CHECK(mid.drain_hops - before.drain_hops == 1);
    CHECK(mid.drain_passes - before.drain_passes == 3);
    // Before the sinks complete that batch (the loop has not run), 30 more events arrive: the
    // subscribers are busy, so the store job only queues them.
    for (int i = 0; i < 3; ++i) {
      writer->send("runs.record_turns",
                   R"({"run_id":")" + run + R"(","turns":[{},{},{},{},{},{},{},{},{},{}]})");
    }
    f.executor.run_pool_jobs();
    CHECK(f.runs->counters().drain_passes == mid.drain_passes);
    // The loop completes the first batches; each subscriber then schedules one pool pass that
    // takes all 30 at once.
    f.executor.run_until_idle();
    CHECK(f.executor.pending_pool_jobs() == 3);
    f.executor.run_pool_jobs();
    f.executor.run_until_idle();
    auto after = f.runs->counters();
    CHECK(after.drain_hops - mid.drain_hops == 3);
    CHECK(after.drain_passes - mid.drain_passes == 3);
    CHECK(after.events_drained - before.events_drained == 3 * 31);
    for (auto& w : watchers) CHECK(cursors(w->events()) == range(1, 31));
  }

  TEST_CASE("DrainThread::loop (the benchmark baseline) drains on the loop, never on the pool") {
    RunConfig rc;
    rc.drain_thread = DrainThread::loop;
    RunFixture f(Fixture::disabled_auth(), rc);
    auto writer = f.peer();
    auto watcher = f.peer();
    auto run = f.start(*writer);
    f.call(*watcher, "runs.subscribe", sub_params(run));
    f.executor.set_auto_pool(false);
    auto before = f.runs->counters();
    writer->send("runs.record_turns", R"({"run_id":")" + run + R"(","turns":[{},{},{}]})");
    f.executor.run_pool_jobs();  // the store job: it posts the pass to the loop
    CHECK(f.executor.pending_pool_jobs() == 0);
    CHECK(watcher->events().empty());
    f.executor.run_until_idle();
    CHECK(f.executor.pending_pool_jobs() == 0);
    CHECK(cursors(watcher->events()) == range(1, 3));
    auto after = f.runs->counters();
    CHECK(after.drain_hops - before.drain_hops == 1);
    CHECK(after.events_drained - before.events_drained == 3);
  }

  TEST_CASE("bounded queue: drops for the full subscriber alone, then one gap notice") {
    RunConfig rc;
    rc.subscriber_queue = 4;
    RunFixture f(Fixture::disabled_auth(), rc);
    auto writer = f.peer();
    auto slow = f.peer();
    auto healthy = f.peer();
    auto run = f.start(*writer);
    f.call(*slow, "runs.subscribe", sub_params(run));
    f.call(*healthy, "runs.subscribe", sub_params(run));
    slow->sink->set_stalled(true);
    for (int i = 0; i < 9; ++i) {
      auto r = f.record(*writer, run, 1);  // answered at once: nothing waits on `slow`
      CHECK(r["result"]["ok"].GetBool());
    }
    CHECK(cursors(healthy->events()) == range(1, 9));
    // Event 1 is in the sink's (held) write; 2..5 fill the queue; 6..9 were dropped.
    auto stats = f.runs->subscriber_stats(run);
    REQUIRE(stats.size() == 2);
    auto& s = stats[0].client_id == slow->connection->client_id() ? stats[0] : stats[1];
    CHECK(s.queued == 4);
    CHECK(s.dropped == 4);
    CHECK(f.runs->counters().events_dropped == 4);
    // The sink never holds more than one batch of this subscriber.
    CHECK(slow->sink->stats().queued_frames <= 1);
    slow->sink->set_stalled(false);
    f.executor.run_until_idle();
    CHECK(cursors(slow->events()) == range(1, 5));
    auto gaps = slow->gaps();
    REQUIRE(gaps.size() == 1);
    auto g = parse_json(gaps[0]);
    CHECK(std::string(g["params"]["run_id"].GetString()) == run);
    CHECK(g["params"]["from_cursor"].GetInt() == 5);
    CHECK(g["params"]["to_cursor"].GetInt() == 9);
    CHECK(g["params"]["dropped"].GetInt() == 4);
    // The gap notice comes right after event 5, before anything later.
    f.record(*writer, run, 1);
    slow->collect();
    std::vector<std::string> kinds;
    for (const auto& n : slow->notes) kinds.push_back(frame_method(parse_json(n)));
    REQUIRE(kinds.size() == 7);
    CHECK(kinds[5] == "runs.trace.gap");
    CHECK(kinds[6] == "runs.trace.event");
    CHECK(cursor_of(slow->notes[6]) == 10);
    CHECK(slow->gaps().size() == 1);  // once
    CHECK(healthy->gaps().empty());
    CHECK(cursors(healthy->events()) == range(1, 10));
    // A re-subscribe backfills everything.
    auto snap = f.call(*slow, "runs.subscribe", sub_params(run));
    CHECK(snap["result"]["turns_so_far"].Size() == 10);
  }

  TEST_CASE("the gap covers a dropped ended event") {
    RunConfig rc;
    rc.subscriber_queue = 2;
    RunFixture f(Fixture::disabled_auth(), rc);
    auto writer = f.peer();
    auto slow = f.peer();
    auto run = f.start(*writer);
    f.call(*slow, "runs.subscribe", sub_params(run));
    slow->sink->set_stalled(true);
    f.record(*writer, run, 1);  // drained into the sink, whose write is held
    f.record(*writer, run, 3);  // 2..3 queued, 4 dropped
    f.call(*writer, "runs.complete", R"({"run_id":")" + run + R"(","outcome":{}})");  // dropped
    slow->sink->set_stalled(false);
    f.executor.run_until_idle();
    CHECK(cursors(slow->events()) == range(1, 3));
    auto gaps = slow->gaps();
    REQUIRE(gaps.size() == 1);
    auto g = parse_json(gaps[0]);
    CHECK(g["params"]["from_cursor"].GetInt() == 3);
    CHECK(g["params"]["to_cursor"].GetInt() == 4);
    CHECK(g["params"]["dropped"].GetInt() == 2);
  }

  TEST_CASE("case 33 in-process: a stalled subscriber never delays the producer or others") {
    RunFixture f;
    auto writer = f.peer();
    // 1900 x 8 KB = 15 MB of turns; the final re-subscribe reply carries only the newest 2 MiB of
    // them. The peer's sink bound is raised all the same, so only the snapshot bound is tested.
    SinkLimits roomy;
    roomy.max_bytes = 32 * 1024 * 1024;
    auto stalled = f.peer(roomy);
    auto healthy = f.peer();
    auto run = f.start(*writer);
    f.call(*stalled, "runs.subscribe", sub_params(run));
    f.call(*healthy, "runs.subscribe", sub_params(run));
    stalled->sink->set_stalled(true);
    const std::string turn = big_turn(8000);
    for (int i = 0; i < 1900; ++i) {
      int id = writer->send("runs.record_turns", R"({"run_id":")" + run + R"(","turns":[)" + turn + "]}");
      f.executor.run_until_idle();
      REQUIRE(writer->has_reply(id));  // in the same loop turn, whatever `stalled` does
      writer->replies.clear();
      writer->order.clear();
    }
    auto events = healthy->events();
    REQUIRE(events.size() == 1900);
    CHECK(cursors(events) == range(1, 1900));
    // The stalled connection holds at most one batch (the first event) in its sink plus its queue.
    CHECK(stalled->sink->stats().queued_frames <= 1);
    stalled->sink->set_stalled(false);
    f.executor.run_until_idle();
    CHECK(cursors(stalled->events()) == range(1, 257));
    auto gaps = stalled->gaps();
    REQUIRE(gaps.size() == 1);
    auto g = parse_json(gaps[0]);
    CHECK(g["params"]["from_cursor"].GetInt() == 257);
    CHECK(g["params"]["to_cursor"].GetInt() == 1900);
    CHECK(g["params"]["dropped"].GetInt() == 1643);
    // A re-subscribe returns the newest 2 MiB of turns and says where they start (the rest is
    // paged with runs.get_trace).
    auto snap = f.call(*stalled, "runs.subscribe", sub_params(run));
    const auto kept = snap["result"]["turns_so_far"].Size();
    CHECK(kept == 259);  // 2 MiB of 8 KB turns
    CHECK(snap["result"]["turns_from"].GetUint() + kept == 1900);
    CHECK(snap["result"]["turns_so_far"][0]["index"].GetUint() == snap["result"]["turns_from"].GetUint());
    CHECK(snap["result"]["cursor"].GetInt() == 1900);
  }

  TEST_CASE("a failed write ends only that subscription and closes only that connection") {
    RunFixture f;
    auto writer = f.peer();
    auto failing = f.peer();
    auto healthy = f.peer();
    auto run = f.start(*writer);
    auto other_run = f.start(*writer);
    f.call(*failing, "runs.subscribe", sub_params(run));
    f.call(*failing, "runs.subscribe", sub_params(other_run));
    f.call(*healthy, "runs.subscribe", sub_params(run));
    CHECK(f.runs->subscriber_stats().size() == 3);
    std::size_t connections = f.server.connection_count();
    failing->sink->fail_next_write();
    CHECK(f.record(*writer, run, 1)["result"]["ok"].GetBool());
    CHECK(failing->connection->closed());
    CHECK(f.server.connection_count() == connections - 1);
    auto stats = f.runs->subscriber_stats();
    REQUIRE(stats.size() == 1);
    CHECK(stats[0].client_id == healthy->connection->client_id());
    CHECK(f.record(*writer, run, 1)["result"]["ok"].GetBool());
    CHECK(cursors(healthy->events()) == range(1, 2));
    auto list = f.call(*writer, "runs.list", R"({"agent_id":"a1"})");
    for (const auto& s : list["result"]["runs"].GetArray()) {
      CHECK(std::string(s["status"].GetString()) == "in_progress");
    }
  }

  TEST_CASE("a write past the drain deadline ends the subscription and the connection (1008)") {
    RunConfig rc;
    rc.drain_timeout = 1000ms;
    RunFixture f(Fixture::disabled_auth(), rc);
    auto writer = f.peer();
    auto stuck = f.peer();
    auto healthy = f.peer();
    auto run = f.start(*writer);
    f.call(*stuck, "runs.subscribe", sub_params(run));
    f.call(*healthy, "runs.subscribe", sub_params(run));
    stuck->sink->set_stalled(true);
    f.record(*writer, run, 1);
    f.executor.advance(900ms);
    CHECK_FALSE(stuck->connection->closed());
    f.executor.advance(200ms);
    CHECK(stuck->connection->closed());
    REQUIRE(stuck->sink->transport_end().has_value());
    CHECK(stuck->sink->transport_end()->code == 1008);
    CHECK(stuck->sink->transport_end()->error == SinkError::deadline_exceeded);
    CHECK(f.runs->subscriber_stats(run).size() == 1);
    CHECK(f.record(*writer, run, 1)["result"]["ok"].GetBool());
    CHECK(cursors(healthy->events()) == range(1, 2));
  }

  TEST_CASE("case 32: two subscribers get every event; unsubscribe is idempotent") {
    RunFixture f;
    auto writer = f.peer();
    auto a = f.peer();
    auto b = f.peer();
    auto run = f.start(*writer);
    f.call(*a, "runs.subscribe", sub_params(run));
    f.call(*b, "runs.subscribe", sub_params(run));
    f.record(*writer, run, 2);
    CHECK(cursors(a->events()) == range(1, 2));
    CHECK(cursors(b->events()) == range(1, 2));
    auto u1 = f.call(*a, "runs.unsubscribe", sub_params(run));
    CHECK(std::string(u1["result"]["run_id"].GetString()) == run);
    CHECK(u1["result"]["removed"].GetBool());
    CHECK_FALSE(f.call(*a, "runs.unsubscribe", sub_params(run))["result"]["removed"].GetBool());
    CHECK_FALSE(
        f.call(*a, "runs.unsubscribe", R"({"run_id":"never"})")["result"]["removed"].GetBool());
    f.record(*writer, run, 1);
    CHECK(a->events().size() == 2);
    CHECK(cursors(b->events()) == range(1, 3));
  }

  TEST_CASE("case 34: closing a subscriber removes only its subscriptions") {
    RunFixture f;
    auto writer = f.peer();
    auto a = f.peer();
    auto b = f.peer();
    auto r1 = f.start(*writer);
    auto r2 = f.start(*writer);
    for (auto* p : {a.get(), b.get()}) {
      f.call(*p, "runs.subscribe", sub_params(r1));
      f.call(*p, "runs.subscribe", sub_params(r2));
    }
    CHECK(f.runs->subscriber_stats().size() == 4);
    a->sink->simulate_peer_closed();
    f.executor.run_until_idle();
    CHECK(a->connection->closed());
    auto stats = f.runs->subscriber_stats();
    REQUIRE(stats.size() == 2);
    for (const auto& s : stats) CHECK(s.client_id == b->connection->client_id());
    CHECK(f.record(*writer, r1, 1)["result"]["ok"].GetBool());
    CHECK(f.record(*writer, r2, 1)["result"]["ok"].GetBool());
    CHECK(b->events().size() == 2);
  }

  TEST_CASE("re-subscribe replaces the previous subscription of that connection") {
    RunFixture f;
    auto writer = f.peer();
    auto a = f.peer();
    auto run = f.start(*writer);
    f.call(*a, "runs.subscribe", sub_params(run));
    f.record(*writer, run, 1);
    auto snap = f.call(*a, "runs.subscribe", sub_params(run));
    CHECK(snap["result"]["cursor"].GetInt() == 1);
    CHECK(f.runs->subscriber_stats().size() == 1);
    f.record(*writer, run, 1);
    CHECK(cursors(a->events()) == range(1, 2));  // no duplicate of 2
  }

  TEST_CASE("the subscribe reply is written before the subscription's first event") {
    RunFixture f;
    auto writer = f.peer();
    auto run = f.start(*writer);
    // In a batch the reply waits for its slowest member (the append, on the pool); the append's
    // event is published meanwhile and must not overtake the batch reply.
    writer->connection->receive(
        R"([{"jsonrpc":"2.0","id":100,"method":"runs.subscribe","params":{"run_id":")" + run +
        R"("}},{"jsonrpc":"2.0","id":101,"method":"runs.record_turns","params":{"run_id":")" +
        run + R"(","turns":[{}]}}])");
    f.executor.run_until_idle();
    writer->collect();
    REQUIRE(writer->order.size() >= 2);
    auto last = writer->order.size();
    auto batch = parse_json(writer->order[last - 2]);
    REQUIRE(batch.IsArray());
    CHECK(batch.Size() == 2);
    CHECK(frame_method(parse_json(writer->order[last - 1])) == "runs.trace.event");
  }

  TEST_CASE("an ended run gives its final snapshot and no events") {
    RunFixture f;
    auto writer = f.peer();
    auto a = f.peer();
    auto run = f.start(*writer);
    f.record(*writer, run, 2);
    f.call(*writer, "runs.complete", R"({"run_id":")" + run + R"(","outcome":{}})");
    auto snap = f.call(*a, "runs.subscribe", sub_params(run));
    CHECK(snap["result"]["turns_so_far"].Size() == 2);
    CHECK(snap["result"]["cursor"].GetInt() == 2);
    CHECK(std::string(snap["result"]["status"].GetString()) == "completed");
    CHECK(a->events().empty());
    CHECK(f.call(*a, "runs.unsubscribe", sub_params(run))["result"]["removed"].GetBool());
    auto unknown = f.call(*a, "runs.subscribe", sub_params("nope"));
    CHECK(error_code(unknown) == -32602);
    CHECK(error_message(unknown) == "unknown run 'nope'");
  }

  TEST_CASE("threaded: a real libuv loop and pool, concurrent producers and subscribers") {
    // Runs under TSan in CI. Everything the loop owns is created and destroyed on its thread.
    LoopThread lt;
    UvExecutor* executor = lt.executor;
    TempDir dir;
    auto server = std::make_unique<Server>(*executor, Fixture::disabled_auth());
    RunConfig rc;
    rc.state_dir = dir.str();
    auto runs = install_run_services(*server, rc);
    // On any exit (also a failed REQUIRE) the loop stops before the server goes away.
    struct StopFirst {
      LoopThread& lt;
      ~StopFirst() { lt.stop(); }
    } stop_first{lt};

    auto wait_for = [](const std::function<bool()>& pred) {
      auto until = std::chrono::steady_clock::now() + 20s;
      while (!pred()) {
        if (std::chrono::steady_clock::now() > until) return false;
        std::this_thread::sleep_for(1ms);
      }
      return true;
    };
    auto count_with = [](const std::shared_ptr<LoopbackSink>& sink, const std::string& needle) {
      std::size_t n = 0;
      for (const auto& w : sink->written()) n += w.find(needle) != std::string::npos ? 1 : 0;
      return n;
    };

    constexpr int turns_per_run = 400;
    struct Producer {
      std::shared_ptr<LoopbackSink> sink;
      std::shared_ptr<Connection> connection;
      std::string run_id;
    };
    std::vector<Producer> producers;
    for (int i = 0; i < 2; ++i) {
      auto sink = LoopbackSink::create(*executor);
      auto c = server->open_connection("producer", sink);
      std::string key = "threaded-" + std::to_string(i);
      c->receive(R"({"jsonrpc":"2.0","id":1,"method":"runs.start","params":{"intent":"t",)"
                 R"("agent_id":"a1","idempotency_key":")" + key + R"("}})");
      REQUIRE(wait_for([&] { return sink->written().size() == 1; }));
      producers.push_back({sink, c, key});
    }
    std::vector<std::pair<std::shared_ptr<LoopbackSink>, std::shared_ptr<Connection>>> watchers;
    for (int i = 0; i < 3; ++i) {
      auto sink = LoopbackSink::create(*executor);
      auto c = server->open_connection("watcher", sink);
      for (const auto& p : producers) {
        c->receive(R"({"jsonrpc":"2.0","id":1,"method":"runs.subscribe","params":{"run_id":")" +
                   p.run_id + "\"}}");
      }
      watchers.emplace_back(sink, c);
    }
    watchers[2].first->set_stalled(true);  // one subscriber stops reading
    REQUIRE(wait_for([&] { return count_with(watchers[0].first, "turns_so_far") == 2; }));
    REQUIRE(wait_for([&] { return count_with(watchers[1].first, "turns_so_far") == 2; }));

    std::vector<std::thread> threads;
    for (auto& p : producers) {
      threads.emplace_back([&p] {
        for (int i = 0; i < turns_per_run; ++i) {
          p.connection->receive(R"({"jsonrpc":"2.0","id":)" + std::to_string(i + 2) +
                                R"(,"method":"runs.record_turns","params":{"run_id":")" +
                                p.run_id + R"(","turns":[{"prompt":"x"}]}})");
          // Pipeline, but stay below the in-flight cap (256).
          auto deadline = std::chrono::steady_clock::now() + 20s;
          while (static_cast<int>(p.sink->written().size()) - 1 < i + 1 - 64 &&
                 std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(100us);
          }
        }
      });
    }
    // Stats and unsubscribe/resubscribe churn from another thread meanwhile.
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        (void)runs->subscriber_stats();
        std::this_thread::sleep_for(1ms);
      }
    });
    for (auto& t : threads) t.join();
    for (auto& p : producers) {
      bool all = wait_for([&] { return count_with(p.sink, R"("ok":true)") == turns_per_run; });
      if (!all) {
        auto w = p.sink->written();
        for (const auto& t : w) if (t.find("\"ok\":true") == std::string::npos) MESSAGE(t);
        MESSAGE("replies: " << w.size() << " ok: " << count_with(p.sink, R"("ok":true)")
                            << " last: " << (w.empty() ? "" : w.back()) << " pending store ops "
                            << runs->pending_store_ops());
      }
      REQUIRE(all);
    }
    for (int w = 0; w < 2; ++w) {
      auto& sink = watchers[static_cast<std::size_t>(w)].first;
      REQUIRE(wait_for([&] { return count_with(sink, "runs.trace.event") == 2 * turns_per_run; }));
      // Per run, cursors arrive in order 1..N.
      for (const auto& p : producers) {
        std::uint64_t expected = 1;
        for (const auto& text : sink->written()) {
          if (text.find("runs.trace.event") == std::string::npos) continue;
          if (text.find(p.run_id) == std::string::npos) continue;
          CHECK(cursor_of(text) == expected);
          ++expected;
        }
      }
    }
    auto counters = runs->counters();
    CHECK(counters.events_drained >= 4 * turns_per_run);
    CHECK(counters.events_dropped > 0);  // the stalled subscriber
    MESSAGE("threaded: drain hops " << counters.drain_hops << ", events drained "
                                    << counters.events_drained << ", store jobs "
                                    << counters.store_jobs << ", store ops "
                                    << counters.store_ops);
    watchers[2].first->set_stalled(false);

    // Shut down on the loop thread: end every connection, then the executor.
    std::vector<std::shared_ptr<Connection>> all;
    for (auto& p : producers) all.push_back(p.connection);
    for (auto& w : watchers) all.push_back(w.second);
    bool flushed = false;
    executor->post([&] { runs->shutdown([&] { flushed = true; }); });
    REQUIRE(wait_for([&] { return runs->pending_store_ops() == 0; }));
    executor->post([all] {
      for (auto& c : all) c->end();
    });
    lt.stop();
    CHECK(flushed);
    all.clear();
    producers.clear();
    watchers.clear();
    runs.reset();
    server.reset();
  }
}
