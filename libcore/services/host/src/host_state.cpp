#include "car/host/host_state.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <map>
#include <deque>

#include "car/jsonrpc_text.hpp"
#include "car/log.hpp"
#include "car/random.hpp"

namespace car::host {


namespace {

// What precedes the HostEvent object inside its host.event frame (see event_json()).
const std::string& event_frame_prefix() {
  static const std::string prefix = jsonrpc::notification_prefix("host.event");
  return prefix;
}

constexpr std::string_view status_names[] = {
    "idle", "running", "waiting_for_approval", "paused", "completed", "errored", "stopped",
};

Error owned_by_another(std::string_view what, std::string_view id) {
  return Error::internal(fmt::format("{} '{}' is owned by another session", what, id));
}

Error unknown(std::string_view what, std::string_view id) {
  return Error::internal(fmt::format("unknown {} '{}'", what, id));
}

void write_strings(json::Builder& out, const std::vector<std::string>& items) {
  out.begin_array();
  for (const auto& s : items) out.str(s);
  out.end_array();
}

void write_agent_fields(json::Builder& out, const HostAgent& a) {
  out.key("id").str(a.id).key("name").str(a.name).key("kind").str(a.kind);
  out.key("capabilities");
  write_strings(out, a.capabilities);
  if (a.project) out.key("project").str(*a.project);
  out.key("status").str(to_string(a.status));
  // current_task and pid are always written, null when unset, as upstream serializes them
  // (PROTOCOL.md §4): host shells read them without a presence check.
  out.key("current_task");
  if (a.current_task) {
    out.str(*a.current_task);
  } else {
    out.null();
  }
  out.key("pid");
  if (a.pid) {
    out.integer(*a.pid);
  } else {
    out.null();
  }
  if (a.display_json) out.key("display").raw(*a.display_json);
  out.key("metadata").raw(a.metadata_json);
  out.key("session_id").str(a.session_id);
}

}  // namespace

// ---- shapes ----

std::string_view to_string(AgentStatus status) {
  auto i = static_cast<std::size_t>(status);
  return i < std::size(status_names) ? status_names[i] : "idle";
}

std::optional<AgentStatus> parse_agent_status(std::string_view text) {
  for (std::size_t i = 0; i < std::size(status_names); ++i) {
    if (status_names[i] == text) return static_cast<AgentStatus>(i);
  }
  return std::nullopt;
}

std::string_view agent_status_names() {
  return "idle, running, waiting_for_approval, paused, completed, errored, stopped";
}

std::string_view to_string(ApprovalStatus status) {
  switch (status) {
    case ApprovalStatus::pending: return "pending";
    case ApprovalStatus::approved: return "approved";
    case ApprovalStatus::denied: return "denied";
  }
  return "pending";
}

std::string_view to_string(Decision decision) {
  return decision == Decision::approve ? "approve" : "deny";
}

void write_json(json::Builder& out, const HostAgent& agent) {
  out.begin_object();
  write_agent_fields(out, agent);
  out.end_object();
}

void write_json(json::Builder& out, const HostDevice& d) {
  out.begin_object();
  out.key("id").str(d.id).key("name").str(d.name).key("platform").str(d.platform);
  out.key("capabilities");
  write_strings(out, d.capabilities);
  out.key("status");  // always present, null when unset (PROTOCOL.md §4)
  if (d.status) {
    out.str(*d.status);
  } else {
    out.null();
  }
  out.key("metadata").raw(d.metadata_json);
  out.key("session_id").str(d.session_id);
  out.key("updated_at").str(d.updated_at);
  out.end_object();
}

void write_json(json::Builder& out, const HostApproval& a) {
  out.begin_object();
  out.key("id").str(a.id);
  if (a.agent_id) out.key("agent_id").str(*a.agent_id);
  out.key("action").str(a.action);
  out.key("details").raw(a.details_json);
  out.key("options").begin_array().str("approve").str("deny").end_array();
  out.key("status").str(to_string(a.status));
  out.key("created_at").str(a.created_at);
  if (a.client_id) out.key("client_id").str(*a.client_id);
  if (a.resolution) out.key("resolution").str(to_string(*a.resolution));
  if (a.resolved_by) out.key("resolved_by").str(*a.resolved_by);
  if (a.resolved_at) out.key("resolved_at").str(*a.resolved_at);
  if (a.notes) out.key("notes").str(*a.notes);
  out.end_object();
}

std::string_view HostEventRecord::event_json() const {
  const std::string& prefix = event_frame_prefix();
  if (!frame || frame->size() < prefix.size() + 1) return {};
  std::string_view text(*frame);
  return text.substr(prefix.size(), text.size() - prefix.size() - 1);
}

// ---- HostState ----

// Everything HostState keeps, behind the public class so that its header shows only the API.
// The public members forward here one to one (see the end of this file).
class HostState::Impl {
 public:
  explicit Impl(HostStateOptions options);

