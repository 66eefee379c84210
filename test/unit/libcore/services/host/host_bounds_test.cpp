// HostState's bounds (PROTOCOL.md §4, §5, §8; issue 13): the size of one event, the ring and a
// subscribe snapshot by bytes, pending approvals per session and in total, gate rows nobody
// waits for, and agents and devices of departed sessions. Small bounds keep the tests fast; the
// defaults are checked once.
#include <set>

#include "car/host/host_state.hpp"
#include "host_test_support.hpp"

using namespace car;
using namespace car::host;
using namespace car::test;

namespace {

struct Bounded {
  explicit Bounded(HostStateOptions options = {}) {
    options.is_live = [this](std::string_view id) { return live.count(std::string(id)) != 0; };
    state = std::make_unique<HostState>(std::move(options));
  }
  std::set<std::string> live = {"A", "B"};
  std::unique_ptr<HostState> state;
};

EventSpec note_with(std::size_t payload_bytes) {
  return {"host.notification", std::nullopt, "m",
          R"({"x":")" + std::string(payload_bytes, 'y') + R"("})"};
}

AgentSpec agent(std::string id, std::string metadata_json = "{}") {
  AgentSpec spec;
  spec.id = std::move(id);
  spec.name = "bot";
  spec.kind = "cli";
  spec.metadata_json = std::move(metadata_json);
  return spec;
}

DeviceSpec device(std::string id) {
  DeviceSpec spec;
  spec.id = std::move(id);
  spec.name = "phone";
  spec.platform = "ios";
  return spec;
}

ApprovalSpec owned(std::string owner, std::string details = "{}") {
  ApprovalSpec spec;
  spec.owner = std::move(owner);
  spec.action = "deploy";
  spec.details_json = std::move(details);
  return spec;
}

ApprovalSpec gate_row(std::string caller) {
  ApprovalSpec spec;
  spec.action = "ws.method:tools.list";
  spec.requested_by = std::move(caller);
  return spec;
}

std::size_t pending_count(const HostState& state) {
  std::size_t n = 0;
  for (const auto& a : state.approvals()) n += a.pending() ? 1 : 0;
  return n;
}

}  // namespace

