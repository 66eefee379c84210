#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "car/error.hpp"
#include "car/event_subscriber.hpp"
#include "car/export.hpp"
#include "car/frame.hpp"
#include "car/host/host_records.hpp"
#include "car/host/time_format.hpp"
#include "car/json.hpp"
#include "car/result.hpp"

// HostState (PROTOCOL.md §4): the agents, devices and approvals host shells watch and steer, the ring of
// the most recent host events, and the broadcast of every event to subscribers. It knows nothing
// about transports or JSON-RPC requests; the host.* methods (host_service.cpp) are a thin layer
// over it, and embedders may drive it directly.
//
// Ownership (PROTOCOL.md §4): every agent, device and session-owned approval is owned by the client_id
// that created it. Only the owner mutates it; reads are open. Agents and devices outlive their
// owner; once the owner is no longer live (HostStateOptions::is_live), registering the same id
// adopts the item. A departed owner's pending approvals are denied (reap_approvals_of).
//
// Bounds (HostStateOptions): every table, the ring and each event has one, so no client can grow
// the state (or a host.subscribe reply) without limit; each says what happens when it is full.
//
// Threading: every member is thread-safe. One mutex guards the state, the event ring and the
// subscriber list; no subscriber is ever called and no waiter ever runs while it is held.
//
// Broadcast ordering (why it is built this way): an event gets its sequence number and is
// appended to an outbox inside the same critical section, so the outbox is in sequence order.
// Delivery then happens outside the lock by exactly one "delivering" thread at a time: whichever
// thread finds nobody delivering takes the job and keeps draining the outbox — including events
// other threads record meanwhile — until it is empty. Every subscriber therefore sees events in
// sequence order, no lock is held across any send, and since EventSubscriber::send_text only
// queues (never blocks) a slow or dead subscriber cannot delay the recorder or anyone else.
namespace car::host {

// ---- inputs ----

struct CAR_API AgentSpec {
  std::optional<std::string> id;  // none: a fresh "agent-<uuid>"
  std::string name;
  std::string kind;
  std::vector<std::string> capabilities;
  std::optional<std::string> project;
  std::optional<long long> pid;
  std::optional<std::string> display_json;
  std::optional<std::string> metadata_json;  // none: {}
};

struct CAR_API StatusChange {
  std::string agent_id;
  AgentStatus status = AgentStatus::idle;
  std::optional<std::string> current_task;
  std::optional<std::string> message;  // the event's message (default: a generated line)
  // The event's payload, verbatim (any JSON value, compact text); none: the agent after the
  // change.
  std::optional<std::string> payload_json;
};

struct CAR_API DeviceSpec {
  std::optional<std::string> id;  // none: a fresh "device-<uuid>"
  std::string name;
  std::string platform;
  std::vector<std::string> capabilities;
  std::optional<std::string> status;
  std::optional<std::string> metadata_json;
};

struct CAR_API DeviceUpdate {
  std::string device_id;
  std::optional<std::string> name;
  std::optional<std::string> platform;
  std::optional<std::vector<std::string>> capabilities;
  std::optional<std::string> status;
  std::optional<std::string> metadata_json;
};

struct CAR_API EventSpec {
  std::string kind;
  std::optional<std::string> agent_id;
  std::string message;
  std::string payload_json = "{}";  // a JSON object
};

struct CAR_API ApprovalSpec {
  // Set: a session-owned approval; none: system-level (the approval gate, other channels).
  std::optional<std::string> owner;
  std::optional<std::string> agent_id;
  std::string action;
  std::string details_json = "{}";
  // A system-level row raised for a session's request (the gate): the row counts against that
  // session's pending bound while someone waits for it, and becomes an orphan once nobody does.
  std::optional<std::string> requested_by;
};

// resolved_by and notes of the rows reap_approvals_of resolves (PROTOCOL.md §5.2).
inline constexpr std::string_view reaper_principal = "system";
inline constexpr std::string_view reaped_notes = "owner disconnected";
// notes of a gate row denied because too many rows nobody waits for are kept.
inline constexpr std::string_view orphan_notes = "requester no longer waiting";

// How resolve_approval ended (PROTOCOL.md §5.2).
struct CAR_API ResolveOutcome {
  enum class Kind : std::uint8_t {
    resolved,          // this call resolved it (approval.resolved recorded, waiters woken)
    already_resolved,  // an earlier call did; the row is returned unchanged, nothing recorded
    proposed,          // a non-owner's resolution: row unchanged, resolution_proposed recorded
  };
  Kind kind = Kind::resolved;
  HostApproval approval;  // the row after the call
};

// Runs once, outside any HostState lock, on the thread that resolved the approval.
using ApprovalWaiter = std::function<void(const HostApproval& resolved)>;

struct CAR_API HostStateOptions {
  std::size_t event_capacity = 500;     // the ring (PROTOCOL.md §8)
  std::size_t subscribe_backlog = 100;  // events in a host.subscribe snapshot
  // Resolved approval rows kept (the one resolved longest ago dropped beyond it); pending rows are never
  // dropped. The spec keeps resolved rows; this bounds a long-running daemon.
  std::size_t max_resolved_approvals = 1000;
  // ---- bounds (PROTOCOL.md §4, §5, §8): nothing a client sends grows the state without limit ----
  // One HostEvent's JSON. A call whose event would be larger changes nothing and is answered
  // -32602 "invalid params: host event too large: ..."; agents and approval rows must leave
  // item_reserve bytes of it free for the fields the server adds later (a status flip, a
  // resolution by the system).
  std::size_t max_event_bytes = 64 * 1024;
  std::size_t item_reserve = 512;
  // The ring is bounded by bytes as well as by event_capacity; the oldest events go first.
  std::size_t event_ring_bytes = 4 * 1024 * 1024;
  // A host.subscribe snapshot carries the newest events that fit in this many bytes (at most
  // subscribe_backlog of them), so three subscribes cannot copy the whole ring three times.
  std::size_t subscribe_backlog_bytes = 2 * 1024 * 1024;
  // Pending approvals awaiting a live requester: per session (its own rows and the gate rows
  // its waiting requests raised) and in total. Beyond either, create_approval is refused -32000.
  std::size_t max_pending_per_session = 256;
  std::size_t max_pending_approvals = 4096;
  // Pending gate rows nobody waits for any more (the request timed out or its connection
  // closed): the oldest beyond this is denied by reaper_principal with orphan_notes.
  std::size_t max_orphan_approvals = 256;
  // Agents and devices outlive their owner (PROTOCOL.md §4). At the cap a new id evicts the
  // longest-registered one whose owner is gone (agent.unregistered / device.unregistered);
  // when every owner is live the registration is refused -32000.
  std::size_t max_agents = 1024;
  std::size_t max_devices = 1024;
  // The same tables by bytes (the JSON of their rows), so that a host.subscribe snapshot stays
  // near 10 MiB however large each row is: agents and devices as max_agents (a departed owner's
  // evicted first; "too many host agents: at most N bytes"); pending rows as
  // max_pending_approvals ("too many pending approvals: at most N bytes"); resolved rows as
  // max_resolved_approvals (the one resolved longest ago dropped).
  std::size_t max_agent_bytes = 2 * 1024 * 1024;
  std::size_t max_device_bytes = 1024 * 1024;
  std::size_t max_pending_approval_bytes = 4 * 1024 * 1024;
  std::size_t max_resolved_approval_bytes = 1024 * 1024;
  WallClock clock;  // empty: the system clock
  // Whether the session `client_id` is still connected. Called with the HostState lock held, so
  // it must not call back into HostState. Empty: every owner counts as live.
  std::function<bool(std::string_view client_id)> is_live;
};

struct CAR_API Subscription {
  // {"subscribed":true,"agents":[..],"devices":[..],"approvals":[..],"events":[..],
  //  "event_sequence":N} — the host.subscribe result (PROTOCOL.md §4.2).
  std::string snapshot_json;
  std::uint64_t event_sequence = 0;
};

class CAR_API HostState {
 public:
  explicit HostState(HostStateOptions options = {});
  ~HostState();
  HostState(const HostState&) = delete;
  HostState& operator=(const HostState&) = delete;