  Result<HostAgent> register_agent(std::string_view caller, AgentSpec spec);
  std::optional<Error> unregister_agent(std::string_view caller, std::string_view agent_id);
  Result<HostAgent> set_status(std::string_view caller, StatusChange change);
  std::vector<HostAgent> agents() const;
  std::optional<HostAgent> agent(std::string_view agent_id) const;
  std::string agents_json() const;
  Result<HostDevice> register_device(std::string_view caller, DeviceSpec spec);
  Result<HostDevice> update_device(std::string_view caller, DeviceUpdate update);
  std::vector<HostDevice> devices() const;
  std::string devices_json() const;
  HostEventRecord record(EventSpec event);
  std::vector<HostEventRecord> events(std::size_t limit) const;
  std::string events_json(std::size_t limit) const;
  std::uint64_t last_sequence() const;
  HostState::Created create_approval(ApprovalSpec spec, ApprovalWaiter waiter);
  void forget_waiter(std::string_view approval_id, std::uint64_t waiter_id);
  Result<ResolveOutcome> resolve_approval(std::string_view approval_id, Decision decision,
                                          std::string_view principal,
                                          std::optional<std::string> notes);
  std::vector<HostApproval> reap_approvals_of(std::string_view client_id);
  std::vector<HostApproval> approvals() const;
  std::optional<HostApproval> approval(std::string_view approval_id) const;
  std::string approvals_json() const;
  Subscription subscribe(std::string client_id, std::shared_ptr<EventSubscriber> subscriber);
  bool unsubscribe(std::string_view client_id);
  std::size_t subscriber_count() const;

  struct AgentRow;
  struct ApprovalRow;
  struct OutboxItem;
  struct SubscriberEntry;
  using SubscriberList = std::vector<std::shared_ptr<SubscriberEntry>>;

  std::string now_locked() const;
  bool live_locked(std::string_view client_id) const;
  HostEventRecord record_locked(EventSpec event);
  void set_agent_status_locked(AgentRow& row, AgentStatus status,
                               std::optional<std::string> message,
                               std::optional<std::string> payload_json);
  void evict_resolved_locked();
  struct Wakeup {
    ApprovalWaiter waiter;
    HostApproval approval;  // the row as its resolution left it
  };
  using Wakeups = std::vector<Wakeup>;
  // Resolves a pending row: sets the resolution fields, records approval.resolved, returns a
  // flipped agent to its previous status and moves the row's waiters to `wake`.
  void resolve_row_locked(ApprovalRow& row, Decision decision, std::string_view principal,
                          std::optional<std::string> notes, Wakeups& wake);
  void deliver();  // drains the outbox; see the ordering note in host_state.hpp
  // Unlists `client_id`'s subscriber (at most one) and returns it.
  std::shared_ptr<SubscriberEntry> detach_locked(std::string_view client_id);
  // Tells a detached subscriber it was dropped; no lock held.
  static void end_subscriber(SubscriberEntry& entry);

  const HostStateOptions options_;
  WallClock clock_;

  mutable std::mutex mutex_;
  std::map<std::string, std::unique_ptr<AgentRow>, std::less<>> agents_;
  std::map<std::string, HostDevice, std::less<>> devices_;
  std::map<std::string, std::unique_ptr<ApprovalRow>, std::less<>> approvals_;
  // Creation order of approvals_. Evicted ids stay behind until a compaction (readers skip ids
  // approvals_ no longer holds), so an eviction never walks or shifts this list.
  std::deque<std::string> approval_order_;
  std::size_t stale_order_entries_ = 0;     // ids in approval_order_ already evicted
  std::deque<std::string> resolved_order_;  // resolution order of the resolved rows kept
  std::size_t resolved_count_ = 0;
  std::uint64_t next_waiter_id_ = 1;