TEST_SUITE("host_bounds") {
  TEST_CASE("the defaults") {
    HostStateOptions o;
    CHECK(o.max_event_bytes == 65536);
    CHECK(o.event_ring_bytes == 4u * 1024 * 1024);
    CHECK(o.subscribe_backlog_bytes == 2u * 1024 * 1024);
    CHECK(o.max_pending_per_session == 256);
    CHECK(o.max_pending_approvals == 4096);
    CHECK(o.max_orphan_approvals == 256);
    CHECK(o.max_agents == 1024);
    CHECK(o.max_devices == 1024);
  }

  TEST_CASE("an event past 64 KiB is refused -32602 and records nothing") {
    Bounded b;
    REQUIRE(b.state->record(note_with(60 * 1024)).ok());
    auto seq = b.state->last_sequence();
    auto big = b.state->record(note_with(64 * 1024));
    REQUIRE_FALSE(big.ok());
    CHECK(big.error().code == -32602);
    CHECK(big.error().message.rfind("invalid params: host event too large: ", 0) == 0);
    CHECK(b.state->last_sequence() == seq);
    // An 8 MiB payload is refused without being serialized again.
    CHECK_FALSE(b.state->record(note_with(8 * 1024 * 1024)).ok());
  }

  TEST_CASE("agents, statuses, devices and approvals whose event is too large change nothing") {
    HostStateOptions options;
    options.max_event_bytes = 2048;
    Bounded b(options);
    std::string big = R"({"k":")" + std::string(1950, 'x') + R"("})";
    auto r = b.state->register_agent("A", agent("X", big));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == -32602);
    CHECK_FALSE(b.state->agent("X").has_value());
    REQUIRE(b.state->register_agent("A", agent("X")).ok());
    // Re-registration too large: the agent keeps its previous declaration.
    CHECK_FALSE(b.state->register_agent("A", agent("X", big)).ok());
    CHECK(b.state->agent("X")->metadata_json == "{}");

    StatusChange change;
    change.agent_id = "X";
    change.status = AgentStatus::running;
    change.payload_json = big;
    CHECK_FALSE(b.state->set_status("A", change).ok());
    change.payload_json.reset();
    change.current_task = std::string(1800, 't');  // the agent it leaves behind is too large
    CHECK_FALSE(b.state->set_status("A", change).ok());
    CHECK(b.state->agent("X")->status == AgentStatus::idle);
    CHECK_FALSE(b.state->agent("X")->current_task.has_value());

    auto dev = device("D");
    dev.metadata_json = big;
    CHECK_FALSE(b.state->register_device("A", dev).ok());
    REQUIRE(b.state->register_device("A", device("D")).ok());
    DeviceUpdate update;
    update.device_id = "D";
    update.metadata_json = big;
    CHECK_FALSE(b.state->update_device("A", update).ok());
    CHECK(b.state->devices()[0].metadata_json == "{}");

    CHECK_FALSE(b.state->create_approval(owned("A", big)).ok());
    auto row = b.state->create_approval(owned("A"));
    REQUIRE(row.ok());
    auto resolved =
        b.state->resolve_approval(row->approval.id, Decision::deny, "A", std::string(1900, 'n'));
    REQUIRE_FALSE(resolved.ok());
    CHECK(resolved.error().code == -32602);
    CHECK(b.state->approval(row->approval.id)->pending());
    CHECK(b.state->approvals().size() == 1);
  }

  TEST_CASE("the ring is bounded by bytes; a snapshot carries the newest events that fit") {
    HostStateOptions options;
    options.event_ring_bytes = 100 * 1024;
    options.subscribe_backlog_bytes = 30 * 1024;
    Bounded b(options);
    for (int i = 0; i < 50; ++i) REQUIRE(b.state->record(note_with(10 * 1024)).ok());
    auto ring = b.state->events(500);
    CHECK(ring.size() < 10);
    CHECK(ring.size() >= 9);
    std::size_t bytes = 0;
    for (const auto& e : ring) bytes += e.frame->size();
    CHECK(bytes <= 100 * 1024);
    CHECK(ring.back().sequence == 50);

    struct Null : EventSubscriber {
      void send_text(Frame) override {}
      void ended() override {}
    };
    auto sub = b.state->subscribe("A", std::make_shared<Null>());
    auto snap = parse_json(sub.snapshot_json);
    const auto& events = snap["events"];
    REQUIRE(events.Size() == 2);  // 3 × 10 KiB events are past 30 KiB
    CHECK(events[1]["sequence"].GetUint64() == 50);
    CHECK(events[0]["sequence"].GetUint64() == 49);
    CHECK(sub.event_sequence == 50);
  }

  TEST_CASE("pending approvals: at most N per session and M in total, -32000 beyond") {
    HostStateOptions options;
    options.max_pending_per_session = 3;
    options.max_pending_approvals = 5;
    Bounded b(options);
    b.live.insert("C");
    std::vector<std::string> mine;
    for (int i = 0; i < 3; ++i) mine.push_back(b.state->create_approval(owned("A")).value().approval.id);
    auto over = b.state->create_approval(owned("A"));
    REQUIRE_FALSE(over.ok());
    CHECK(over.error().code == -32000);
    CHECK(over.error().message == "too many pending approvals: a session may have at most 3");
    // The gate's rows count against the session that raised them while it waits.
    auto gate_over = b.state->create_approval(gate_row("A"), [](const HostApproval&) {});
    CHECK_FALSE(gate_over.ok());
    REQUIRE(b.state->create_approval(owned("B")).ok());
    auto waited = b.state->create_approval(gate_row("B"), [](const HostApproval&) {});
    REQUIRE(waited.ok());
    auto total = b.state->create_approval(owned("C"));
    REQUIRE_FALSE(total.ok());
    CHECK(total.error().message == "too many pending approvals: at most 5 in total");
    CHECK(pending_count(*b.state) == 5);
    // A resolution frees its slot.
    REQUIRE(b.state->resolve_approval(mine[0], Decision::approve, "A").ok());
    CHECK(b.state->create_approval(owned("A")).ok());
    CHECK_FALSE(b.state->create_approval(owned("C")).ok());
    // So does the gate's wait ending (the row stays pending, as an orphan).
    b.state->forget_waiter(waited->approval.id, waited->waiter_id);
    CHECK(b.state->approval(waited->approval.id)->pending());
    CHECK(b.state->create_approval(owned("C")).ok());
    // And the reaping of a departed owner's rows.
    b.live.erase("A");
    CHECK(b.state->reap_approvals_of("A").size() == 3);
    CHECK(b.state->create_approval(owned("C")).ok());
  }

  TEST_CASE("gate rows nobody waits for: the newest N stay pending, older ones are denied") {
    HostStateOptions options;
    options.max_orphan_approvals = 4;
    options.max_pending_approvals = 100;
    Bounded b(options);
    std::vector<HostState::Created> rows;
    for (int i = 0; i < 10; ++i) {
      rows.push_back(b.state->create_approval(gate_row("A"), [](const HostApproval&) {}).value());
    }
    // Still waited for: nothing is touched.
    CHECK(pending_count(*b.state) == 10);
    // A host resolves one orphan itself: it leaves the orphan count.
    b.state->forget_waiter(rows[0].approval.id, rows[0].waiter_id);
    REQUIRE(b.state->resolve_approval(rows[0].approval.id, Decision::approve, "B").ok());
    for (std::size_t i = 1; i < rows.size(); ++i) {
      b.state->forget_waiter(rows[i].approval.id, rows[i].waiter_id);
    }
    CHECK(pending_count(*b.state) == 4);
    for (std::size_t i = 1; i < rows.size(); ++i) {
      CAPTURE(i);
      auto row = b.state->approval(rows[i].approval.id);
      REQUIRE(row.has_value());
      if (i < 6) {
        CHECK(row->status == ApprovalStatus::denied);
        CHECK(row->resolved_by == std::string(reaper_principal));
        CHECK(row->notes == std::string(orphan_notes));
      } else {
        CHECK(row->pending());
      }
    }
    auto e = b.state->events(1);
    CHECK(str(parse_json(std::string(e[0].event_json()))["kind"]) == "approval.resolved");
    // The newest orphans can still be resolved normally.
    auto late = b.state->resolve_approval(rows[9].approval.id, Decision::deny, "B");
    REQUIRE(late.ok());
    CHECK(late->kind == ResolveOutcome::Kind::resolved);
  }

  TEST_CASE("agents: at the cap one of a departed owner makes room, else -32000") {
    HostStateOptions options;
    options.max_agents = 3;
    Bounded b(options);
    REQUIRE(b.state->register_agent("A", agent("a1")).ok());
    REQUIRE(b.state->register_agent("B", agent("b1")).ok());
    REQUIRE(b.state->register_agent("A", agent("a2")).ok());
    auto full = b.state->register_agent("B", agent("b2"));
    REQUIRE_FALSE(full.ok());
    CHECK(full.error().code == -32000);
    CHECK(full.error().message == "too many host agents: at most 3");
    // An existing id is not a new one: re-registering, and adopting, still work at the cap.
    REQUIRE(b.state->register_agent("A", agent("a1")).ok());
    b.live.erase("A");
    REQUIRE(b.state->register_agent("B", agent("a2")).ok());  // adopted
    // a1 is now the only agent of a departed owner: it goes, with its event.
    auto made = b.state->register_agent("B", agent("b2"));
    REQUIRE(made.ok());
    auto last = b.state->events(2);
    auto gone = parse_json(std::string(last[0].event_json()));
    CHECK(str(gone["kind"]) == "agent.unregistered");
    CHECK(str(gone["agent_id"]) == "a1");
    CHECK(str(parse_json(std::string(last[1].event_json()))["kind"]) == "agent.registered");
    std::set<std::string> ids;
    for (const auto& a : b.state->agents()) ids.insert(a.id);
    CHECK(ids == std::set<std::string>{"a2", "b1", "b2"});
  }

  TEST_CASE("agents: the longest-registered of several departed owners goes first") {
    HostStateOptions options;
    options.max_agents = 3;
    Bounded b(options);
    b.live = {"A", "B", "C"};
    REQUIRE(b.state->register_agent("A", agent("z")).ok());
    REQUIRE(b.state->register_agent("B", agent("y")).ok());
    REQUIRE(b.state->register_agent("A", agent("x")).ok());
    REQUIRE(b.state->register_agent("A", agent("z")).ok());  // re-registered: now the newest
    b.live = {"C"};
    REQUIRE(b.state->register_agent("C", agent("w")).ok());
    CHECK_FALSE(b.state->agent("y").has_value());
    REQUIRE(b.state->register_agent("C", agent("v")).ok());
    CHECK_FALSE(b.state->agent("x").has_value());
    CHECK(b.state->agent("z").has_value());
  }

  TEST_CASE("devices: the same cap and eviction, announced as device.unregistered") {
    HostStateOptions options;
    options.max_devices = 2;
    Bounded b(options);
    REQUIRE(b.state->register_device("A", device("d1")).ok());
    REQUIRE(b.state->register_device("B", device("d2")).ok());
    auto full = b.state->register_device("B", device("d3"));
    REQUIRE_FALSE(full.ok());
    CHECK(full.error().message == "too many host devices: at most 2");
    b.live.erase("A");
    REQUIRE(b.state->register_device("B", device("d3")).ok());
    auto last = b.state->events(2);
    auto gone = parse_json(std::string(last[0].event_json()));
    CHECK(str(gone["kind"]) == "device.unregistered");
    CHECK(str(gone["payload"]["id"]) == "d1");
    CHECK(b.state->devices().size() == 2);
  }

  TEST_CASE("the gate refuses a call past the pending bounds at once and runs nothing") {
    host::HostConfig config;
    config.gate.methods = {"tools.list"};
    config.state.max_pending_per_session = 1;
    config.state.max_orphan_approvals = 1;
    HostFixture f(config);
    auto& p = f.peer();
    long long waiting = f.send(p, "tools.list");
    auto refused = f.call(p, "tools.list");
    CHECK(refused["error"]["code"].GetInt() == -32000);
    CHECK(str(refused["error"]["message"]) ==
          "too many pending approvals: a session may have at most 1");
    CHECK_FALSE(f.response(p, waiting).has_value());
    CHECK(f.service->gate()->waiting() == 1);
    CHECK(f.service->state().approvals().size() == 1);
    // Its connection closes: the row stays pending, an orphan; the next orphan denies it.
    f.disconnect(p);
    CHECK(f.service->gate()->waiting() == 0);
    auto first = f.service->state().approvals();
    REQUIRE(first.size() == 1);
    CHECK(first[0].pending());
    auto& q = f.peer();
    f.send(q, "tools.list");
    f.pump();
    f.disconnect(q);
    auto rows = f.service->state().approvals();
    REQUIRE(rows.size() == 2);
    CHECK(rows[0].status == ApprovalStatus::denied);
    CHECK(rows[0].notes == std::string(orphan_notes));
    CHECK(rows[1].pending());
  }

  TEST_CASE("the tables are bounded by bytes too") {
    HostStateOptions options;
    options.max_agent_bytes = 3000;
    options.max_device_bytes = 1500;
    options.max_pending_approval_bytes = 3000;
    options.max_resolved_approval_bytes = 2000;
    Bounded b(options);
    std::string meta = R"({"k":")" + std::string(800, 'm') + R"("})";
    // Agents: three of ~1 KiB fit, a fourth does not while every owner is live.
    REQUIRE(b.state->register_agent("A", agent("a1", meta)).ok());
    REQUIRE(b.state->register_agent("B", agent("b1", meta)).ok());
    auto full = b.state->register_agent("B", agent("b2", meta));
    if (full.ok()) full = b.state->register_agent("B", agent("b3", meta));
    REQUIRE_FALSE(full.ok());
    CHECK(full.error().code == -32000);
    CHECK(full.error().message == "too many host agents: at most 3000 bytes");
    // Growing one's own agent is held to the same budget.
    StatusChange change;
    change.agent_id = "b1";
    change.status = AgentStatus::running;
    change.current_task = std::string(2000, 't');
    CHECK_FALSE(b.state->set_status("B", change).ok());
    // A departed owner's agent makes room.
    b.live.erase("A");
    REQUIRE(b.state->register_agent("B", agent("b3", meta)).ok());
    CHECK_FALSE(b.state->agent("a1").has_value());

    REQUIRE(b.state->register_device("B", device("d1")).ok());
    DeviceUpdate update;
    update.device_id = "d1";
    update.metadata_json = R"({"k":")" + std::string(1500, 'm') + R"("})";
    auto grown = b.state->update_device("B", update);
    REQUIRE_FALSE(grown.ok());
    CHECK(grown.error().message == "too many host devices: at most 1500 bytes");

    // Pending rows by bytes.
    std::string details = R"({"d":")" + std::string(900, 'd') + R"("})";
    std::vector<std::string> ids;
    Result<HostState::Created> made = b.state->create_approval(owned("B", details));
    while (made.ok() && ids.size() < 10) {
      ids.push_back(made->approval.id);
      made = b.state->create_approval(owned("B", details));
    }
    REQUIRE_FALSE(made.ok());
    CHECK(ids.size() == 2);
    CHECK(made.error().message == "too many pending approvals: at most 3000 bytes");
    // Resolved rows by bytes: the one resolved longest ago goes.
    REQUIRE(b.state->resolve_approval(ids[0], Decision::approve, "B").ok());
    REQUIRE(b.state->resolve_approval(ids[1], Decision::approve, "B").ok());
    CHECK_FALSE(b.state->approval(ids[0]).has_value());
    CHECK(b.state->approval(ids[1]).has_value());
    CHECK(b.state->create_approval(owned("B", details)).ok());
  }
}