  // ---- agents ----
  // New (fresh id or unknown id), own (update, status kept) or adopted (owner gone). Records
  // agent.registered. Errors: -32603 "agent '<id>' is owned by another session"; -32602
  // "invalid params: host event too large: ..."; a new id at max_agents with every owner live:
  // -32000 "too many host agents: at most N" (otherwise a departed owner's agent is evicted).
  Result<HostAgent> register_agent(std::string_view caller, AgentSpec spec);
  // Errors: -32603 "unknown agent '<id>'", "agent '<id>' is owned by another session".
  std::optional<Error> unregister_agent(std::string_view caller, std::string_view agent_id);
  // Owner only; records agent.status_changed. Same errors as unregister_agent, and the -32602 of
  // an event (or an agent left behind) too large.
  Result<HostAgent> set_status(std::string_view caller, StatusChange change);
  std::vector<HostAgent> agents() const;
  std::optional<HostAgent> agent(std::string_view agent_id) const;
  std::string agents_json() const;  // [HostAgent]

  // ---- devices ----
  // As register_agent; at max_devices a departed owner's device is evicted (device.unregistered)
  // or the registration is refused -32000 "too many host devices: at most N".
  Result<HostDevice> register_device(std::string_view caller, DeviceSpec spec);
  // Owner only. Errors: -32603 "unknown device '<id>'", "device '<id>' is owned by another
  // session"; -32602 "invalid params: host event too large: ...".
  Result<HostDevice> update_device(std::string_view caller, DeviceUpdate update);
  std::vector<HostDevice> devices() const;
  std::string devices_json() const;  // [HostDevice]