  std::deque<HostEventRecord> ring_;
  std::uint64_t last_sequence_ = 0;

  std::shared_ptr<const SubscriberList> subscribers_;  // copy-on-write
  std::vector<OutboxItem> outbox_;                     // in sequence order
  bool delivering_ = false;
};

struct HostState::Impl::AgentRow {
  HostAgent agent;
  // Pending session-owned approvals that flipped this agent to waiting_for_approval, and the
  // status it had before the first of them.
  std::size_t approvals_waiting = 0;
  AgentStatus status_before_approval = AgentStatus::idle;
};

struct HostState::Impl::ApprovalRow {
  HostApproval approval;
  std::optional<std::string> flipped_agent;
  std::vector<std::pair<std::uint64_t, ApprovalWaiter>> waiters;
};

struct HostState::Impl::OutboxItem {
  Frame frame;
  std::uint64_t sequence = 0;
};

// One registered subscriber; only `removed` changes after registration (from any thread).
struct HostState::Impl::SubscriberEntry {
  SubscriberEntry(std::string id, std::shared_ptr<EventSubscriber> sub, std::uint64_t from)
      : client_id(std::move(id)), subscriber(std::move(sub)), from_sequence(from) {}

  const std::string client_id;
  const std::shared_ptr<EventSubscriber> subscriber;
  const std::uint64_t from_sequence;  // the first event it is offered
  std::atomic<bool> removed{false};
};

HostState::Impl::Impl(HostStateOptions options)
    : options_(std::move(options)),
      clock_(options_.clock ? options_.clock : system_wall_clock()),
      subscribers_(std::make_shared<const SubscriberList>()) {}

std::string HostState::Impl::now_locked() const { return format_rfc3339_ms(clock_()); }

bool HostState::Impl::live_locked(std::string_view client_id) const {
  return !options_.is_live || options_.is_live(client_id);
}

HostEventRecord HostState::Impl::record_locked(EventSpec event) {
  std::uint64_t sequence = ++last_sequence_;
  json::Builder body;
  body.begin_object()
      .key("id").str("event-" + uuid_v4())
      .key("sequence").integer(static_cast<long long>(sequence))
      .key("timestamp").str(now_locked())
      .key("kind").str(event.kind);
  body.key("agent_id");  // always present, null when unset (PROTOCOL.md §4)
  if (event.agent_id) {
    body.str(*event.agent_id);
  } else {
    body.null();
  }
  body.key("message").str(event.message).key("payload").raw(event.payload_json).end_object();

  HostEventRecord record{sequence, make_frame(jsonrpc::notification("host.event", body.view()))};

  ring_.push_back(record);
  while (ring_.size() > options_.event_capacity) ring_.pop_front();
  outbox_.push_back({record.frame, sequence});
  return record;
}

void HostState::Impl::deliver() {
  {
    std::lock_guard lock(mutex_);
    if (delivering_ || outbox_.empty()) return;
    delivering_ = true;
  }
  std::vector<OutboxItem> batch;
  std::shared_ptr<const SubscriberList> subscribers;
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (outbox_.empty()) {
        delivering_ = false;
        break;
      }
      batch.clear();
      batch.swap(outbox_);
      subscribers = subscribers_;
    }
    for (const auto& item : batch) {
      for (const auto& entry : *subscribers) {
        if (entry->removed.load(std::memory_order_acquire)) continue;
        if (item.sequence < entry->from_sequence) continue;
        // A throwing subscriber must not leave `delivering_` set and silence the broadcast for
        // everybody.
        try {
          entry->subscriber->send_text(item.frame);
        } catch (const std::exception& e) {
          log_warn("host event subscriber {} threw: {}", entry->client_id, e.what());
        } catch (...) {
          log_warn("host event subscriber {} threw", entry->client_id);
        }
      }
    }
  }
}

// ---- agents ----

void HostState::Impl::set_agent_status_locked(AgentRow& row, AgentStatus status,
                                        std::optional<std::string> message,
                                        std::optional<std::string> payload_json) {
  row.agent.status = status;
  // Upstream clients put their own payload on the event and read it back as sent, so a given
  // payload is used verbatim; only without one does the event carry the agent [ext].
  record_locked({"agent.status_changed", row.agent.id,
                 message ? std::move(*message)
                         : fmt::format("agent '{}' is {}", row.agent.id, to_string(status)),
                 payload_json ? std::move(*payload_json) : to_json(row.agent)});
}

