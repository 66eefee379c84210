// UvExecutor (uv_executor.cpp) on a private libuv loop: posts from the loop and from other threads,
// queue_work on the pool with `after` on the loop, timers and their cancellation, exceptions in
// tasks, and shutdown (the Executor contract, car/executor.hpp).
#include "car/uv/uv_executor.hpp"

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "../../test_support.hpp"
#include "../../uv_test_support.hpp"
#include "car/log.hpp"

using namespace car;
using namespace car::test;
using car::uv::UvExecutor;

namespace {

// Captures log lines for one test (the default sink writes to stderr).
struct LogCapture {
  LogCapture() {
    set_log_sink([this](LogLevel, std::string_view line) {
      std::lock_guard lock(mutex);
      lines.emplace_back(line);
    });
  }
  ~LogCapture() { set_log_sink({}); }
  bool contains(std::string_view text) {
    std::lock_guard lock(mutex);
    for (const auto& line : lines) {
      if (line.find(text) != std::string::npos) return true;
    }
    return false;
  }
  std::mutex mutex;
  std::vector<std::string> lines;
};

struct ExecutorFixture {
  ~ExecutorFixture() {
    executor.shutdown();
    CHECK(loop.run_until([this] { return uv_loop_alive(loop.get()) == 0; }));
  }
  TestLoop loop;
  UvExecutor executor{loop.get()};
};

}  // namespace

