// Approvals in HostState and ApprovalCore (PROTOCOL.md §4.2, §5.2, §5.3): first writer wins, repeats
// are idempotent, non-owners propose, a gone owner blocks resolution until its rows are reaped,
// a departed owner's rows are reaped (case 26), the agent waits.
#include <atomic>
#include <set>
#include <thread>

#include "car/host/approval_core.hpp"
#include "host_test_support.hpp"

using namespace car;
using namespace car::host;
using namespace car::test;

namespace {

struct Setup {
  Setup() {
    live = {"A", "B"};
    HostStateOptions options;
    options.is_live = [this](std::string_view id) { return live.count(std::string(id)) != 0; };
    options.max_resolved_approvals = 3;
    state = std::make_unique<HostState>(options);
  }
  HostApproval request(std::optional<std::string> owner, std::string action = "deploy",
                       std::optional<std::string> agent = std::nullopt) {
    ApprovalSpec spec;
    spec.owner = std::move(owner);
    spec.action = std::move(action);
    spec.agent_id = std::move(agent);
    return state->create_approval(std::move(spec)).value().approval;
  }
  std::string last_kind() const {
    auto e = state->events(1);
    return e.empty() ? "" : str(parse_json(std::string(e[0].event_json()))["kind"]);
  }
  std::set<std::string> live;
  std::unique_ptr<HostState> state;
};

AgentSpec agent(std::string id) {
  AgentSpec spec;
  spec.id = std::move(id);
  spec.name = "bot";
  spec.kind = "cli";
  return spec;
}

}  // namespace