Result<HostAgent> HostState::Impl::register_agent(std::string_view caller, AgentSpec spec) {
  std::string id = spec.id ? std::move(*spec.id) : "agent-" + uuid_v4();
  HostAgent copy;
  {
    std::lock_guard lock(mutex_);
    auto it = agents_.find(id);
    if (it != agents_.end()) {
      const std::string& owner = it->second->agent.session_id;
      if (owner != caller && live_locked(owner)) return owned_by_another("agent", id);
    } else {
      auto row = std::make_unique<AgentRow>();
      row->agent.id = id;
      it = agents_.emplace(id, std::move(row)).first;
    }
    // A registration declares the agent afresh; its runtime state (status, task) carries over
    // when its owner re-registers it or a new session adopts it.
    HostAgent& a = it->second->agent;
    a.name = std::move(spec.name);
    a.kind = std::move(spec.kind);
    a.capabilities = std::move(spec.capabilities);
    a.project = std::move(spec.project);
    a.pid = spec.pid;
    a.display_json = std::move(spec.display_json);
    a.metadata_json = spec.metadata_json ? std::move(*spec.metadata_json) : "{}";
    a.session_id = std::string(caller);
    copy = a;
    record_locked({"agent.registered", id, fmt::format("agent '{}' registered", id), to_json(a)});
  }
  deliver();
  return copy;
}

std::optional<Error> HostState::Impl::unregister_agent(std::string_view caller,
                                                 std::string_view agent_id) {
  {
    std::lock_guard lock(mutex_);
    auto it = agents_.find(agent_id);
    if (it == agents_.end()) return unknown("agent", agent_id);
    if (it->second->agent.session_id != caller) return owned_by_another("agent", agent_id);
    std::string payload = to_json(it->second->agent);
    agents_.erase(it);
    record_locked({"agent.unregistered", std::string(agent_id),
                   fmt::format("agent '{}' unregistered", agent_id), std::move(payload)});
  }
  deliver();
  return std::nullopt;
}

Result<HostAgent> HostState::Impl::set_status(std::string_view caller, StatusChange change) {
  HostAgent copy;
  {
    std::lock_guard lock(mutex_);
    auto it = agents_.find(change.agent_id);
    if (it == agents_.end()) return unknown("agent", change.agent_id);
    AgentRow& row = *it->second;
    if (row.agent.session_id != caller) return owned_by_another("agent", change.agent_id);
    // The call describes the agent's present state: no task given means no current task.
    row.agent.current_task = std::move(change.current_task);
    set_agent_status_locked(row, change.status, std::move(change.message),
                            std::move(change.payload_json));
    copy = row.agent;
  }
  deliver();
  return copy;
}

std::vector<HostAgent> HostState::Impl::agents() const {
  std::lock_guard lock(mutex_);
  std::vector<HostAgent> out;
  out.reserve(agents_.size());
  for (const auto& [id, row] : agents_) out.push_back(row->agent);
  return out;
}

std::optional<HostAgent> HostState::Impl::agent(std::string_view agent_id) const {
  std::lock_guard lock(mutex_);
  auto it = agents_.find(agent_id);
  if (it == agents_.end()) return std::nullopt;
  return it->second->agent;
}

std::string HostState::Impl::agents_json() const {
  json::Builder out;
  std::lock_guard lock(mutex_);
  out.begin_array();
  for (const auto& [id, row] : agents_) write_json(out, row->agent);
  out.end_array();
  return out.take();
}

// ---- devices ----

Result<HostDevice> HostState::Impl::register_device(std::string_view caller, DeviceSpec spec) {
  std::string id = spec.id ? std::move(*spec.id) : "device-" + uuid_v4();
  HostDevice copy;
  {
    std::lock_guard lock(mutex_);
    auto it = devices_.find(id);
    if (it != devices_.end()) {
      const std::string& owner = it->second.session_id;
      if (owner != caller && live_locked(owner)) return owned_by_another("device", id);
    } else {
      it = devices_.emplace(id, HostDevice{}).first;
      it->second.id = id;
    }
    HostDevice& d = it->second;
    d.name = std::move(spec.name);
    d.platform = std::move(spec.platform);
    d.capabilities = std::move(spec.capabilities);
    d.status = std::move(spec.status);
    d.metadata_json = spec.metadata_json ? std::move(*spec.metadata_json) : "{}";
    d.session_id = std::string(caller);
    d.updated_at = now_locked();
    copy = d;
    record_locked({"device.registered", std::nullopt, fmt::format("device '{}' registered", id),
                   to_json(d)});
  }
  deliver();
  return copy;
}

