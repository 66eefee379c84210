// HostState without a server (PROTOCOL.md §4): shapes, ownership, the event ring, and the broadcast —
// serialize once, order, stalled subscribers, subscribe atomicity under concurrent recording.
#include <atomic>
#include <set>
#include <thread>

#include "car/event_stream.hpp"
#include "car/host/host_state.hpp"
#include "host_test_support.hpp"

using namespace car;
using namespace car::host;
using namespace car::test;
using namespace std::chrono_literals;

namespace {

// Records every frame pointer it is offered. Thread-safe.
struct RecordingSubscriber : EventSubscriber {
  void send_text(Frame frame) override {
    std::lock_guard lock(mutex);
    frames.push_back(std::move(frame));
  }
  void ended() override { ended_calls.fetch_add(1); }
  std::vector<Frame> snapshot() const {
    std::lock_guard lock(mutex);
    return frames;
  }
  std::vector<std::uint64_t> sequences() const {
    std::vector<std::uint64_t> out;
    for (const auto& f : snapshot()) {
      auto doc = parse_json(*f);
      out.push_back(doc["params"]["sequence"].GetUint64());
    }
    return out;
  }
  mutable std::mutex mutex;
  std::vector<Frame> frames;
  std::atomic<int> ended_calls{0};
};

// The sequence numbers of the host.event frames a sink wrote, in order.
std::vector<std::uint64_t> written_sequences(const LoopbackSink& sink) {
  std::vector<std::uint64_t> out;
  for (const auto& text : sink.written()) out.push_back(parse_json(text)["params"]["sequence"].GetUint64());
  return out;
}

// What host.subscribe registers: a paused StreamSubscriber that disconnects when full.
std::shared_ptr<StreamSubscriber> stream_over(Executor& executor,
                                              const std::shared_ptr<LoopbackSink>& sink,
                                              std::size_t capacity) {
  StreamSubscriber::Options options;
  options.capacity = capacity;
  options.drain_thread = DrainThread::loop;
  options.overflow = OverflowPolicy::disconnect;
  return std::make_shared<StreamSubscriber>(executor, sink, 0, options, nullptr, nullptr, nullptr);
}

// A fixed wall clock the test moves by hand.
struct TestClock {
  WallClock clock() {
    return [this] { return WallTime(std::chrono::milliseconds(now_ms.load())); };
  }
  std::atomic<long long> now_ms{1795514400123};  // 2026-11-24T10:00:00.123Z
};

// A liveness table the test edits.
struct Liveness {
  std::function<bool(std::string_view)> fn() {
    return [this](std::string_view id) {
      std::lock_guard lock(mutex);
      return live.count(std::string(id)) != 0;
    };
  }
  void set(const std::string& id, bool on) {
    std::lock_guard lock(mutex);
    if (on) {
      live.insert(id);
    } else {
      live.erase(id);
    }
  }
  std::mutex mutex;
  std::set<std::string> live;
};

AgentSpec agent_spec(std::string id, std::string name = "Bot") {
  AgentSpec spec;
  spec.id = std::move(id);
  spec.name = std::move(name);
  spec.kind = "cli";
  return spec;
}

EventSpec note(std::string message) {
  return {"host.notification", std::nullopt, std::move(message), "{}"};
}

}  // namespace