TEST_SUITE("uv_executor") {
  TEST_CASE("in_loop_thread is true on the loop thread only") {
    ExecutorFixture f;
    CHECK(f.executor.in_loop_thread());
    bool elsewhere = true;
    std::thread([&] { elsewhere = f.executor.in_loop_thread(); }).join();
    CHECK_FALSE(elsewhere);
    CHECK(f.executor.loop() == f.loop.get());
  }

  TEST_CASE("a post on the loop thread runs later, not inside the caller, in order") {
    ExecutorFixture f;
    std::vector<int> order;
    f.executor.post([&] {
      order.push_back(1);
      f.executor.post([&] { order.push_back(3); });
      order.push_back(2);  // the nested post has not run yet
    });
    f.executor.post([&] { order.push_back(10); });
    CHECK(order.empty());
    REQUIRE(f.loop.run_until([&] { return order.size() == 4; }));
    CHECK(order == std::vector<int>{1, 2, 10, 3});
  }

  TEST_CASE("posts from another thread run on the loop thread in the order they were posted") {
    ExecutorFixture f;
    constexpr int count = 500;
    std::vector<int> seen;  // loop thread only
    bool all_on_loop = true;
    std::thread poster([&] {
      for (int i = 0; i < count; ++i) {
        f.executor.post([&, i] {
          all_on_loop = all_on_loop && f.executor.in_loop_thread();
          seen.push_back(i);
        });
      }
    });
    bool done = f.loop.run_until([&] { return seen.size() == count; });
    poster.join();
    REQUIRE(done);
    CHECK(all_on_loop);
    for (int i = 0; i < count; ++i) {
      if (seen[static_cast<std::size_t>(i)] != i) {
        FAIL_CHECK("out of order at " << i);
        break;
      }
    }
  }

  TEST_CASE("posts from many threads at once all run exactly once") {
    ExecutorFixture f;
    constexpr int threads = 4;
    constexpr int per_thread = 200;
    int ran = 0;  // loop thread only
    std::vector<std::thread> posters;
    for (int t = 0; t < threads; ++t) {
      posters.emplace_back([&] {
        for (int i = 0; i < per_thread; ++i) f.executor.post([&] { ++ran; });
      });
    }
    bool done = f.loop.run_until([&] { return ran == threads * per_thread; });
    for (auto& p : posters) p.join();
    CHECK(done);
    f.loop.run_for(std::chrono::milliseconds(5));
    CHECK(ran == threads * per_thread);
  }

  TEST_CASE("queue_work runs work on a pool thread, then after on the loop thread") {
    ExecutorFixture f;
    int result = 0;  // written by work, read by after: libuv orders the two
    bool work_on_loop = true;
    bool after_on_loop = false;
    bool after_ran = false;
    f.executor.queue_work(
        [&] {
          work_on_loop = f.executor.in_loop_thread();
          result = 42;
        },
        [&] {
          after_on_loop = f.executor.in_loop_thread();
          after_ran = result == 42;
        });
    REQUIRE(f.loop.run_until([&] { return after_ran; }));
    CHECK_FALSE(work_on_loop);
    CHECK(after_on_loop);
  }

  TEST_CASE("queue_work from another thread: both parts run, after on the loop") {
    ExecutorFixture f;
    std::atomic<int> work_ran{0};
    int after_ran = 0;  // loop thread only
    bool after_on_loop = true;
    std::thread submitter([&] {
      for (int i = 0; i < 10; ++i) {
        f.executor.queue_work([&] { work_ran.fetch_add(1); },
                              [&] {
                                after_on_loop = after_on_loop && f.executor.in_loop_thread();
                                ++after_ran;
                              });
      }
    });
    bool done = f.loop.run_until([&] { return after_ran == 10; });
    submitter.join();
    REQUIRE(done);
    CHECK(work_ran.load() == 10);
    CHECK(after_on_loop);
  }

  TEST_CASE("timers fire once, on the loop thread, shortest delay first") {
    ExecutorFixture f;
    std::vector<int> fired;
    bool on_loop = true;
    f.executor.start_timer(std::chrono::milliseconds(30), [&] { fired.push_back(30); });
    f.executor.start_timer(std::chrono::milliseconds(5), [&] {
      on_loop = f.executor.in_loop_thread();
      fired.push_back(5);
    });
    f.executor.start_timer(std::chrono::milliseconds(-1), [&] { fired.push_back(0); });
    REQUIRE(f.loop.run_until([&] { return fired.size() == 3; }));
    CHECK(fired == std::vector<int>{0, 5, 30});
    CHECK(on_loop);
    CHECK(f.loop.active_handles(UV_TIMER) == 0);  // one-shot: nothing left armed
  }

  TEST_CASE("timer ids are distinct, also when started from other threads") {
    ExecutorFixture f;
    std::vector<Executor::TimerId> ids;
    int fired = 0;
    for (int i = 0; i < 5; ++i)
      ids.push_back(f.executor.start_timer(std::chrono::milliseconds(1), [&] { ++fired; }));
    std::vector<Executor::TimerId> other(5);
    std::thread([&] {
      for (auto& id : other)
        id = f.executor.start_timer(std::chrono::milliseconds(1), [&] { ++fired; });
    }).join();
    ids.insert(ids.end(), other.begin(), other.end());
    std::sort(ids.begin(), ids.end());
    CHECK(std::adjacent_find(ids.begin(), ids.end()) == ids.end());
    CHECK(f.loop.run_until([&] { return fired == 10; }));
  }

  TEST_CASE("cancel on the loop thread before the timer fired: the callback never runs") {
    ExecutorFixture f;
    bool cancelled_ran = false;
    bool sentinel = false;
    auto id = f.executor.start_timer(std::chrono::milliseconds(1), [&] { cancelled_ran = true; });
    f.executor.start_timer(std::chrono::milliseconds(20), [&] { sentinel = true; });
    f.executor.cancel_timer(id);
    f.executor.cancel_timer(id);    // twice is harmless
    f.executor.cancel_timer(9999);  // unknown ids too
    REQUIRE(f.loop.run_until([&] { return sentinel; }));
    CHECK_FALSE(cancelled_ran);
  }

  TEST_CASE("a timer callback may cancel another timer due in the same iteration") {
    ExecutorFixture f;
    bool first = false;
    bool second = false;
    bool sentinel = false;
    Executor::TimerId second_id = 0;
    f.executor.start_timer(std::chrono::milliseconds(5), [&] {
      first = true;
      f.executor.cancel_timer(second_id);
    });
    second_id = f.executor.start_timer(std::chrono::milliseconds(5), [&] { second = true; });
    f.executor.start_timer(std::chrono::milliseconds(25), [&] { sentinel = true; });
    REQUIRE(f.loop.run_until([&] { return sentinel; }));
    CHECK(first);
    CHECK_FALSE(second);
  }

  TEST_CASE("start and cancel from another thread: the timer is gone once the thread's posts ran") {
    ExecutorFixture f;
    bool ran = false;
    bool marker = false;
    std::thread([&] {
      auto id = f.executor.start_timer(std::chrono::seconds(60), [&] { ran = true; });
      f.executor.cancel_timer(id);
      f.executor.post([&] { marker = true; });  // posts from one thread run in order
    }).join();
    REQUIRE(f.loop.run_until([&] { return marker; }));
    CHECK(f.loop.active_handles(UV_TIMER) == 0);
    CHECK_FALSE(ran);
  }

  TEST_CASE("a task that throws is logged and dropped; later tasks still run") {
    LogCapture log;
    ExecutorFixture f;
    bool later = false;
    bool after = false;
    f.executor.post([] { throw std::runtime_error("boom"); });
    f.executor.start_timer(std::chrono::milliseconds(0), [] { throw 7; });
    f.executor.queue_work([] { throw std::runtime_error("in the pool"); }, [&] { after = true; });
    f.executor.post([&] { later = true; });
    REQUIRE(f.loop.run_until([&] { return later && after; }));
    REQUIRE(
        f.loop.run_until([&] { return log.contains("uncaught non-standard exception in timer"); }));
    CHECK(log.contains("uncaught exception in posted task: boom"));
    CHECK(log.contains("uncaught exception in pool work: in the pool"));
  }

  TEST_CASE(
      "shutdown: pending posts and timers are dropped (destroyed, not run) and the loop ends") {
    ExecutorFixture f;
    auto token = std::make_shared<int>(0);
    bool ran = false;
    f.executor.post([token, &ran] { ran = true; });
    std::thread([&] { f.executor.post([token, &ran] { ran = true; }); }).join();
    f.executor.start_timer(std::chrono::milliseconds(1), [token, &ran] { ran = true; });
    CHECK(token.use_count() == 4);
    f.executor.shutdown();
    f.executor.shutdown();          // idempotent
    CHECK(token.use_count() <= 2);  // the posts at once; the timer's task with its handle's close
    // Posts after shutdown are dropped too, from any thread.
    f.executor.post([token, &ran] { ran = true; });
    std::thread([&] { f.executor.post([token, &ran] { ran = true; }); }).join();
    CHECK(token.use_count() <= 2);
    CHECK(f.executor.start_timer(std::chrono::milliseconds(0), [&ran] { ran = true; }) != 0);
    CHECK(f.loop.run_until([&] { return uv_loop_alive(f.loop.get()) == 0; }));
    CHECK(token.use_count() == 1);
    CHECK_FALSE(ran);
  }

  TEST_CASE("shutdown: work already in the pool still gets its after on the loop") {
    ExecutorFixture f;
    std::atomic<bool> work_ran{false};
    bool after_ran = false;
    f.executor.queue_work([&] { work_ran = true; }, [&] { after_ran = true; });
    f.executor.shutdown();
    CHECK(f.loop.run_until([&] { return after_ran; }));
    CHECK(work_ran.load());
  }

  // Executor::queue_work promises that `after` always runs, also while shutting down: a job
  // another thread queued before shutdown() is still submitted, not dropped with the posts.
  TEST_CASE("shutdown: a queue_work from another thread still gets its after") {
    ExecutorFixture f;
    bool after_ran = false;
    std::thread([&] { f.executor.queue_work([] {}, [&] { after_ran = true; }); }).join();
    f.executor.shutdown();
    CHECK(f.loop.run_until([&] { return after_ran; }, std::chrono::milliseconds(500)));
  }

  TEST_CASE("after shutdown: a queue_work from another thread runs both parts on that thread") {
    ExecutorFixture f;
    f.executor.shutdown();
    std::thread::id work_thread, after_thread, caller;
    std::thread([&] {
      caller = std::this_thread::get_id();
      f.executor.queue_work([&] { work_thread = std::this_thread::get_id(); },
                            [&] { after_thread = std::this_thread::get_id(); });
    }).join();
    CHECK(work_thread == caller);
    CHECK(after_thread == caller);
    CHECK(f.loop.run_until([&] { return uv_loop_alive(f.loop.get()) == 0; }));
  }
}
