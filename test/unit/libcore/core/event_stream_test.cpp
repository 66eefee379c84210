// StreamSubscriber, "snapshot, then stream" (event_stream.cpp) over a LoopbackSink: paused until
// resume, one batch in the sink at a time, the two overflow policies, stop, write failures, and
// the claimed passes producers run themselves.
#include <string>
#include <vector>

#include "../../test_support.hpp"
#include "car/event_stream.hpp"

using namespace car;
using namespace car::testing;

namespace {

struct Stream {
  explicit Stream(StreamSubscriber::Options options, std::uint64_t start = 0,
                  bool with_gap_notice = true)
      : sink(LoopbackSink::create(executor)), totals(std::make_shared<StreamTotals>()) {
    StreamSubscriber::GapNotice notice;
    if (with_gap_notice) {
      notice = [](const StreamGap& g) {
        return make_frame("gap " + std::to_string(g.from) + ".." + std::to_string(g.to) + " x" +
                          std::to_string(g.dropped));
      };
    }
    subscriber = std::make_shared<StreamSubscriber>(
        executor, sink, start, options, totals, std::move(notice),
        [this](StreamSubscriber&, SinkError why) {
          failures.push_back(why);
          failed_in_loop = executor.in_loop_thread();
        });
  }

  void push(std::uint64_t position) {
    subscriber->push({make_frame("e" + std::to_string(position)), position});
  }

  ManualExecutor executor;
  std::shared_ptr<LoopbackSink> sink;
  std::shared_ptr<StreamTotals> totals;
  std::shared_ptr<StreamSubscriber> subscriber;
  std::vector<SinkError> failures;
  bool failed_in_loop = false;
};

StreamSubscriber::Options with(std::size_t capacity, OverflowPolicy policy) {
  StreamSubscriber::Options options;
  options.capacity = capacity;
  options.overflow = policy;
  return options;
}

}  // namespace