Result<HostDevice> HostState::Impl::update_device(std::string_view caller, DeviceUpdate update) {
  HostDevice copy;
  {
    std::lock_guard lock(mutex_);
    auto it = devices_.find(update.device_id);
    if (it == devices_.end()) return unknown("device", update.device_id);
    HostDevice& d = it->second;
    if (d.session_id != caller) return owned_by_another("device", update.device_id);
    if (update.name) d.name = std::move(*update.name);
    if (update.platform) d.platform = std::move(*update.platform);
    if (update.capabilities) d.capabilities = std::move(*update.capabilities);
    if (update.status) d.status = std::move(*update.status);
    if (update.metadata_json) d.metadata_json = std::move(*update.metadata_json);
    d.updated_at = now_locked();
    copy = d;
    record_locked({"device.updated", std::nullopt, fmt::format("device '{}' updated", d.id),
                   to_json(d)});
  }
  deliver();
  return copy;
}

std::vector<HostDevice> HostState::Impl::devices() const {
  std::lock_guard lock(mutex_);
  std::vector<HostDevice> out;
  out.reserve(devices_.size());
  for (const auto& [id, d] : devices_) out.push_back(d);
  return out;
}

std::string HostState::Impl::devices_json() const {
  json::Builder out;
  std::lock_guard lock(mutex_);
  out.begin_array();
  for (const auto& [id, d] : devices_) write_json(out, d);
  out.end_array();
  return out.take();
}

// ---- events ----

HostEventRecord HostState::Impl::record(EventSpec event) {
  HostEventRecord record;
  {
    std::lock_guard lock(mutex_);
    record = record_locked(std::move(event));
  }
  deliver();
  return record;
}

std::vector<HostEventRecord> HostState::Impl::events(std::size_t limit) const {
  std::lock_guard lock(mutex_);
  std::size_t n = std::min(limit, ring_.size());
  return {ring_.end() - static_cast<std::ptrdiff_t>(n), ring_.end()};
}

std::string HostState::Impl::events_json(std::size_t limit) const {
  // Copy the frame pointers under the lock, join outside it.
  auto records = events(limit);
  std::size_t size = 2;
  for (const auto& r : records) size += r.event_json().size() + 1;
  std::string out;
  out.reserve(size);
  out.push_back('[');
  for (std::size_t i = 0; i < records.size(); ++i) {
    if (i != 0) out.push_back(',');
    out.append(records[i].event_json());
  }
  out.push_back(']');
  return out;
}

std::uint64_t HostState::Impl::last_sequence() const {
  std::lock_guard lock(mutex_);
  return last_sequence_;
}

// ---- approvals ----

HostState::Created HostState::Impl::create_approval(ApprovalSpec spec, ApprovalWaiter waiter) {
  Created created;
  std::string id = "approval-" + uuid_v4();
  {
    std::lock_guard lock(mutex_);
    auto row = std::make_unique<ApprovalRow>();
    HostApproval& a = row->approval;
    a.id = id;
    a.agent_id = std::move(spec.agent_id);
    a.action = std::move(spec.action);
    a.details_json = std::move(spec.details_json);
    a.created_at = now_locked();
    a.client_id = std::move(spec.owner);
    if (waiter) {
      created.waiter_id = next_waiter_id_++;
      row->waiters.emplace_back(created.waiter_id, std::move(waiter));
    }
    created.approval = a;
    record_locked({"approval.requested", a.agent_id,
                   fmt::format("approval requested: {}", a.action), to_json(a)});
    // The requesting session's own agent waits for the answer (PROTOCOL.md §4.2).
    if (a.client_id && a.agent_id) {
      auto it = agents_.find(*a.agent_id);
      if (it != agents_.end() && it->second->agent.session_id == *a.client_id) {
        AgentRow& agent = *it->second;
        row->flipped_agent = *a.agent_id;
        if (agent.approvals_waiting++ == 0) {
          agent.status_before_approval = agent.agent.status;
          set_agent_status_locked(agent, AgentStatus::waiting_for_approval, std::nullopt,
                                  std::nullopt);
        }
      }
    }
    approval_order_.push_back(id);
    approvals_.emplace(id, std::move(row));
  }
  deliver();
  return created;
}

