// QueuedFrameSink through LoopbackSink: bounds, completions, coalescing, deadlines, close,
// observers and cross-thread sends.
#include <atomic>
#include <thread>

#include <fmt/format.h>

#include "../../test_support.hpp"

using namespace car;
using namespace car::testing;
using namespace std::chrono_literals;

TEST_SUITE("queued_frame_sink") {
  TEST_CASE("frames are written in order and each completion runs once") {
    ManualExecutor ex;
    auto sink = LoopbackSink::create(ex);
    std::vector<SinkError> results;
    for (int i = 0; i < 5; ++i) {
      REQUIRE(sink->send(make_frame("f" + std::to_string(i)),
                         [&](SinkError e) { results.push_back(e); }) == SinkError::none);
    }
    CHECK(results.empty());  // never synchronously
    ex.run_until_idle();
    CHECK(sink->written() == std::vector<std::string>{"f0", "f1", "f2", "f3", "f4"});
    REQUIRE(results.size() == 5);
    for (auto r : results) CHECK(r == SinkError::none);
    CHECK(sink->stats().queued_frames == 0);
    CHECK(sink->stats().queued_bytes == 0);
  }

  TEST_CASE("sends made before the loop runs coalesce into one write") {
    ManualExecutor ex;
    auto sink = LoopbackSink::create(ex);
    for (int i = 0; i < 100; ++i) sink->send(make_frame("x"));
    ex.run_until_idle();
    CHECK(sink->written().size() == 100);
    CHECK(sink->write_calls() == 1);
  }

  TEST_CASE("one write in flight; frames queued meanwhile go in the next write") {
    ManualExecutor ex;
    auto sink = LoopbackSink::create(ex);
    sink->set_stalled(true);
    sink->send(make_frame("a"));
    ex.run_until_idle();
    CHECK(sink->write_calls() == 1);
    sink->send(make_frame("b"));
    sink->send(make_frame("c"));
    ex.run_until_idle();
    CHECK(sink->write_calls() == 1);  // still waiting for the first write
    sink->set_stalled(false);
    ex.run_until_idle();
    CHECK(sink->write_calls() == 2);
    CHECK(sink->written() == std::vector<std::string>{"a", "b", "c"});
  }

  TEST_CASE("frame bound: a full sink refuses at once and queues nothing") {
    ManualExecutor ex;
    SinkLimits limits;
    limits.max_frames = 3;
    auto sink = LoopbackSink::create(ex, limits);
    int completions = 0;
    for (int i = 0; i < 3; ++i) {
      CHECK(sink->send(make_frame("x"), [&](SinkError) { ++completions; }) == SinkError::none);
    }
    CHECK(sink->send(make_frame("y"), [&](SinkError) { ++completions; }) == SinkError::full);
    CHECK(sink->stats().queued_frames == 3);
    ex.run_until_idle();
    CHECK(completions == 3);  // the refused send's completion never runs
    CHECK(sink->send(make_frame("z")) == SinkError::none);  // room again after the write
  }

  TEST_CASE("byte bound counts queued and in-flight bytes") {
    ManualExecutor ex;
    SinkLimits limits;
    limits.max_bytes = 10;
    auto sink = LoopbackSink::create(ex, limits);
    sink->set_stalled(true);
    CHECK(sink->send(make_frame("123456")) == SinkError::none);
    ex.run_until_idle();  // now in flight
    CHECK(sink->send(make_frame("12345")) == SinkError::full);
    CHECK(sink->send(make_frame("1234")) == SinkError::none);
    CHECK(sink->stats().queued_bytes == 10);
  }

  TEST_CASE("one frame above the byte bound is accepted only into an empty sink") {
    ManualExecutor ex;
    SinkLimits limits;
    limits.max_bytes = 10;
    auto sink = LoopbackSink::create(ex, limits);
    sink->set_stalled(true);
    CHECK(sink->send(make_frame(std::string(50, 'x'))) == SinkError::none);
    CHECK(sink->send(make_frame("a")) == SinkError::full);
    ex.run_until_idle();
    sink->set_stalled(false);
    ex.run_until_idle();
    CHECK(sink->written().size() == 1);
    CHECK(sink->send(make_frame("a")) == SinkError::none);
    CHECK(sink->send(make_frame(std::string(50, 'y'))) == SinkError::full);
  }

  TEST_CASE("a write that misses its deadline fails the sink and notifies observers") {
    ManualExecutor ex;
    SinkLimits limits;
    limits.write_deadline = 1000ms;
    auto sink = LoopbackSink::create(ex, limits);
    std::optional<SinkEnd> ended;
    sink->on_end([&](const SinkEnd& e) { ended = e; });
    sink->set_stalled(true);
    std::vector<SinkError> results;
    sink->send(make_frame("a"), [&](SinkError e) { results.push_back(e); });
    sink->send(make_frame("b"), [&](SinkError e) { results.push_back(e); }, 500ms);
    ex.run_until_idle();
    ex.advance(400ms);
    CHECK_FALSE(ended.has_value());
    ex.advance(200ms);  // frame b's own 500 ms deadline passed
    REQUIRE(ended.has_value());
    CHECK(ended->error == SinkError::deadline_exceeded);
    CHECK(ended->failed());
    REQUIRE(results.size() == 2);
    CHECK(results[0] == SinkError::deadline_exceeded);
    CHECK(results[1] == SinkError::deadline_exceeded);
    CHECK_FALSE(sink->is_open());
    CHECK(sink->send(make_frame("c")) == SinkError::closed);
    REQUIRE(sink->transport_end().has_value());
  }

  TEST_CASE("writes that complete in time never trip the deadline") {
    ManualExecutor ex;
    SinkLimits limits;
    limits.write_deadline = 100ms;
    auto sink = LoopbackSink::create(ex, limits);
    bool ended = false;
    sink->on_end([&](const SinkEnd&) { ended = true; });
    for (int i = 0; i < 10; ++i) {
      sink->send(make_frame("x"));
      ex.advance(60ms);
    }
    CHECK_FALSE(ended);
    CHECK(sink->written().size() == 10);
  }

  TEST_CASE("graceful close flushes queued frames, then ends with the code") {
    ManualExecutor ex;
    auto sink = LoopbackSink::create(ex);
    SinkEnd seen;
    int observed = 0;
    sink->on_end([&](const SinkEnd& e) {
      seen = e;
      ++observed;
    });
    sink->send(make_frame("a"));
    sink->send(make_frame("b"));
    sink->close(1001, "going away");
    CHECK(sink->send(make_frame("late")) == SinkError::closed);
    ex.run_until_idle();
    CHECK(sink->written() == std::vector<std::string>{"a", "b"});
    CHECK(observed == 1);
    CHECK(seen.code == 1001);
    CHECK_FALSE(seen.failed());
    sink->close(1000, "again");  // idempotent
    ex.run_until_idle();
    CHECK(observed == 1);
  }

  TEST_CASE("close gives up after the flush time when the peer does not read") {
    ManualExecutor ex;
    SinkLimits limits;
    limits.close_flush = 2000ms;
    limits.write_deadline = 60000ms;
    auto sink = LoopbackSink::create(ex, limits);
    std::optional<SinkEnd> seen;
    sink->on_end([&](const SinkEnd& e) { seen = e; });
    sink->set_stalled(true);
    sink->send(make_frame("stuck"));
    sink->close(1001, "shutdown");
    ex.advance(1900ms);
    CHECK_FALSE(seen.has_value());
    ex.advance(200ms);
    REQUIRE(seen.has_value());
    CHECK(seen->failed());
    CHECK(seen->code == 1001);
  }

  TEST_CASE("abort completes pending frames with the reason; observers run once") {
    ManualExecutor ex;
    auto sink = LoopbackSink::create(ex);
    sink->set_stalled(true);
    std::vector<SinkError> results;
    sink->send(make_frame("a"), [&](SinkError e) { results.push_back(e); });
    ex.run_until_idle();
    sink->send(make_frame("b"), [&](SinkError e) { results.push_back(e); });
    int observed = 0;
    sink->on_end([&](const SinkEnd& e) {
      ++observed;
      CHECK(e.error == SinkError::full);
    });
    sink->abort(SinkError::full, "overflow");
    CHECK_FALSE(sink->is_open());
    ex.run_until_idle();
    CHECK(observed == 1);
    REQUIRE(results.size() == 2);
    CHECK(results[0] == SinkError::full);
    CHECK(results[1] == SinkError::full);
  }

  TEST_CASE("an I/O error fails the sink") {
    ManualExecutor ex;
    auto sink = LoopbackSink::create(ex);
    std::optional<SinkEnd> seen;
    sink->on_end([&](const SinkEnd& e) { seen = e; });
    sink->fail_next_write();
    SinkError result = SinkError::none;
    sink->send(make_frame("a"), [&](SinkError e) { result = e; });
    ex.run_until_idle();
    CHECK(result == SinkError::io_error);
    REQUIRE(seen.has_value());
    CHECK(seen->error == SinkError::io_error);
  }

  TEST_CASE("an observer added after the end still runs, later") {
    ManualExecutor ex;
    auto sink = LoopbackSink::create(ex);
    sink->simulate_peer_closed();
    ex.run_until_idle();
    bool ran = false;
    sink->on_end([&](const SinkEnd& e) {
      ran = true;
      CHECK(e.error == SinkError::closed);
    });
    CHECK_FALSE(ran);
    ex.run_until_idle();
    CHECK(ran);
  }

  TEST_CASE("watermarks report above and below") {
    ManualExecutor ex;
    auto sink = LoopbackSink::create(ex);
    std::vector<bool> reports;
    sink->set_watermarks(10, 4, [&](bool above) { reports.push_back(above); });
    sink->set_stalled(true);
    sink->send(make_frame("123456"));
    sink->send(make_frame("123456"));
    ex.run_until_idle();
    REQUIRE(reports == std::vector<bool>{true});
    sink->set_stalled(false);
    ex.run_until_idle();
    CHECK(reports == std::vector<bool>{true, false});
  }

  TEST_CASE("replies are accepted past both bounds; other frames are still refused") {
    ManualExecutor ex;
    SinkLimits limits;
    limits.max_frames = 2;
    limits.max_bytes = 10;
    auto sink = LoopbackSink::create(ex, limits);
    sink->set_stalled(true);
    CHECK(sink->send(make_frame("123456")) == SinkError::none);
    CHECK(sink->send(make_frame("123456")) == SinkError::full);
    int completions = 0;
    CHECK(sink->send_reply(make_frame(std::string(50, 'r')), [&](SinkError e) {
      CHECK(e == SinkError::none);
      ++completions;
    }) == SinkError::none);
    CHECK(sink->send_reply(make_frame("r2")) == SinkError::none);
    CHECK(sink->stats().queued_frames == 3);
    CHECK(sink->stats().queued_bytes == 58);
    CHECK(sink->send(make_frame("e")) == SinkError::full);  // events still meet the bound
    sink->set_stalled(false);
    ex.run_until_idle();
    CHECK(completions == 1);
    CHECK(sink->written().size() == 3);
    sink->close(1000, "bye");
    CHECK(sink->send_reply(make_frame("late")) == SinkError::closed);
  }

  TEST_CASE("watermarks also count frames: above half of max_frames, below at a quarter") {
    ManualExecutor ex;
    SinkLimits limits;
    limits.max_frames = 8;
    auto sink = LoopbackSink::create(ex, limits);
    std::vector<bool> reports;
    sink->set_watermarks(1 << 20, 1 << 19, [&](bool above) { reports.push_back(above); });
    sink->set_stalled(true);
    for (int i = 0; i < 4; ++i) sink->send(make_frame("x"));
    ex.run_until_idle();
    CHECK(reports.empty());  // 4 frames: not above half of 8
    sink->send_reply(make_frame("x"));
    ex.run_until_idle();
    REQUIRE(reports == std::vector<bool>{true});
    sink->set_stalled(false);
    ex.run_until_idle();
    CHECK(reports == std::vector<bool>{true, false});
  }

  TEST_CASE("control frames: one waits unsent, a newer one replaces it and keeps its deadline") {
    ManualExecutor ex;
    SinkLimits limits;
    limits.write_deadline = 1000ms;
    auto sink = LoopbackSink::create(ex, limits);
    sink->set_stalled(true);
    CHECK(sink->send_control(make_frame("pong-1")) == SinkError::none);
    ex.run_until_idle();  // pong-1 is now in flight and stays there
    ex.advance(600ms);
    for (int i = 2; i <= 1000; ++i) {
      CHECK(sink->send_control(make_frame(fmt::format("pong-{}", i))) == SinkError::none);
    }
    CHECK(sink->stats().queued_frames == 2);  // one in flight, one waiting: not 1000
    CHECK(sink->stats().queued_bytes == 6 + 9);
    ex.advance(500ms);  // past the deadline of the first waiting pong, set 400 ms ago
    ex.run_until_idle();
    auto end = sink->transport_end();
    REQUIRE(end.has_value());
    CHECK(end->error == SinkError::deadline_exceeded);
  }

  TEST_CASE("control frames are written as they are, in queue order") {
    ManualExecutor ex;
    auto sink = LoopbackSink::create(ex);
    sink->set_stalled(true);
    sink->send(make_frame("a"));
    ex.run_until_idle();
    sink->send(make_frame("b"));
    sink->send_control(make_frame("p1"));
    sink->send_control(make_frame("p2"));
    sink->send(make_frame("c"));
    sink->set_stalled(false);
    ex.run_until_idle();
    CHECK(sink->written() == std::vector<std::string>{"a", "b", "p2", "c"});
    sink->abort(SinkError::aborted, "x");
    ex.run_until_idle();
    CHECK(sink->send_control(make_frame("p3")) == SinkError::closed);
  }

  TEST_CASE("sends from many threads: every accepted frame completes exactly once") {
    ManualExecutor ex;
    SinkLimits limits;
    limits.max_frames = 100000;
    limits.max_bytes = 1 << 30;
    auto sink = LoopbackSink::create(ex, limits);
    std::atomic<int> accepted{0};
    std::atomic<int> completed{0};
    std::atomic<bool> done{false};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 2000; ++i) {
          if (sink->send(make_frame(std::to_string(t)),
                         [&](SinkError e) {
                           if (e == SinkError::none) completed.fetch_add(1);
                         }) == SinkError::none) {
            accepted.fetch_add(1);
          }
        }
      });
    }
    // The test thread is the loop: keep pumping while producers run.
    std::thread joiner([&] {
      for (auto& th : threads) th.join();
      done = true;
    });
    while (!done.load()) ex.run_until_idle();
    joiner.join();
    ex.run_until_idle();
    CHECK(accepted.load() == 8000);
    CHECK(completed.load() == 8000);
    CHECK(sink->written().size() == 8000);
  }
}