TEST_SUITE("host_state") {
  TEST_CASE("timestamps are RFC 3339 UTC with milliseconds") {
    CHECK(format_rfc3339_ms(WallTime(std::chrono::milliseconds(1795514400123))) ==
          "2026-11-24T10:00:00.123Z");
    CHECK(format_rfc3339_ms(WallTime(std::chrono::milliseconds(0))) ==
          "1970-01-01T00:00:00.000Z");
    CHECK(format_rfc3339_ms(WallTime(std::chrono::milliseconds(-1))) ==
          "1969-12-31T23:59:59.999Z");
    CHECK(format_rfc3339_ms(WallTime(std::chrono::microseconds(951782400999999))) ==
          "2000-02-29T00:00:00.999Z");
    auto now = format_rfc3339_ms(std::chrono::system_clock::now());
    CHECK(now.size() == 24);
    CHECK(now.back() == 'Z');
  }

  TEST_CASE("agents: shape, fresh ids, unset fields omitted or null, events carry the item") {
    TestClock clock;
    HostStateOptions options;
    options.clock = clock.clock();
    HostState state(options);
    AgentSpec spec;
    spec.name = "Builder";
    spec.kind = "cli";
    auto a = state.register_agent("client-a", spec);
    REQUIRE(a.ok());
    CHECK(a->id.rfind("agent-", 0) == 0);
    CHECK(a->id.size() == 6 + 36);
    CHECK(a->status == AgentStatus::idle);
    auto doc = parse_json(to_json(a.value()));
    CHECK(str(doc["name"]) == "Builder");
    CHECK(str(doc["status"]) == "idle");
    CHECK(str(doc["session_id"]) == "client-a");
    CHECK(doc["capabilities"].IsArray());
    CHECK(doc["metadata"].IsObject());
    for (const char* absent : {"project", "display"}) {
      CAPTURE(absent);
      CHECK_FALSE(doc.HasMember(absent));
    }
    // As upstream serializes them: always present, null when unset (PROTOCOL.md §4).
    for (const char* null_field : {"current_task", "pid"}) {
      CAPTURE(null_field);
      REQUIRE(doc.HasMember(null_field));
      CHECK(doc[null_field].IsNull());
    }
    auto events = state.events(10);
    REQUIRE(events.size() == 1);
    auto ev = parse_json(std::string(events[0].event_json()));
    CHECK(str(ev["kind"]) == "agent.registered");
    CHECK(str(ev["agent_id"]) == a->id);
    CHECK(ev["sequence"].GetUint64() == 1);
    CHECK(str(ev["timestamp"]) == "2026-11-24T10:00:00.123Z");
    CHECK(str(ev["id"]).rfind("event-", 0) == 0);
    CHECK(str(ev["payload"]["id"]) == a->id);
    CHECK(ev["payload"]["current_task"].IsNull());
    // The frame is the complete notification.
    auto frame = parse_json(*events[0].frame);
    CHECK(str(frame["method"]) == "host.event");
    CHECK(str(frame["jsonrpc"]) == "2.0");
  }

  TEST_CASE("ownership: only the owner mutates; a gone owner's item is adopted") {
    Liveness live;
    live.set("A", true);
    live.set("B", true);
    HostStateOptions options;
    options.is_live = live.fn();
    HostState state(options);
    REQUIRE(state.register_agent("A", agent_spec("X")).ok());

    auto steal = state.register_agent("B", agent_spec("X", "Thief"));
    REQUIRE_FALSE(steal.ok());
    CHECK(steal.error().code == -32603);
    CHECK(steal.error().message == "agent 'X' is owned by another session");
    StatusChange change;
    change.agent_id = "X";
    change.status = AgentStatus::running;
    auto by_b = state.set_status("B", change);
    REQUIRE_FALSE(by_b.ok());
    CHECK(by_b.error().message == "agent 'X' is owned by another session");
    auto unreg = state.unregister_agent("B", "X");
    REQUIRE(unreg.has_value());
    CHECK(unreg->message == "agent 'X' is owned by another session");
    CHECK(state.unregister_agent("A", "nope")->message == "unknown agent 'nope'");
    CHECK(state.agent("X")->name == "Bot");

    // Re-registering one's own agent updates it and keeps its status.
    REQUIRE(state.set_status("A", change).ok());
    auto again = state.register_agent("A", agent_spec("X", "Bot 2"));
    REQUIRE(again.ok());
    CHECK(again->name == "Bot 2");
    CHECK(again->status == AgentStatus::running);

    // The owner goes away: the item stays, B still cannot mutate it, but registering adopts it.
    live.set("A", false);
    CHECK(state.agent("X").has_value());
    CHECK_FALSE(state.set_status("B", change).ok());
    auto adopted = state.register_agent("B", agent_spec("X", "Adopted"));
    REQUIRE(adopted.ok());
    CHECK(adopted->session_id == "B");
    CHECK(state.set_status("B", change).ok());
    CHECK_FALSE(state.set_status("A", change).ok());
    CHECK_FALSE(state.unregister_agent("B", "X").has_value());
    CHECK_FALSE(state.agent("X").has_value());
    auto last = parse_json(std::string(state.events(1)[0].event_json()));
    CHECK(str(last["kind"]) == "agent.unregistered");
  }

  TEST_CASE("devices: register, owner-only update, adoption, updated_at") {
    Liveness live;
    live.set("A", true);
    live.set("B", true);
    TestClock clock;
    HostStateOptions options;
    options.is_live = live.fn();
    options.clock = clock.clock();
    HostState state(options);
    DeviceSpec spec;
    spec.name = "Phone";
    spec.platform = "ios";
    auto d = state.register_device("A", spec);
    REQUIRE(d.ok());
    CHECK(d->id.rfind("device-", 0) == 0);
    CHECK(d->updated_at == "2026-11-24T10:00:00.123Z");
    auto doc = parse_json(to_json(d.value()));
    REQUIRE(doc.HasMember("status"));  // always present, null when unset (PROTOCOL.md §4)
    CHECK(doc["status"].IsNull());

    DeviceUpdate update;
    update.device_id = d->id;
    update.status = "online";
    auto by_b = state.update_device("B", update);
    REQUIRE_FALSE(by_b.ok());
    CHECK(by_b.error().message == "device '" + d->id + "' is owned by another session");
    update.device_id = "nope";
    CHECK(state.update_device("A", update).error().message == "unknown device 'nope'");
    update.device_id = d->id;
    clock.now_ms += 1500;
    auto updated = state.update_device("A", update);
    REQUIRE(updated.ok());
    CHECK(updated->status == "online");
    CHECK(updated->name == "Phone");
    CHECK(updated->updated_at == "2026-11-24T10:00:01.623Z");
    spec.id = d->id;
    CHECK_FALSE(state.register_device("B", spec).ok());
    live.set("A", false);
    CHECK(state.register_device("B", spec).ok());
    auto kinds = std::vector<std::string>{};
    for (auto& e : state.events(10)) {
      kinds.push_back(str(parse_json(std::string(e.event_json()))["kind"]));
    }
    CHECK(kinds == std::vector<std::string>{"device.registered", "device.updated",
                                            "device.registered"});
    // Device events name no agent: agent_id is null, not omitted.
    auto ev = parse_json(std::string(state.events(1)[0].event_json()));
    REQUIRE(ev.HasMember("agent_id"));
    CHECK(ev["agent_id"].IsNull());
    // Re-registering without a status cleared it: null in the event's device too.
    CHECK(ev["payload"]["status"].IsNull());
  }

  TEST_CASE("events: agent_id is null when unset and kept when given") {
    HostState state;
    auto plain = parse_json(std::string(state.record(note("n"))->event_json()));
    REQUIRE(plain.HasMember("agent_id"));
    CHECK(plain["agent_id"].IsNull());
    auto named = parse_json(std::string(
        state.record({"host.notification", std::string("X"), "m", "{}"})->event_json()));
    CHECK(str(named["agent_id"]) == "X");
    // Keys in the order of PROTOCOL.md §4.1.
    std::vector<std::string> keys;
    for (const auto& m : plain.GetObject()) keys.emplace_back(json::view(m.name));
    CHECK(keys == std::vector<std::string>{"id", "sequence", "timestamp", "kind", "agent_id",
                                           "message", "payload"});
  }

  TEST_CASE("set_status: the caller's message and payload verbatim, else a line and the agent") {
    HostState state;
    REQUIRE(state.register_agent("A", agent_spec("X")).ok());
    StatusChange change;
    change.agent_id = "X";
    change.status = AgentStatus::running;
    change.current_task = "build";
    change.message = "m";
    change.payload_json = R"({"k":1})";
    auto changed = state.set_status("A", change);
    REQUIRE(changed.ok());
    CHECK(changed->current_task == "build");
    auto ev = parse_json(std::string(state.events(1)[0].event_json()));
    CHECK(str(ev["kind"]) == "agent.status_changed");
    CHECK(str(ev["message"]) == "m");
    CHECK(json::stringify(ev["payload"]) == R"({"k":1})");  // not nested, no agent fields

    // Any JSON value is passed through as it came.
    for (const char* payload : {R"("text")", "[1,2]", "7", "{}"}) {
      CAPTURE(payload);
      change.payload_json = payload;
      REQUIRE(state.set_status("A", change).ok());
      auto e = parse_json(std::string(state.events(1)[0].event_json()));
      CHECK(json::stringify(e["payload"]) == payload);
    }

    // Neither given: a generated line and the agent after the change [ext].
    change.message.reset();
    change.payload_json.reset();
    change.current_task.reset();
    change.status = AgentStatus::paused;
    REQUIRE(state.set_status("A", change).ok());
    auto plain = parse_json(std::string(state.events(1)[0].event_json()));
    CHECK(str(plain["message"]) == "agent 'X' is paused");
    CHECK(str(plain["payload"]["id"]) == "X");
    CHECK(str(plain["payload"]["status"]) == "paused");
    CHECK(plain["payload"]["current_task"].IsNull());
    CHECK_FALSE(plain["payload"].HasMember("details"));
  }

  TEST_CASE("the ring keeps the last 500 events with consecutive sequences") {
    HostState state;
    for (int i = 1; i <= 501; ++i) state.record(note("n" + std::to_string(i)));
    CHECK(state.last_sequence() == 501);
    auto all = state.events(1000);
    REQUIRE(all.size() == 500);
    CHECK(all.front().sequence == 2);
    CHECK(all.back().sequence == 501);
    for (std::size_t i = 1; i < all.size(); ++i) CHECK(all[i].sequence == all[i - 1].sequence + 1);
    auto first = parse_json(std::string(all.front().event_json()));
    CHECK(str(first["message"]) == "n2");
    auto text = parse_json(state.events_json(3));
    REQUIRE(text.Size() == 3);
    CHECK(text[0]["sequence"].GetUint64() == 499);
    CHECK(text[2]["sequence"].GetUint64() == 501);
    CHECK(parse_json(state.events_json(0)).Size() == 0);
  }

  TEST_CASE("a broadcast serializes once: every subscriber gets the same frame object") {
    HostState state;
    auto a = std::make_shared<RecordingSubscriber>();
    auto b = std::make_shared<RecordingSubscriber>();
    state.subscribe("a", a);
    state.subscribe("b", b);
    auto record = state.record(note("hello")).value();
    REQUIRE(a->snapshot().size() == 1);
    REQUIRE(b->snapshot().size() == 1);
    CHECK(a->snapshot()[0].get() == b->snapshot()[0].get());
    CHECK(a->snapshot()[0].get() == record.frame.get());
    CHECK(state.events(1)[0].frame.get() == record.frame.get());
  }

  TEST_CASE("a stalled subscriber delays nobody and is disconnected when its sink overflows") {
    ManualExecutor executor;
    SinkLimits small;
    small.max_frames = 4;
    auto stalled = LoopbackSink::create(executor, small);
    auto healthy = LoopbackSink::create(executor);
    stalled->set_stalled(true);
    HostState state;
    auto stalled_stream = stream_over(executor, stalled, 64);
    auto healthy_stream = stream_over(executor, healthy, 64);
    state.subscribe("stalled", stalled_stream);
    state.subscribe("healthy", healthy_stream);
    stalled_stream->resume();
    healthy_stream->resume();
    executor.run_until_idle();  // both caught up: live
    auto spy = std::make_shared<RecordingSubscriber>();
    state.subscribe("spy", spy);
    for (int i = 0; i < 20; ++i) {
      state.record(note(std::to_string(i)));
      // The recorder returned and the healthy subscriber already has the event queued.
      CHECK(spy->snapshot().size() == static_cast<std::size_t>(i + 1));
    }
    executor.run_until_idle();
    CHECK(written_sequences(*healthy) == [] {
      std::vector<std::uint64_t> all;
      for (std::uint64_t i = 1; i <= 20; ++i) all.push_back(i);
      return all;
    }());
    CHECK(healthy->is_open());
    // The stalled sink refused once full: the peer was disconnected, not silently skipped.
    CHECK_FALSE(stalled->is_open());
    REQUIRE(stalled->transport_end().has_value());
    CHECK(stalled->transport_end()->error == SinkError::full);
    CHECK(stalled_stream->stopped());
    CHECK(stalled_stream->stats().dropped >= 1);
  }

  TEST_CASE("a subscriber that throws does not stop the broadcast") {
    struct Throwing : EventSubscriber {
      void send_text(Frame) override { throw std::runtime_error("nope"); }
    };
    HostState state;
    state.subscribe("bad", std::make_shared<Throwing>());
    auto good = std::make_shared<RecordingSubscriber>();
    state.subscribe("good", good);
    state.record(note("1"));
    state.record(note("2"));
    CHECK(good->sequences() == std::vector<std::uint64_t>{1, 2});
  }

  TEST_CASE("subscribe: snapshot, then held events flushed in order on resume") {
    ManualExecutor executor;
    auto sink = LoopbackSink::create(executor);
    HostState state;
    REQUIRE(state.register_agent("A", agent_spec("X")).ok());
    for (int i = 0; i < 150; ++i) state.record(note(std::to_string(i)));
    auto sub = stream_over(executor, sink, 64);
    auto s = state.subscribe("h", sub);
    CHECK(s.event_sequence == 151);
    auto snap = parse_json(s.snapshot_json);
    CHECK(snap["subscribed"].GetBool());
    CHECK(snap["agents"].Size() == 1);
    CHECK(snap["devices"].Size() == 0);
    CHECK(snap["approvals"].Size() == 0);
    REQUIRE(snap["events"].Size() == 100);
    CHECK(snap["events"][99]["sequence"].GetUint64() == 151);
    CHECK(snap["event_sequence"].GetUint64() == 151);
    // Before resume nothing is sent; events are held in order.
    state.record(note("held 1"));
    state.record(note("held 2"));
    executor.run_until_idle();
    CHECK(sink->written().empty());
    CHECK(sub->stats().queued == 2);
    sub->resume();
    sub->resume();  // idempotent
    executor.run_until_idle();
    state.record(note("live"));
    executor.run_until_idle();
    CHECK(written_sequences(*sink) == std::vector<std::uint64_t>{152, 153, 154});
    // Unsubscribe stops delivery (and the subscriber: ended()); it is idempotent.
    CHECK(state.unsubscribe("h"));
    CHECK_FALSE(state.unsubscribe("h"));
    CHECK(sub->stopped());
    state.record(note("after"));
    executor.run_until_idle();
    CHECK(sink->written().size() == 3);
    CHECK(state.subscriber_count() == 0);
  }

  TEST_CASE("re-subscribing replaces the previous subscription; a paused one overflows") {
    HostState state;
    auto first = std::make_shared<RecordingSubscriber>();
    auto second = std::make_shared<RecordingSubscriber>();
    state.subscribe("h", first);
    state.record(note("1"));
    state.subscribe("h", second);
    CHECK(first->ended_calls.load() == 1);  // told it was replaced
    state.record(note("2"));
    CHECK(first->sequences() == std::vector<std::uint64_t>{1});
    CHECK(second->sequences() == std::vector<std::uint64_t>{2});
    CHECK(second->ended_calls.load() == 0);
    CHECK(state.subscriber_count() == 1);

    // More events than its queue holds arrive before the reply is out: the connection closes.
    ManualExecutor executor;
    auto sink = LoopbackSink::create(executor);
    auto slow = stream_over(executor, sink, 3);
    state.subscribe("slow", slow);
    for (int i = 0; i < 4; ++i) state.record(note("x"));
    CHECK(slow->stopped());
    executor.run_until_idle();
    CHECK_FALSE(sink->is_open());
    REQUIRE(sink->transport_end().has_value());
    CHECK(sink->transport_end()->error == SinkError::full);
    slow->resume();
    executor.run_until_idle();
    CHECK(sink->written().empty());
  }

  TEST_CASE("subscribe is atomic with concurrent recording; every subscriber sees order") {
    HostState state;
    constexpr int threads = 4;
    constexpr int per_thread = 300;
    constexpr int subscribers = 6;
    std::atomic<bool> go{false};
    std::vector<std::thread> recorders;
    for (int t = 0; t < threads; ++t) {
      recorders.emplace_back([&, t] {
        while (!go.load()) std::this_thread::yield();
        for (int i = 0; i < per_thread; ++i) state.record(note(std::to_string(t)));
      });
    }
    std::vector<std::shared_ptr<RecordingSubscriber>> subs;
    std::vector<Subscription> snapshots;
    std::thread subscriber_thread([&] {
      while (!go.load()) std::this_thread::yield();
      for (int i = 0; i < subscribers; ++i) {
        auto sub = std::make_shared<RecordingSubscriber>();
        auto s = state.subscribe("s" + std::to_string(i), sub);
        std::this_thread::yield();
        subs.push_back(sub);
        snapshots.push_back(std::move(s));
      }
    });
    go.store(true);
    for (auto& r : recorders) r.join();
    subscriber_thread.join();
    const std::uint64_t total = threads * per_thread;
    CHECK(state.last_sequence() == total);
    for (std::size_t i = 0; i < subs.size(); ++i) {
      CAPTURE(i);
      auto seqs = subs[i]->sequences();
      std::uint64_t from = snapshots[i].event_sequence;
      // Exactly the events after the snapshot: none lost, none duplicated, in order.
      REQUIRE(seqs.size() == total - from);
      for (std::size_t k = 0; k < seqs.size(); ++k) CHECK(seqs[k] == from + 1 + k);
      auto snap = parse_json(snapshots[i].snapshot_json);
      if (from > 0) {
        const auto& ev = snap["events"];
        REQUIRE(ev.Size() > 0);
        CHECK(ev[ev.Size() - 1]["sequence"].GetUint64() == from);
      }
    }
  }
}