void HostState::Impl::forget_waiter(std::string_view approval_id, std::uint64_t waiter_id) {
  ApprovalWaiter dropped;  // destroyed outside the lock
  std::lock_guard lock(mutex_);
  auto it = approvals_.find(approval_id);
  if (it == approvals_.end()) return;
  auto& waiters = it->second->waiters;
  for (auto w = waiters.begin(); w != waiters.end(); ++w) {
    if (w->first == waiter_id) {
      dropped = std::move(w->second);
      waiters.erase(w);
      return;
    }
  }
}

Result<ResolveOutcome> HostState::Impl::resolve_approval(std::string_view approval_id,
                                                   Decision decision, std::string_view principal,
                                                   std::optional<std::string> notes) {
  ResolveOutcome outcome;
  Wakeups wake;
  {
    std::lock_guard lock(mutex_);
    auto it = approvals_.find(approval_id);
    if (it == approvals_.end()) return unknown("approval", approval_id);
    ApprovalRow& row = *it->second;
    HostApproval& a = row.approval;
    if (!a.pending()) {
      return ResolveOutcome{ResolveOutcome::Kind::already_resolved, a};
    }
    bool proposed = false;
    if (a.client_id) {
      // Reaping (reap_approvals_of) resolves a departed owner's rows once its teardown gets to
      // them; this answers a resolve that comes in between.
      if (!live_locked(*a.client_id)) return Error::internal("owner is no longer connected");
      proposed = *a.client_id != principal;
    }
    if (proposed) {
      // Only the owner decides a session-owned row; anyone else's answer is passed on to it.
      json::Builder payload;
      payload.begin_object()
          .key("approval_id").str(a.id)
          .key("resolution").str(to_string(decision))
          .key("proposed_by").str(principal)
          .end_object();
      record_locked({"approval.resolution_proposed", a.agent_id,
                     fmt::format("'{}' proposes to {} approval '{}'", principal,
                                 to_string(decision), a.id),
                     payload.take()});
      outcome = {ResolveOutcome::Kind::proposed, a};
    } else {
      resolve_row_locked(row, decision, principal, std::move(notes), wake);
      outcome = {ResolveOutcome::Kind::resolved, a};
      evict_resolved_locked();
    }
  }
  deliver();
  for (auto& item : wake) item.waiter(item.approval);
  return outcome;
}

void HostState::Impl::resolve_row_locked(ApprovalRow& row, Decision decision,
                                         std::string_view principal,
                                         std::optional<std::string> notes, Wakeups& wake) {
  HostApproval& a = row.approval;
  a.status = decision == Decision::approve ? ApprovalStatus::approved : ApprovalStatus::denied;
  a.resolution = decision;
  a.resolved_by = std::string(principal);
  a.resolved_at = now_locked();
  a.notes = std::move(notes);
  ++resolved_count_;
  resolved_order_.push_back(a.id);
  record_locked({"approval.resolved", a.agent_id,
                 fmt::format("approval '{}' {}", a.id, to_string(a.status)), to_json(a)});
  if (row.flipped_agent) {
    auto agent_it = agents_.find(*row.flipped_agent);
    if (agent_it != agents_.end() && agent_it->second->approvals_waiting > 0) {
      AgentRow& agent = *agent_it->second;
      // Back to where it was, unless its owner has moved it on meanwhile.
      if (--agent.approvals_waiting == 0 &&
          agent.agent.status == AgentStatus::waiting_for_approval) {
        set_agent_status_locked(agent, agent.status_before_approval, std::nullopt, std::nullopt);
      }
    }
  }
  // Waiters run after the lock is released, each with the row as this resolution left it (a
  // later eviction may drop the row itself).
  for (auto& [id, waiter] : row.waiters) wake.push_back({std::move(waiter), a});
  row.waiters.clear();
}

