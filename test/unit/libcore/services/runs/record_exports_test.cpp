// The record sink seam (car/runs/record_exporter.hpp): exporters see every acknowledged record
// of a run exactly once and in order, a blocked exporter neither slows producers nor grows past
// its queue bound and later catches up from the store, a throwing exporter harms nobody, and host
// events are offered in sequence.
#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "car/host/host_service.hpp"
#include "run_test_support.hpp"

using namespace car;
using namespace car::test;

namespace {

// Records every batch it is handed; can be held inside deliver until released, or made to throw.
class RecordingExporter : public RecordExporter {
 public:
  explicit RecordingExporter(std::string name = "recording") : name_(std::move(name)) {}

  std::string name() const override { return name_; }

  std::optional<std::string> deliver(std::span<const ExportRecord> batch,
                                     RecordReplay&) override {
    std::unique_lock lock(mutex_);
    entered_ += 1;
    changed_.notify_all();
    changed_.wait(lock, [&] { return !held_; });
    if (throws_) throw std::runtime_error("exporter exploded");
    for (const auto& r : batch) seen_.push_back(r);
    changed_.notify_all();
    return std::nullopt;
  }

  void hold() {
    std::lock_guard lock(mutex_);
    held_ = true;
  }
  void release() {
    std::lock_guard lock(mutex_);
    held_ = false;
    changed_.notify_all();
  }
  void make_throw() { throws_ = true; }

  // Bounded waits (a generous bound on a condition, not a timing assertion).
  bool wait_entered(int n) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, std::chrono::seconds(20), [&] { return entered_ >= n; });
  }
  bool wait_seen(std::size_t n) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, std::chrono::seconds(20), [&] { return seen_.size() >= n; });
  }
  std::vector<ExportRecord> seen() {
    std::lock_guard lock(mutex_);
    return seen_;
  }

 private:
  const std::string name_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool held_ = false;
  std::atomic<bool> throws_{false};
  int entered_ = 0;
  std::vector<ExportRecord> seen_;
};

// An exporter with a link of its own: reports a status and wants idle calls (a retry timer):
// every 5 ms until it has been called `idle_rounds` times, then none until the next deliver.
class LinkedExporter : public RecordingExporter {
 public:
  explicit LinkedExporter(int idle_rounds) : RecordingExporter("linked"), rounds_(idle_rounds) {}

  std::optional<std::chrono::milliseconds> idle(RecordReplay&) override {
    int n = ++idle_calls_;
    if (n < rounds_) return std::chrono::milliseconds(5);
    return std::nullopt;
  }
  std::optional<ExporterStatus> status() const override {
    return ExporterStatus{connected_.load(), 7, "broker said no"};
  }

  int idle_calls() const { return idle_calls_.load(); }
  void set_connected(bool c) { connected_ = c; }

 private:
  const int rounds_;
  std::atomic<int> idle_calls_{0};
  std::atomic<bool> connected_{false};
};

RunConfig exporting(std::vector<std::shared_ptr<RecordExporter>> exporters,
                    std::size_t max_queued = 4096) {
  RunConfig rc;
  rc.exporters = std::move(exporters);
  rc.export_options.max_queued_records = max_queued;
  return rc;
}

// Every record of `run_id` in `seen`, in the order seen; CHECKs that their offsets are exactly
// 0, 1, 2, ... (each once, in order) and that each equals the stored record at that offset.
void check_run_exported(RunFixture& f, const std::vector<ExportRecord>& seen,
                        const std::string& run_id, std::size_t expected) {
  std::vector<const ExportRecord*> of_run;
  for (const auto& r : seen) {
    if (r.source == ExportSource::run_record && r.run_id == run_id) of_run.push_back(&r);
  }
  REQUIRE(of_run.size() == expected);
  auto stored = make_jsonl_run_store(f.dir.str())->read(run_id);
  REQUIRE(stored);
  REQUIRE(stored->records.size() == expected);
  for (std::size_t i = 0; i < of_run.size(); ++i) {
    CHECK(of_run[i]->offset == i);
    CHECK(of_run[i]->agent_id == "a1");
    REQUIRE(of_run[i]->json);
    CHECK(*of_run[i]->json == stored->records[i]);
  }
  CHECK(record_kind(*of_run.front()->json) == "started");
  CHECK(record_kind(*of_run.back()->json) == "ended");
}

bool answered_ok(const json::Document& reply) { return reply.HasMember("result"); }

// Waits (bounded: 20 s) until exporter `index`'s counters satisfy `pred`; counters are updated
// on the exporter's thread just after each deliver returns.
template <typename Pred>
ExporterStats wait_stats(RunFixture& f, std::size_t index, Pred pred) {
  for (int i = 0; i < 2000; ++i) {
    auto s = f.runs->exporter_stats().at(index);
    if (pred(s)) return s;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return f.runs->exporter_stats().at(index);
}

}  // namespace