TEST_SUITE("approval_core") {
  TEST_CASE("a session-owned row: owner resolves once; repeats return the same row") {
    Setup s;
    auto a = s.request("A");
    CHECK(a.id.rfind("approval-", 0) == 0);
    CHECK(a.pending());
    CHECK(s.last_kind() == "approval.requested");
    auto row = parse_json(to_json(a));
    CHECK(str(row["status"]) == "pending");
    CHECK(str(row["client_id"]) == "A");
    CHECK(row["options"].Size() == 2);
    for (const char* absent : {"agent_id", "resolution", "resolved_by", "resolved_at", "notes"}) {
      CAPTURE(absent);
      CHECK_FALSE(row.HasMember(absent));
    }

    auto first = s.state->resolve_approval(a.id, Decision::deny, "A", "too risky");
    REQUIRE(first.ok());
    CHECK(first->kind == ResolveOutcome::Kind::resolved);
    CHECK(first->approval.status == ApprovalStatus::denied);
    CHECK(first->approval.resolution == Decision::deny);
    CHECK(first->approval.resolved_by == "A");
    CHECK(first->approval.notes == "too risky");
    CHECK(first->approval.resolved_at.has_value());
    CHECK(s.last_kind() == "approval.resolved");
    auto seq = s.state->last_sequence();

    // First writer wins: a later, different answer changes nothing and records nothing.
    auto second = s.state->resolve_approval(a.id, Decision::approve, "A");
    REQUIRE(second.ok());
    CHECK(second->kind == ResolveOutcome::Kind::already_resolved);
    CHECK(to_json(second->approval) == to_json(first->approval));
    CHECK(s.state->last_sequence() == seq);
    // Even a gone owner or a stranger gets the resolved row back without error.
    s.live.erase("A");
    CHECK(s.state->resolve_approval(a.id, Decision::approve, "B")->kind ==
          ResolveOutcome::Kind::already_resolved);
  }

  TEST_CASE("a non-owner proposes; the row stays pending") {
    Setup s;
    auto a = s.request("A");
    auto proposal = s.state->resolve_approval(a.id, Decision::approve, "B");
    REQUIRE(proposal.ok());
    CHECK(proposal->kind == ResolveOutcome::Kind::proposed);
    CHECK(proposal->approval.pending());
    CHECK(s.state->approval(a.id)->pending());
    auto ev = parse_json(std::string(s.state->events(1)[0].event_json()));
    CHECK(str(ev["kind"]) == "approval.resolution_proposed");
    CHECK(str(ev["payload"]["approval_id"]) == a.id);
    CHECK(str(ev["payload"]["resolution"]) == "approve");
    CHECK(str(ev["payload"]["proposed_by"]) == "B");
    auto done = s.state->resolve_approval(a.id, Decision::approve, "A");
    CHECK(done->approval.status == ApprovalStatus::approved);
  }

  TEST_CASE("errors: unknown id, owner gone (a resolve racing the owner's teardown)") {
    Setup s;
    auto unknown = s.state->resolve_approval("approval-x", Decision::approve, "A");
    REQUIRE_FALSE(unknown.ok());
    CHECK(unknown.error().code == -32603);
    CHECK(unknown.error().message == "unknown approval 'approval-x'");
    auto a = s.request("A");
    s.live.erase("A");
    auto gone = s.state->resolve_approval(a.id, Decision::approve, "B");
    REQUIRE_FALSE(gone.ok());
    CHECK(gone.error().code == -32603);
    CHECK(gone.error().message == "owner is no longer connected");
    CHECK(s.state->approval(a.id)->pending());
    // Once the teardown has reaped it, the same resolve returns the denied row without error.
    REQUIRE(s.state->reap_approvals_of("A").size() == 1);
    auto after = s.state->resolve_approval(a.id, Decision::approve, "B");
    REQUIRE(after.ok());
    CHECK(after->kind == ResolveOutcome::Kind::already_resolved);
    CHECK(after->approval.status == ApprovalStatus::denied);
  }

  TEST_CASE("case 26: a departed owner's pending rows are denied by system; others untouched") {
    Setup s;
    REQUIRE(s.state->register_agent("A", agent("X")).ok());
    StatusChange running;
    running.agent_id = "X";
    running.status = AgentStatus::running;
    REQUIRE(s.state->set_status("A", running).ok());
    auto done = s.request("A", "done");
    REQUIRE(s.state->resolve_approval(done.id, Decision::approve, "A").ok());
    auto first = s.request("A", "one", "X");
    auto second = s.request("A", "two", "X");
    auto system = s.request(std::nullopt, "rotate keys");
    auto gated = s.request(std::nullopt, "ws.method:mail.send");
    auto other = s.request("B", "theirs");
    CHECK(s.state->agent("X")->status == AgentStatus::waiting_for_approval);
    // A session-owned row may carry a waiter (the C++ API allows it): it is woken with the denial.
    std::vector<ApprovalStatus> woken;
    ApprovalSpec waited;
    waited.owner = "A";
    waited.action = "waited";
    auto third = s.state->create_approval(waited, [&](const HostApproval& r) {
      woken.push_back(r.status);
    }).value().approval;
    std::uint64_t before = s.state->last_sequence();

    s.live.erase("A");
    auto reaped = s.state->reap_approvals_of("A");
    REQUIRE(reaped.size() == 3);
    CHECK(reaped[0].id == first.id);  // creation order
    CHECK(reaped[1].id == second.id);
    CHECK(reaped[2].id == third.id);
    for (const auto& row : reaped) {
      CAPTURE(row.id);
      CHECK(row.status == ApprovalStatus::denied);
      CHECK(row.resolution == Decision::deny);
      CHECK(row.resolved_by == "system");
      CHECK(row.notes == "owner disconnected");
      CHECK(row.resolved_at.has_value());
      CHECK(row.client_id == "A");  // still names its owner
      CHECK(s.state->approval(row.id)->status == ApprovalStatus::denied);
    }
    CHECK(woken == std::vector<ApprovalStatus>{ApprovalStatus::denied});
    // The agent is back where it was, once, after its last approval went.
    CHECK(s.state->agent("X")->status == AgentStatus::running);
    std::vector<std::string> kinds;
    for (const auto& e : s.state->events(100)) {
      if (e.sequence <= before) continue;
      auto ev = parse_json(std::string(e.event_json()));
      kinds.push_back(str(ev["kind"]));
      if (kinds.back() == "approval.resolved") {
        CHECK(str(ev["payload"]["resolved_by"]) == "system");
        CHECK(str(ev["payload"]["notes"]) == "owner disconnected");
        CHECK(str(ev["payload"]["status"]) == "denied");
      }
    }
    CHECK(kinds == std::vector<std::string>{"approval.resolved", "approval.resolved",
                                            "agent.status_changed", "approval.resolved"});
    // Resolved rows (`done` is not among the reaped, and the bound of 3 has since dropped it),
    // system-level rows (gate or not) and other owners' rows are left alone.
    CHECK_FALSE(s.state->approval(done.id).has_value());
    CHECK(s.state->approval(system.id)->pending());
    CHECK(s.state->approval(gated.id)->pending());
    CHECK(s.state->approval(other.id)->pending());
    // A second reap finds nothing and records nothing.
    std::uint64_t after = s.state->last_sequence();
    CHECK(s.state->reap_approvals_of("A").empty());
    CHECK(s.state->last_sequence() == after);
    // Another session's later resolve returns the reaped row unchanged.
    auto late = s.state->resolve_approval(first.id, Decision::approve, "B");
    REQUIRE(late.ok());
    CHECK(late->kind == ResolveOutcome::Kind::already_resolved);
    CHECK(to_json(late->approval) == to_json(reaped[0]));
  }

  TEST_CASE("reaping leaves an agent its owner moved on, and respects the resolved-row bound") {
    Setup s;  // max_resolved_approvals = 3
    REQUIRE(s.state->register_agent("A", agent("X")).ok());
    s.request("A", "flip", "X");
    StatusChange paused;
    paused.agent_id = "X";
    paused.status = AgentStatus::paused;
    REQUIRE(s.state->set_status("A", paused).ok());
    for (int i = 0; i < 4; ++i) s.request("A", "r" + std::to_string(i));
    auto keep = s.request("B", "keep");
    auto reaped = s.state->reap_approvals_of("A");
    CHECK(reaped.size() == 5);  // every row is reported, even those the bound then dropped
    CHECK(s.state->agent("X")->status == AgentStatus::paused);
    auto rows = s.state->approvals();
    REQUIRE(rows.size() == 4);  // 3 resolved (the newest) + the pending one
    CHECK(rows[0].id == reaped[2].id);
    CHECK(rows[2].id == reaped[4].id);
    CHECK(rows[3].id == keep.id);
    CHECK(rows[3].pending());
  }

  TEST_CASE("the bound drops the longest-resolved rows first, whatever their creation order") {
    Setup s;  // max_resolved_approvals = 3
    auto old_row = s.request("A", "created first");
    std::vector<HostApproval> later;
    for (int i = 0; i < 3; ++i) later.push_back(s.request("A", "later " + std::to_string(i)));
    // Resolved last although created first: it is kept, and the first resolution goes.
    for (const auto& row : later) REQUIRE(s.state->resolve_approval(row.id, Decision::approve, "A").ok());
    REQUIRE(s.state->resolve_approval(old_row.id, Decision::deny, "A").ok());
    auto rows = s.state->approvals();
    REQUIRE(rows.size() == 3);
    CHECK(rows[0].id == old_row.id);  // still listed in creation order
    CHECK(rows[1].id == later[1].id);
    CHECK(rows[2].id == later[2].id);
    CHECK_FALSE(s.state->approval(later[0].id).has_value());
  }

  TEST_CASE("a large reap behind many pending rows keeps the newest reaped and every pending row") {
    // The shape of a stall found in review: thousands of rows reaped behind thousands pending.
    // Eviction is now constant work per row; here the outcome is checked.
    Setup s;
    HostStateOptions options;
    options.max_resolved_approvals = 100;
    options.max_pending_per_session = 10000;  // the pending bounds are not what this is about
    options.max_pending_approvals = 10000;
    s.state = std::make_unique<HostState>(options);
    std::vector<HostApproval> pending, gone;
    for (int i = 0; i < 3000; ++i) pending.push_back(s.request("B", "p"));
    for (int i = 0; i < 1000; ++i) gone.push_back(s.request("A", "g"));
    for (int i = 0; i < 3000; ++i) pending.push_back(s.request("B", "p"));
    auto reaped = s.state->reap_approvals_of("A");
    REQUIRE(reaped.size() == 1000);
    auto rows = s.state->approvals();
    REQUIRE(rows.size() == 6100);
    std::size_t resolved = 0;
    for (const auto& r : rows) resolved += r.pending() ? 0 : 1;
    CHECK(resolved == 100);
    CHECK(s.state->approval(gone[999].id).has_value());
    CHECK(s.state->approval(gone[900].id).has_value());
    CHECK_FALSE(s.state->approval(gone[899].id).has_value());
    CHECK(s.state->approval(pending.front().id)->pending());
    CHECK(s.state->approval(pending.back().id)->pending());
    // More resolutions later keep the list consistent across compactions.
    for (int i = 0; i < 200; ++i) {
      REQUIRE(s.state->resolve_approval(pending[static_cast<std::size_t>(i)].id, Decision::approve, "B").ok());
    }
    rows = s.state->approvals();
    CHECK(rows.size() == 6000 - 200 + 100);
    CHECK(rows.back().id == pending.back().id);
  }

  TEST_CASE("system-level rows are resolved by anyone and wake their waiter once") {
    Setup s;
    int woken = 0;
    ApprovalSpec spec;
    spec.action = "ws.method:messages.send";
    auto created = s.state->create_approval(spec, [&](const HostApproval& r) {
      ++woken;
      CHECK(r.status == ApprovalStatus::approved);
    }).value();
    CHECK_FALSE(created.approval.client_id.has_value());
    CHECK_FALSE(parse_json(to_json(created.approval)).HasMember("client_id"));
    CHECK(s.state->resolve_approval(created.approval.id, Decision::approve, "B")->kind ==
          ResolveOutcome::Kind::resolved);
    s.state->resolve_approval(created.approval.id, Decision::approve, "A");
    CHECK(woken == 1);
    // A forgotten waiter never runs.
    auto other = s.state->create_approval(spec, [&](const HostApproval&) { ++woken; }).value();
    s.state->forget_waiter(other.approval.id, other.waiter_id);
    s.state->resolve_approval(other.approval.id, Decision::deny, "A");
    CHECK(woken == 1);
  }

  TEST_CASE("the owner's agent waits for its approvals and then returns to its status") {
    Setup s;
    REQUIRE(s.state->register_agent("A", agent("X")).ok());
    StatusChange running;
    running.agent_id = "X";
    running.status = AgentStatus::running;
    REQUIRE(s.state->set_status("A", running).ok());

    // Another session's approval naming X does not touch it.
    s.request("B", "other", "X");
    CHECK(s.state->agent("X")->status == AgentStatus::running);

    auto first = s.request("A", "one", "X");
    CHECK(s.last_kind() == "agent.status_changed");
    CHECK(s.state->agent("X")->status == AgentStatus::waiting_for_approval);
    auto second = s.request("A", "two", "X");
    s.state->resolve_approval(first.id, Decision::approve, "A");
    CHECK(s.state->agent("X")->status == AgentStatus::waiting_for_approval);
    s.state->resolve_approval(second.id, Decision::deny, "A");
    CHECK(s.state->agent("X")->status == AgentStatus::running);
    CHECK(s.last_kind() == "agent.status_changed");

    // The owner moved it on meanwhile: resolution leaves its new status alone.
    auto third = s.request("A", "three", "X");
    StatusChange paused = running;
    paused.status = AgentStatus::paused;
    REQUIRE(s.state->set_status("A", paused).ok());
    s.state->resolve_approval(third.id, Decision::approve, "A");
    CHECK(s.state->agent("X")->status == AgentStatus::paused);
  }

  TEST_CASE("resolved rows are kept up to a bound; pending rows always") {
    Setup s;  // max_resolved_approvals = 3
    auto pending = s.request("A", "keep");
    std::vector<std::string> ids;
    for (int i = 0; i < 5; ++i) {
      auto a = s.request("A", "r" + std::to_string(i));
      s.state->resolve_approval(a.id, Decision::approve, "A");
      ids.push_back(a.id);
    }
    auto rows = s.state->approvals();
    REQUIRE(rows.size() == 4);
    CHECK(rows[0].id == pending.id);
    CHECK(rows[1].id == ids[2]);
    CHECK(rows[3].id == ids[4]);
    CHECK_FALSE(s.state->approval(ids[0]).has_value());
  }

  TEST_CASE("ApprovalCore: eligibility, Resolved, StillPending, Error") {
    Setup s;
    ApprovalCore core(*s.state);
    auto system = s.request(std::nullopt, "rotate keys");
    auto gated = s.request(std::nullopt, "ws.method:mail.send");
    auto owned = s.request("A", "deploy");
    CHECK(ApprovalCore::is_eligible_pending(system));
    CHECK_FALSE(ApprovalCore::is_eligible_pending(gated));
    CHECK_FALSE(ApprovalCore::is_eligible_pending(owned));
    auto eligible = core.eligible_pending();
    REQUIRE(eligible.size() == 1);
    CHECK(eligible[0].id == system.id);

    auto resolved = core.resolve(system.id, Decision::approve, "cli:alice", "ok");
    REQUIRE(std::holds_alternative<ApprovalCore::Resolved>(resolved));
    CHECK(std::get<ApprovalCore::Resolved>(resolved).approval.resolved_by == "cli:alice");
    CHECK_FALSE(ApprovalCore::is_eligible_pending(*s.state->approval(system.id)));
    CHECK(core.eligible_pending().empty());
    // An earlier resolution also reads as Resolved.
    CHECK(std::holds_alternative<ApprovalCore::Resolved>(
        core.resolve(system.id, Decision::deny, "cli:bob")));

    auto still = core.resolve(owned.id, Decision::approve, "cli:alice");
    REQUIRE(std::holds_alternative<ApprovalCore::StillPending>(still));
    CHECK(std::get<ApprovalCore::StillPending>(still).approval.pending());

    auto unknown = core.resolve("approval-nope", Decision::approve, "cli:alice");
    REQUIRE(std::holds_alternative<Error>(unknown));
    CHECK(std::get<Error>(unknown).message == "unknown approval 'approval-nope'");
    s.live.erase("A");
    auto gone = core.resolve(owned.id, Decision::approve, "cli:alice");
    REQUIRE(std::holds_alternative<Error>(gone));
    CHECK(std::get<Error>(gone).message == "owner is no longer connected");
  }

  TEST_CASE("concurrent resolvers: exactly one wins, the waiter runs once") {
    Setup s;
    for (int round = 0; round < 20; ++round) {
      std::atomic<int> woken{0};
      ApprovalSpec spec;
      spec.action = "ws.method:vision.ocr";
      auto created = s.state->create_approval(spec, [&](const HostApproval&) { ++woken; }).value();
      std::atomic<int> resolved{0}, repeated{0};
      std::vector<std::thread> threads;
      for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
          auto r = s.state->resolve_approval(created.approval.id,
                                             t % 2 ? Decision::approve : Decision::deny,
                                             "p" + std::to_string(t));
          if (r->kind == ResolveOutcome::Kind::resolved) ++resolved;
          if (r->kind == ResolveOutcome::Kind::already_resolved) ++repeated;
        });
      }
      for (auto& t : threads) t.join();
      CHECK(resolved.load() == 1);
      CHECK(repeated.load() == 3);
      CHECK(woken.load() == 1);
    }
  }
}