std::vector<HostApproval> HostState::Impl::reap_approvals_of(std::string_view client_id) {
  std::vector<HostApproval> reaped;
  Wakeups wake;
  {
    std::lock_guard lock(mutex_);
    // Creation order, so the approval.resolved events come out in the order the rows were made.
    for (const auto& id : approval_order_) {
      auto it = approvals_.find(id);
      if (it == approvals_.end()) continue;
      ApprovalRow& row = *it->second;
      if (!row.approval.pending() || row.approval.client_id != client_id) continue;
      resolve_row_locked(row, Decision::deny, reaper_principal, std::string(reaped_notes), wake);
      reaped.push_back(row.approval);
    }
    // After the loop: eviction edits approval_order_, which the loop walks.
    if (!reaped.empty()) evict_resolved_locked();
  }
  deliver();
  for (auto& item : wake) item.waiter(item.approval);
  return reaped;
}

void HostState::Impl::evict_resolved_locked() {
  // The longest-resolved rows go first. Constant work per evicted row: a reap that resolves
  // thousands of rows at once (a departing owner) must not turn into a scan per row of every
  // pending row ahead of it, all under the lock, on the loop thread.
  while (resolved_count_ > options_.max_resolved_approvals && !resolved_order_.empty()) {
    auto it = approvals_.find(resolved_order_.front());
    resolved_order_.pop_front();
    if (it == approvals_.end() || it->second->approval.pending()) continue;
    approvals_.erase(it);
    --resolved_count_;
    ++stale_order_entries_;
  }
  // Compact once most of the creation-order list is stale: amortized constant per eviction.
  if (stale_order_entries_ > 64 && stale_order_entries_ * 2 > approval_order_.size()) {
    std::erase_if(approval_order_, [this](const std::string& id) { return !approvals_.contains(id); });
    stale_order_entries_ = 0;
  }
}

std::vector<HostApproval> HostState::Impl::approvals() const {
  std::lock_guard lock(mutex_);
  std::vector<HostApproval> out;
  out.reserve(approval_order_.size());
  for (const auto& id : approval_order_) {
    if (auto it = approvals_.find(id); it != approvals_.end()) out.push_back(it->second->approval);
  }
  return out;
}

std::optional<HostApproval> HostState::Impl::approval(std::string_view approval_id) const {
  std::lock_guard lock(mutex_);
  auto it = approvals_.find(approval_id);
  if (it == approvals_.end()) return std::nullopt;
  return it->second->approval;
}

std::string HostState::Impl::approvals_json() const {
  json::Builder out;
  std::lock_guard lock(mutex_);
  out.begin_array();
  for (const auto& id : approval_order_) {
    if (auto it = approvals_.find(id); it != approvals_.end()) {
      write_json(out, it->second->approval);
    }
  }
  out.end_array();
  return out.take();
}

// ---- subscribers ----

Subscription HostState::Impl::subscribe(std::string client_id,
                                        std::shared_ptr<EventSubscriber> subscriber) {
  Subscription out;
  std::shared_ptr<SubscriberEntry> replaced;
  {
    json::Builder snap;
    std::lock_guard lock(mutex_);
    // Snapshot and registration happen in this one critical section; every event is recorded
    // under the same lock, so each is either in the snapshot or offered to the new entry, never
    // both.
    snap.begin_object().key("subscribed").boolean(true);
    snap.key("agents").begin_array();
    for (const auto& [id, row] : agents_) write_json(snap, row->agent);
    snap.end_array().key("devices").begin_array();
    for (const auto& [id, d] : devices_) write_json(snap, d);
    snap.end_array().key("approvals").begin_array();
    for (const auto& id : approval_order_) {
      if (auto it = approvals_.find(id); it != approvals_.end()) {
        write_json(snap, it->second->approval);
      }
    }
    snap.end_array().key("events").begin_array();
    std::size_t n = std::min(options_.subscribe_backlog, ring_.size());
    for (auto it = ring_.end() - static_cast<std::ptrdiff_t>(n); it != ring_.end(); ++it) {
      snap.raw(it->event_json());
    }
    snap.end_array().key("event_sequence").integer(static_cast<long long>(last_sequence_));
    snap.end_object();
    out.snapshot_json = snap.take();
    out.event_sequence = last_sequence_;

    replaced = detach_locked(client_id);
    auto next = std::make_shared<SubscriberList>(*subscribers_);
    next->push_back(std::make_shared<SubscriberEntry>(std::move(client_id), std::move(subscriber),
                                                      last_sequence_ + 1));
    subscribers_ = std::move(next);
  }
  if (replaced) end_subscriber(*replaced);
  return out;
}