TEST_SUITE("record_exports") {
  TEST_CASE("every record of a run is offered once, in order, after it is stored") {
    auto exporter = std::make_shared<RecordingExporter>();
    RunFixture f(Fixture::disabled_auth(), exporting({exporter}));
    auto p = f.peer();
    auto run = f.start(*p);
    for (int i = 0; i < 5; ++i) REQUIRE(answered_ok(f.record(*p, run, 3)));
    REQUIRE(answered_ok(f.call(*p, "runs.complete",
                               R"({"run_id":")" + run + R"(","outcome":{"status":"success"}})")));
    REQUIRE(exporter->wait_seen(17));
    check_run_exported(f, exporter->seen(), run, 17);
    for (const auto& r : exporter->seen()) CHECK_FALSE(r.replayed);

    wait_stats(f, 0, [](const ExporterStats& s) { return s.delivered == 17; });
    auto stats = f.runs->exporter_stats();
    REQUIRE(stats.size() == 1);
    CHECK(stats[0].name == "recording");
    CHECK(stats[0].offered == 17);
    CHECK(stats[0].delivered == 17);
    CHECK(stats[0].fell_behind == 0);
    CHECK(f.runs->counters().exports_delivered == 17);
    // runs.stats reports the exporter too.
    auto reply = f.call(*p, "runs.stats");
    REQUIRE(reply["result"]["exporters"].IsArray());
    REQUIRE(reply["result"]["exporters"].Size() == 1);
    CHECK(reply["result"]["exporters"][0]["delivered"].GetUint64() == 17);
  }

  TEST_CASE("a refused call offers nothing") {
    auto exporter = std::make_shared<RecordingExporter>();
    RunFixture f(Fixture::disabled_auth(), exporting({exporter}));
    auto p = f.peer();
    auto run = f.start(*p);
    REQUIRE(answered_ok(f.call(*p, "runs.complete",
                               R"({"run_id":")" + run + R"(","outcome":{"status":"success"}})")));
    // Terminal: refused with run_terminal, nothing stored, nothing offered.
    auto refused = f.record(*p, run, 2);
    REQUIRE(answered_ok(refused));
    CHECK(std::string(refused["result"]["dropped"].GetString()) == "run_terminal");
    REQUIRE(exporter->wait_seen(2));
    CHECK(f.runs->exporter_stats()[0].offered == 2);
    check_run_exported(f, exporter->seen(), run, 2);
  }

  TEST_CASE("a blocked exporter does not hold producers and catches up from the store") {
    auto exporter = std::make_shared<RecordingExporter>();
    exporter->hold();
    RunFixture f(Fixture::disabled_auth(), exporting({exporter}, 8));
    // Released on every exit, so a failed REQUIRE ends the test instead of hanging the join of
    // the exporter's thread in the fixture's destructor.
    struct Release {
      RecordingExporter& exporter;
      ~Release() { exporter.release(); }
    } release_on_exit{*exporter};
    auto p = f.peer();
    auto a = f.start(*p);
    REQUIRE(exporter->wait_entered(1));  // blocked inside deliver with run a's `started`
    auto b = f.start(*p);
    // 2 × 40 calls, interleaved, every one acknowledged while the exporter is blocked.
    for (int i = 0; i < 40; ++i) {
      REQUIRE(answered_ok(f.record(*p, a, 1)));
      REQUIRE(answered_ok(f.record(*p, b, 2)));
    }
    for (const auto& run : {a, b}) {
      REQUIRE(answered_ok(f.call(
          *p, "runs.complete", R"({"run_id":")" + run + R"(","outcome":{"status":"success"}})")));
    }
    auto stats = f.runs->exporter_stats()[0];
    CHECK(stats.queued == 8);  // at its bound, not beyond
    CHECK(stats.behind);
    CHECK(stats.fell_behind == 1);
    CHECK(stats.delivered == 0);
    CHECK(stats.offered == 1 + 1 + 40 + 80 + 2);
    CHECK(exporter->seen().empty());

    exporter->release();
    const std::size_t total_a = 1 + 40 + 1, total_b = 1 + 80 + 1;
    REQUIRE(exporter->wait_seen(total_a + total_b));
    auto seen = exporter->seen();
    CHECK(seen.size() == total_a + total_b);
    check_run_exported(f, seen, a, total_a);
    check_run_exported(f, seen, b, total_b);
    stats = wait_stats(f, 0, [](const ExporterStats& s) { return s.caught_up == 1; });
    CHECK_FALSE(stats.behind);
    CHECK(stats.caught_up == 1);
    CHECK(stats.lost == 0);
    CHECK(stats.delivered == total_a + total_b);
    CHECK(stats.replayed == total_a + total_b - 1 - 8);  // all but the held batch and the queue
    std::size_t replayed = 0;
    for (const auto& r : seen) replayed += r.replayed ? 1 : 0;
    CHECK(replayed == stats.replayed);

    // Live again: a later record arrives through the queue, not the store.
    auto c = f.start(*p);
    REQUIRE(exporter->wait_seen(total_a + total_b + 1));
    CHECK_FALSE(exporter->seen().back().replayed);
    CHECK(exporter->seen().back().run_id == c);
  }

  TEST_CASE("an exporter that throws affects neither producers nor other exporters") {
    auto thrower = std::make_shared<RecordingExporter>("thrower");
    thrower->make_throw();
    auto good = std::make_shared<RecordingExporter>("good");
    RunFixture f(Fixture::disabled_auth(), exporting({thrower, good}));
    auto p = f.peer();
    auto run = f.start(*p);
    for (int i = 0; i < 10; ++i) REQUIRE(answered_ok(f.record(*p, run, 2)));
    REQUIRE(answered_ok(f.call(*p, "runs.complete",
                               R"({"run_id":")" + run + R"(","outcome":{"status":"success"}})")));
    REQUIRE(good->wait_seen(22));
    check_run_exported(f, good->seen(), run, 22);
    // The thrower was handed everything too (its errors counted), and saw nothing it could keep.
    wait_stats(f, 0, [](const ExporterStats& s) { return s.delivered == 22; });
    auto stats = f.runs->exporter_stats();
    CHECK(stats[0].name == "thrower");
    CHECK(stats[0].delivered == 22);
    CHECK(stats[0].errors >= 1);
    CHECK(thrower->seen().empty());
    CHECK(stats[1].errors == 0);
  }

  TEST_CASE("host events are offered in sequence") {
    auto exporter = std::make_shared<RecordingExporter>();
    RunFixture f(Fixture::disabled_auth(), exporting({exporter}));
    auto host = host::install_host_services(f.server);
    auto tap = f.runs->host_event_exporter();
    REQUIRE(tap);
    CHECK(tap == f.runs->host_event_exporter());
    host->state().subscribe("record-exporters", tap);
    for (int i = 0; i < 30; ++i) {
      REQUIRE(host->state().record({"test.event", std::nullopt, "m" + std::to_string(i), "{}"}));
    }
    REQUIRE(exporter->wait_seen(30));
    auto seen = exporter->seen();
    REQUIRE(seen.size() == 30);
    for (std::size_t i = 0; i < seen.size(); ++i) {
      CHECK(seen[i].source == ExportSource::host_event);
      CHECK(seen[i].offset == i + 1);
      auto doc = parse_json(*seen[i].json);
      CHECK(doc["params"]["sequence"].GetUint64() == i + 1);
      CHECK(std::string(doc["params"]["message"].GetString()) == "m" + std::to_string(i));
    }
  }

  TEST_CASE("idle() runs after start, as often as asked, and again after a deliver") {
    auto exporter = std::make_shared<LinkedExporter>(3);
    RunFixture f(Fixture::disabled_auth(), exporting({exporter}));
    for (int i = 0; i < 2000 && exporter->idle_calls() < 3; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    REQUIRE(exporter->idle_calls() == 3);
    // It said it has nothing left: no call until a record arrives (a bounded look, not a timing
    // assertion: a call that should not happen would show up here).
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK(exporter->idle_calls() == 3);
    auto p = f.peer();
    f.start(*p);
    REQUIRE(exporter->wait_seen(1));
    for (int i = 0; i < 2000 && exporter->idle_calls() < 4; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    CHECK(exporter->idle_calls() == 4);
  }

  TEST_CASE("an exporter's status and lag reach exporter_stats and runs.stats") {
    auto plain = std::make_shared<RecordingExporter>();
    auto linked = std::make_shared<LinkedExporter>(1);
    RunFixture f(Fixture::disabled_auth(), exporting({plain, linked}));
    linked->set_connected(true);
    plain->hold();  // its one record stays in deliver: a lag of 1
    auto p = f.peer();
    f.start(*p);
    REQUIRE(plain->wait_entered(1));
    REQUIRE(linked->wait_seen(1));
    auto s = wait_stats(f, 1, [](const ExporterStats& e) { return e.delivered == 1; });
    REQUIRE(s.status);
    CHECK(s.status->connected);
    CHECK(s.status->pending == 7);
    CHECK(s.status->last_error == "broker said no");
    CHECK(s.lag == 7);  // nothing of the service's own left, plus what the exporter holds
    auto held = f.runs->exporter_stats().at(0);
    CHECK_FALSE(held.status);
    CHECK(held.lag == 1);
    auto reply = f.call(*p, "runs.stats");
    const auto& list = reply["result"]["exporters"];
    REQUIRE(list.Size() == 2);
    CHECK(list[0]["lag"].GetUint64() == 1);
    CHECK_FALSE(list[0].HasMember("connected"));
    CHECK_FALSE(list[0].HasMember("last_error"));
    CHECK(list[1]["lag"].GetUint64() == 7);
    CHECK(list[1]["connected"].GetBool());
    CHECK(std::string(list[1]["last_error"].GetString()) == "broker said no");
    plain->release();
    s = wait_stats(f, 0, [](const ExporterStats& e) { return e.delivered == 1; });
    CHECK(s.lag == 0);
  }

  TEST_CASE("no exporter: no tap, no counters") {
    RunFixture f;
    CHECK_FALSE(f.runs->host_event_exporter());
    CHECK(f.runs->exporter_stats().empty());
    auto p = f.peer();
    f.start(*p);
    CHECK(f.runs->counters().exports_offered == 0);
  }
}