  // ---- events ----
  // Records and broadcasts one event (host.notify and everything above use this). Error: -32602
  // "invalid params: host event too large: ..." beyond HostStateOptions::max_event_bytes.
  Result<HostEventRecord> record(EventSpec event);
  // The most recent `limit` events (capped by the ring), oldest first.
  std::vector<HostEventRecord> events(std::size_t limit) const;
  std::string events_json(std::size_t limit) const;  // [HostEvent]
  std::uint64_t last_sequence() const;                // 0 before the first event

  // ---- approvals ----
  // Creates a pending row and records approval.requested. With an owner that owns
  // `spec.agent_id`, the agent flips to waiting_for_approval (agent.status_changed) until its
  // last such approval is resolved. `waiter`, if given, is registered atomically with the row
  // and runs once when the row is resolved; `waiter_id` then identifies it for forget_waiter.
  struct Created {
    HostApproval approval;
    std::uint64_t waiter_id = 0;
  };
  // Errors: -32000 "too many pending approvals: ..." (HostStateOptions' pending bounds), -32602
  // "invalid params: host event too large: ...".
  Result<Created> create_approval(ApprovalSpec spec, ApprovalWaiter waiter = {});
  // Drops a waiter that is no longer interested (e.g. the gate timed out). No-op if it ran. A
  // row with `requested_by` and no waiter left becomes an orphan (max_orphan_approvals).
  void forget_waiter(std::string_view approval_id, std::uint64_t waiter_id);
  // PROTOCOL.md §5.2, checks in order: unknown ⇒ -32603 "unknown approval '<id>'"; resolved ⇒
  // already_resolved; session-owned with its owner gone ⇒ -32603 "owner is no longer connected";
  // session-owned and `principal` is not the owner ⇒ proposed; otherwise resolved (first writer
  // wins; `principal` becomes resolved_by). A resolution whose event would pass
  // max_event_bytes (long notes) is -32602 and leaves the row pending.
  Result<ResolveOutcome> resolve_approval(std::string_view approval_id, Decision decision,
                                          std::string_view principal,
                                          std::optional<std::string> notes = std::nullopt);
  // The owner `client_id` has departed (PROTOCOL.md §5.2; host_service runs it as a teardown
  // step): each of its pending session-owned approvals is resolved denied by reaper_principal
  // with notes reaped_notes — approval.resolved recorded, a flipped agent returned to its
  // previous status, waiters woken — exactly as a resolution by the owner would. Rows already
  // resolved and system-level rows are left alone. Returns the reaped rows, in creation order.
  // Call it only once the owner can no longer resolve (its session is closed): a resolve that
  // comes in between is "owner is no longer connected".
  std::vector<HostApproval> reap_approvals_of(std::string_view client_id);
  std::vector<HostApproval> approvals() const;  // creation order, resolved rows included
  std::optional<HostApproval> approval(std::string_view approval_id) const;
  std::string approvals_json() const;  // [HostApproval]

  // ---- subscribers ----
  // Takes the snapshot and registers `subscriber` under `client_id` in one critical section:
  // every event after `event_sequence` will be offered to it, none at or before, from the
  // moment this returns. Holding events until the snapshot has reached the peer is the
  // subscriber's job: host.subscribe registers a paused StreamSubscriber (car/event_stream.hpp)
  // and resumes it from the reply's after_queued. Re-subscribing replaces the client's previous
  // subscription.
  Subscription subscribe(std::string client_id, std::shared_ptr<EventSubscriber> subscriber);
  // Returns whether the client had a subscription. Idempotent.
  bool unsubscribe(std::string_view client_id);
  std::size_t subscriber_count() const;

  const HostStateOptions& options() const;

 private:
  class Impl;  // the rows, the event ring, the subscriber list and the outbox (host_state.cpp)
  std::unique_ptr<Impl> impl_;
};

}  // namespace car::host