std::shared_ptr<HostState::Impl::SubscriberEntry> HostState::Impl::detach_locked(
    std::string_view client_id) {
  auto it = std::find_if(subscribers_->begin(), subscribers_->end(),
                         [&](const auto& e) { return e->client_id == client_id; });
  if (it == subscribers_->end()) return nullptr;
  auto found = *it;
  found->removed.store(true, std::memory_order_release);
  auto next = std::make_shared<SubscriberList>();
  next->reserve(subscribers_->size() - 1);
  for (const auto& e : *subscribers_) {
    if (e != found) next->push_back(e);
  }
  subscribers_ = std::move(next);
  return found;
}

void HostState::Impl::end_subscriber(SubscriberEntry& entry) {
  try {
    entry.subscriber->ended();
  } catch (...) {
    log_warn("host event subscriber {} threw in ended()", entry.client_id);
  }
}

bool HostState::Impl::unsubscribe(std::string_view client_id) {
  std::shared_ptr<SubscriberEntry> removed;
  {
    std::lock_guard lock(mutex_);
    removed = detach_locked(client_id);
  }
  if (!removed) return false;
  end_subscriber(*removed);
  return true;
}

std::size_t HostState::Impl::subscriber_count() const {
  std::lock_guard lock(mutex_);
  return subscribers_->size();
}

// ---- the public face ----

HostState::HostState(HostStateOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

HostState::~HostState() = default;

const HostStateOptions& HostState::options() const { return impl_->options_; }

Result<HostAgent> HostState::register_agent(std::string_view caller, AgentSpec spec) {
  return impl_->register_agent(caller, std::move(spec));
}

std::optional<Error> HostState::unregister_agent(std::string_view caller,
                                                 std::string_view agent_id) {
  return impl_->unregister_agent(caller, agent_id);
}

Result<HostAgent> HostState::set_status(std::string_view caller, StatusChange change) {
  return impl_->set_status(caller, std::move(change));
}

std::vector<HostAgent> HostState::agents() const {
  return impl_->agents();
}

std::optional<HostAgent> HostState::agent(std::string_view agent_id) const {
  return impl_->agent(agent_id);
}

std::string HostState::agents_json() const {
  return impl_->agents_json();
}

Result<HostDevice> HostState::register_device(std::string_view caller, DeviceSpec spec) {
  return impl_->register_device(caller, std::move(spec));
}

Result<HostDevice> HostState::update_device(std::string_view caller, DeviceUpdate update) {
  return impl_->update_device(caller, std::move(update));
}

std::vector<HostDevice> HostState::devices() const {
  return impl_->devices();
}

std::string HostState::devices_json() const {
  return impl_->devices_json();
}

HostEventRecord HostState::record(EventSpec event) {
  return impl_->record(std::move(event));
}

std::vector<HostEventRecord> HostState::events(std::size_t limit) const {
  return impl_->events(limit);
}

std::string HostState::events_json(std::size_t limit) const {
  return impl_->events_json(limit);
}

std::uint64_t HostState::last_sequence() const {
  return impl_->last_sequence();
}

HostState::Created HostState::create_approval(ApprovalSpec spec, ApprovalWaiter waiter) {
  return impl_->create_approval(std::move(spec), std::move(waiter));
}

void HostState::forget_waiter(std::string_view approval_id, std::uint64_t waiter_id) {
  return impl_->forget_waiter(approval_id, waiter_id);
}

Result<ResolveOutcome> HostState::resolve_approval(std::string_view approval_id, Decision decision,
                                                   std::string_view principal,
                                                   std::optional<std::string> notes) {
  return impl_->resolve_approval(approval_id, decision, principal, std::move(notes));
}

std::vector<HostApproval> HostState::reap_approvals_of(std::string_view client_id) {
  return impl_->reap_approvals_of(client_id);
}

std::vector<HostApproval> HostState::approvals() const {
  return impl_->approvals();
}

std::optional<HostApproval> HostState::approval(std::string_view approval_id) const {
  return impl_->approval(approval_id);
}

std::string HostState::approvals_json() const {
  return impl_->approvals_json();
}

Subscription HostState::subscribe(std::string client_id,
                                  std::shared_ptr<EventSubscriber> subscriber) {
  return impl_->subscribe(std::move(client_id), std::move(subscriber));
}

bool HostState::unsubscribe(std::string_view client_id) {
  return impl_->unsubscribe(client_id);
}

std::size_t HostState::subscriber_count() const {
  return impl_->subscriber_count();
}

}  // namespace car::host