TEST_SUITE("event_stream") {
  TEST_CASE("nothing is delivered before resume; then everything, in order") {
    Stream s(with(8, OverflowPolicy::drop_with_gap));
    s.push(1);
    s.push(2);
    s.executor.run_until_idle();
    CHECK(s.sink->written().empty());
    CHECK(s.subscriber->stats().queued == 2);
    s.subscriber->resume();
    s.subscriber->resume();  // idempotent
    s.push(3);
    s.executor.run_until_idle();
    CHECK(s.sink->written() == std::vector<std::string>{"e1", "e2", "e3"});
    auto stats = s.subscriber->stats();
    CHECK(stats.frames_written == 3);
    CHECK(stats.queued == 0);
    CHECK(stats.dropped == 0);
  }

  TEST_CASE("one batch in the sink at a time: the next waits for every completion") {
    Stream s(with(8, OverflowPolicy::drop_with_gap));
    s.subscriber->resume();
    s.sink->set_stalled(true);
    s.push(1);
    s.push(2);
    s.executor.run_until_idle();
    // The first pass handed over what was queued; the rest waits in the subscriber, not the sink.
    s.push(3);
    s.push(4);
    s.executor.run_until_idle();
    CHECK(s.sink->stats().queued_frames <= 2);
    CHECK(s.subscriber->stats().queued == 2);
    s.sink->set_stalled(false);
    s.executor.run_until_idle();
    CHECK(s.sink->written() == std::vector<std::string>{"e1", "e2", "e3", "e4"});
    CHECK(s.subscriber->stats().drain_passes == 2);
  }

  TEST_CASE("drop_with_gap: a full queue drops for this subscriber and reports one gap") {
    Stream s(with(2, OverflowPolicy::drop_with_gap), /*start=*/10);
    s.push(11);
    s.push(12);
    s.push(13);  // dropped
    s.push(15);  // dropped (positions need not be contiguous)
    s.subscriber->resume();
    s.executor.run_until_idle();
    s.push(16);
    s.executor.run_until_idle();
    CHECK(s.sink->written() ==
          std::vector<std::string>{"e11", "e12", "gap 12..15 x2", "e16"});
    CHECK(s.subscriber->stats().dropped == 2);
    CHECK(s.totals->events_dropped.load() == 2);
    CHECK(s.totals->gaps_sent.load() == 1);
    CHECK(s.sink->is_open());
    CHECK(s.failures.empty());
  }

  TEST_CASE("disconnect: a full queue stops the stream and aborts the sink from the loop") {
    Stream s(with(2, OverflowPolicy::disconnect));
    s.push(1);
    s.push(2);
    s.push(3);  // overflow
    CHECK(s.subscriber->stopped());
    CHECK(s.sink->is_open());  // not inside the producer's call
    s.executor.run_until_idle();
    CHECK_FALSE(s.sink->is_open());
    REQUIRE(s.sink->transport_end().has_value());
    CHECK(s.sink->transport_end()->error == SinkError::full);
    CHECK(s.failures == std::vector<SinkError>{SinkError::full});
    CHECK(s.failed_in_loop);
    CHECK(s.totals->overflow_disconnects.load() == 1);
    s.subscriber->resume();
    s.executor.run_until_idle();
    CHECK(s.sink->written().empty());
  }

  TEST_CASE("drop_with_gap without a gap notice behaves as disconnect") {
    Stream s(with(1, OverflowPolicy::drop_with_gap), 0, /*with_gap_notice=*/false);
    s.push(1);
    s.push(2);
    s.executor.run_until_idle();
    CHECK(s.subscriber->stopped());
    CHECK_FALSE(s.sink->is_open());
  }

  TEST_CASE("stop frees the queue; nothing more is delivered") {
    Stream s(with(8, OverflowPolicy::drop_with_gap));
    s.push(1);
    s.push(2);
    s.subscriber->stop();
    s.subscriber->stop();  // idempotent
    CHECK(s.subscriber->stats().queued == 0);
    s.subscriber->resume();
    s.push(3);
    s.executor.run_until_idle();
    CHECK(s.sink->written().empty());
    CHECK(s.failures.empty());
  }

  TEST_CASE("ended() (the broadcaster dropped it) stops it like stop()") {
    Stream s(with(8, OverflowPolicy::disconnect));
    EventSubscriber& as_broadcast_target = *s.subscriber;
    as_broadcast_target.ended();
    CHECK(s.subscriber->stopped());
    CHECK(s.sink->is_open());
  }

  TEST_CASE("a failed write ends the subscription and reports it once") {
    Stream s(with(8, OverflowPolicy::drop_with_gap));
    s.subscriber->resume();
    s.sink->fail_next_write();
    s.push(1);
    s.push(2);
    s.executor.run_until_idle();
    CHECK(s.subscriber->stopped());
    REQUIRE(s.failures.size() == 1);
    CHECK(s.failures[0] == SinkError::io_error);
    s.push(3);
    s.executor.run_until_idle();
    CHECK(s.failures.size() == 1);
  }

  TEST_CASE("a closed sink ends delivery without a failure report") {
    Stream s(with(8, OverflowPolicy::drop_with_gap));
    s.subscriber->resume();
    s.sink->simulate_peer_closed();
    s.executor.run_until_idle();
    s.push(1);
    s.executor.run_until_idle();
    CHECK(s.sink->written().empty());
    CHECK(s.failures.empty());
  }

  TEST_CASE("a subscriber no longer holds a sink that went away") {
    Stream s(with(8, OverflowPolicy::drop_with_gap));
    std::weak_ptr<LoopbackSink> weak = s.sink;
    s.subscriber->resume();
    s.sink.reset();
    CHECK(weak.expired());
    s.push(1);
    s.executor.run_until_idle();
    CHECK(s.failures.empty());
  }

  TEST_CASE("push_claiming hands the pass to the producer instead of scheduling it") {
    Stream s(with(8, OverflowPolicy::drop_with_gap));
    s.executor.set_auto_pool(false);
    s.subscriber->resume();
    CHECK(s.subscriber->push_claiming({make_frame("e1"), 1}));
    // Already claimed: the next push rides the same pass.
    CHECK_FALSE(s.subscriber->push_claiming({make_frame("e2"), 2}));
    CHECK(s.executor.pending_pool_jobs() == 0);
    s.subscriber->drain_claimed();
    s.executor.run_until_idle();
    CHECK(s.sink->written() == std::vector<std::string>{"e1", "e2"});
    CHECK(s.totals->drain_hops.load() == 0);
  }

  TEST_CASE("disconnect: once caught up, each event goes straight to the sink") {
    SinkLimits small;
    small.max_frames = 3;
    Stream s(with(8, OverflowPolicy::disconnect));
    s.sink = LoopbackSink::create(s.executor, small);
    s.subscriber = std::make_shared<StreamSubscriber>(s.executor, s.sink, 0,
                                                      with(8, OverflowPolicy::disconnect),
                                                      s.totals, nullptr, nullptr);
    s.subscriber->send_text(make_frame("a"));  // paused: queued
    s.subscriber->resume();
    s.executor.run_until_idle();
    CHECK(s.sink->written() == std::vector<std::string>{"a"});
    // Live: handed to the sink inside the call, no pass, no hop.
    s.sink->set_stalled(true);
    auto passes = s.totals->drain_passes.load();
    s.subscriber->send_text(make_frame("b"));
    CHECK(s.sink->stats().queued_frames == 1);
    s.subscriber->send_text(make_frame("c"));
    s.subscriber->send_text(make_frame("d"));
    CHECK(s.totals->drain_passes.load() == passes);
    CHECK_FALSE(s.subscriber->stopped());
    // The sink's own bound is the limit: the refused event cuts the peer off.
    s.subscriber->send_text(make_frame("e"));
    CHECK(s.subscriber->stopped());
    s.executor.run_until_idle();
    CHECK_FALSE(s.sink->is_open());
    REQUIRE(s.sink->transport_end().has_value());
    CHECK(s.sink->transport_end()->error == SinkError::full);
    CHECK(s.totals->overflow_disconnects.load() == 1);
  }

  TEST_CASE("disconnect: events that arrive during the catch-up follow the queued ones") {
    Stream s(with(64, OverflowPolicy::disconnect));
    s.executor.set_auto_pool(false);
    for (int i = 1; i <= 3; ++i) s.subscriber->send_text(make_frame("q" + std::to_string(i)));
    s.subscriber->resume();  // the catch-up pass is a pool job, held
    s.subscriber->send_text(make_frame("late"));
    CHECK(s.subscriber->stats().queued == 4);
    s.executor.run_pool_jobs();
    s.executor.run_until_idle();
    s.subscriber->send_text(make_frame("live"));
    s.executor.run_until_idle();
    CHECK(s.sink->written() == std::vector<std::string>{"q1", "q2", "q3", "late", "live"});
  }

  TEST_CASE("DrainThread::loop schedules passes on the loop, never the pool") {
    auto options = with(8, OverflowPolicy::drop_with_gap);
    options.drain_thread = DrainThread::loop;
    Stream s(options);
    s.executor.set_auto_pool(false);
    s.subscriber->resume();
    s.push(1);
    CHECK(s.executor.pending_pool_jobs() == 0);
    s.executor.run_until_idle();
    CHECK(s.sink->written() == std::vector<std::string>{"e1"});
  }
}
