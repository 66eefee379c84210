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

Error event_too_large(std::size_t size, std::size_t limit) {
  return Error{ErrorCode::invalid_params,
               fmt::format("invalid params: host event too large: {} bytes, at most {}", size,
                           limit)};
}

Error too_many(std::string what, std::size_t limit) {
  return Error{ErrorCode::server_busy, fmt::format("too many {}: at most {}", what, limit)};
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
  Result<HostEventRecord> record(EventSpec event);
  std::vector<HostEventRecord> events(std::size_t limit) const;
  std::string events_json(std::size_t limit) const;
  std::uint64_t last_sequence() const;
  Result<HostState::Created> create_approval(ApprovalSpec spec, ApprovalWaiter waiter);
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
  // The HostEvent JSON the next recorded event would have. Built before a change is made, so a
  // change whose event is too large is refused whole (check_event_locked).
  std::string event_body_locked(const EventSpec& event) const;
  std::optional<Error> check_event_locked(const EventSpec& event, std::size_t reserve = 0) const;
  // Records an event unchecked (the server's own events, whose sizes its checks bounded).
  HostEventRecord record_locked(const EventSpec& event);
  HostEventRecord append_locked(std::string body);
  // Agents and devices: makes room for a change of item `keep` from `old_bytes` to `new_bytes`
  // (`adds` when `keep` is a new id) by evicting the longest-registered items whose owner is
  // gone, or says which bound is full.
  std::optional<Error> make_room_for_agent_locked(std::string_view keep, bool adds,
                                                  std::size_t old_bytes, std::size_t new_bytes);
  std::optional<Error> make_room_for_device_locked(std::string_view keep, bool adds,
                                                   std::size_t old_bytes, std::size_t new_bytes);
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
  // Pending-approval accounting (HostStateOptions' bounds): a row stops counting against its
  // requester once resolved or orphaned; orphans beyond their bound are denied oldest first.
  void uncount_pending_locked(ApprovalRow& row);
  void orphan_locked(ApprovalRow& row);
  void evict_orphans_locked(Wakeups& wake);
  void deliver();  // drains the outbox; see the ordering note in host_state.hpp
  // Unlists `client_id`'s subscriber (at most one) and returns it.
  std::shared_ptr<SubscriberEntry> detach_locked(std::string_view client_id);
  // Tells a detached subscriber it was dropped; no lock held.
  static void end_subscriber(SubscriberEntry& entry);

  const HostStateOptions options_;
  WallClock clock_;

  mutable std::mutex mutex_;
  std::map<std::string, std::unique_ptr<AgentRow>, std::less<>> agents_;
  struct DeviceRow {
    HostDevice device;
    std::uint64_t registration = 0;
    std::size_t bytes = 0;
  };
  std::map<std::string, DeviceRow, std::less<>> devices_;
  std::map<std::string, std::unique_ptr<ApprovalRow>, std::less<>> approvals_;
  // Creation order of approvals_. Evicted ids stay behind until a compaction (readers skip ids
  // approvals_ no longer holds), so an eviction never walks or shifts this list.
  std::deque<std::string> approval_order_;
  std::size_t stale_order_entries_ = 0;     // ids in approval_order_ already evicted
  std::deque<std::string> resolved_order_;  // resolution order of the resolved rows kept
  std::size_t resolved_count_ = 0;
  std::uint64_t next_waiter_id_ = 1;

  std::deque<HostEventRecord> ring_;
  std::size_t ring_bytes_ = 0;
  std::uint64_t last_sequence_ = 0;
  std::uint64_t next_registration_ = 1;  // orders agents and devices for eviction

  // Pending rows counted against a live requester, by session and in total; orphans aside.
  std::map<std::string, std::size_t, std::less<>> pending_by_session_;
  std::size_t pending_counted_ = 0;
  std::deque<std::string> orphan_order_;  // may hold ids no longer orphans (skipped)
  std::size_t orphan_count_ = 0;
  // Bytes (row JSON) of the agents, the devices, the counted pending rows and the resolved rows.
  std::size_t agent_bytes_ = 0;
  std::size_t device_bytes_ = 0;
  std::size_t pending_bytes_ = 0;
  std::size_t resolved_bytes_ = 0;

  std::shared_ptr<const SubscriberList> subscribers_;  // copy-on-write
  std::vector<OutboxItem> outbox_;                     // in sequence order
  bool delivering_ = false;
};

struct HostState::Impl::AgentRow {
  HostAgent agent;
  std::uint64_t registration = 0;  // next_registration_ at its last registration
  std::size_t bytes = 0;           // its JSON, in agent_bytes_
  // Pending session-owned approvals that flipped this agent to waiting_for_approval, and the
  // status it had before the first of them.
  std::size_t approvals_waiting = 0;
  AgentStatus status_before_approval = AgentStatus::idle;
};

struct HostState::Impl::ApprovalRow {
  HostApproval approval;
  // The session this pending row counts against (owner or requested_by); none once it no
  // longer counts (resolved, orphaned) or when it never did (a C++ API system-level row).
  std::optional<std::string> counted_for;
  std::optional<std::string> requested_by;
  bool counted = false;  // in pending_counted_
  bool orphan = false;   // in orphan_count_
  std::size_t bytes = 0;  // its JSON: in pending_bytes_ while counted, resolved_bytes_ once resolved
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

std::string HostState::Impl::event_body_locked(const EventSpec& event) const {
  std::uint64_t sequence = last_sequence_ + 1;
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
  return body.take();
}

std::optional<Error> HostState::Impl::check_event_locked(const EventSpec& event,
                                                         std::size_t reserve) const {
  // Cheap pre-check first: a payload alone past the bound need not be serialized again.
  std::size_t limit = options_.max_event_bytes > reserve ? options_.max_event_bytes - reserve : 0;
  if (event.payload_json.size() > limit) return event_too_large(event.payload_json.size(), limit);
  std::size_t size = event_body_locked(event).size();
  if (size > limit) return event_too_large(size, limit);
  return std::nullopt;
}

HostEventRecord HostState::Impl::record_locked(const EventSpec& event) {
  return append_locked(event_body_locked(event));
}

HostEventRecord HostState::Impl::append_locked(std::string body) {
  std::uint64_t sequence = ++last_sequence_;
  HostEventRecord record{sequence, make_frame(jsonrpc::notification("host.event", body))};
  ring_bytes_ += record.frame->size();
  ring_.push_back(record);
  // Bounded by count and by bytes; the newest event always stays (it is within max_event_bytes).
  while (ring_.size() > 1 &&
         (ring_.size() > options_.event_capacity || ring_bytes_ > options_.event_ring_bytes)) {
    ring_bytes_ -= ring_.front().frame->size();
    ring_.pop_front();
  }
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
  // A system flip (approvals) changes the row by a few bytes; the byte bound follows it.
  std::string agent_json = to_json(row.agent);
  agent_bytes_ = agent_bytes_ - row.bytes + agent_json.size();
  row.bytes = agent_json.size();
  // Upstream clients put their own payload on the event and read it back as sent, so a given
  // payload is used verbatim; only without one does the event carry the agent [ext].
  record_locked({"agent.status_changed", row.agent.id,
                 message ? std::move(*message)
                         : fmt::format("agent '{}' is {}", row.agent.id, to_string(status)),
                 payload_json ? std::move(*payload_json) : std::move(agent_json)});
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
    }
    // A registration declares the agent afresh; its runtime state (status, task) carries over
    // when its owner re-registers it or a new session adopts it. Built as a copy first, so a
    // registration too large for its event changes nothing.
    HostAgent a;
    if (it != agents_.end()) {
      a = it->second->agent;
    } else {
      a.id = id;
    }
    a.name = std::move(spec.name);
    a.kind = std::move(spec.kind);
    a.capabilities = std::move(spec.capabilities);
    a.project = std::move(spec.project);
    a.pid = spec.pid;
    a.display_json = std::move(spec.display_json);
    a.metadata_json = spec.metadata_json ? std::move(*spec.metadata_json) : "{}";
    a.session_id = std::string(caller);
    EventSpec event{"agent.registered", id, fmt::format("agent '{}' registered", id), to_json(a)};
    // The reserve leaves room for the status flips the server records with the agent later.
    if (auto e = check_event_locked(event, options_.item_reserve)) return std::move(*e);
    const bool adds = it == agents_.end();
    const std::size_t old_bytes = adds ? 0 : it->second->bytes;
    const std::size_t new_bytes = event.payload_json.size();
    if (auto e = make_room_for_agent_locked(id, adds, old_bytes, new_bytes)) return std::move(*e);
    if (adds) it = agents_.emplace(id, std::make_unique<AgentRow>()).first;
    agent_bytes_ = agent_bytes_ - old_bytes + new_bytes;
    it->second->bytes = new_bytes;
    it->second->agent = a;
    it->second->registration = next_registration_++;
    copy = std::move(a);
    record_locked(event);
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
    agent_bytes_ -= it->second->bytes;
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
    HostAgent after = row.agent;
    after.current_task = std::move(change.current_task);
    after.status = change.status;
    std::string agent_json = to_json(after);
    std::string message =
        change.message ? std::move(*change.message)
                       : fmt::format("agent '{}' is {}", after.id, to_string(after.status));
    // Both the event and the agent it leaves behind (which later events carry) must fit.
    EventSpec as_agent{"agent.status_changed", after.id, message, agent_json};
    if (auto e = check_event_locked(as_agent, options_.item_reserve)) return std::move(*e);
    EventSpec event{"agent.status_changed", after.id, std::move(message),
                    change.payload_json ? std::move(*change.payload_json) : std::move(agent_json)};
    if (change.payload_json) {
      if (auto e = check_event_locked(event)) return std::move(*e);
    }
    const std::size_t new_bytes = as_agent.payload_json.size();
    if (auto e = make_room_for_agent_locked(after.id, false, row.bytes, new_bytes)) {
      return std::move(*e);
    }
    agent_bytes_ = agent_bytes_ - row.bytes + new_bytes;
    row.bytes = new_bytes;
    row.agent = std::move(after);
    record_locked(event);
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

std::optional<Error> HostState::Impl::make_room_for_agent_locked(std::string_view keep,
                                                                 bool adds,
                                                                 std::size_t old_bytes,
                                                                 std::size_t new_bytes) {
  for (;;) {
    const bool count_full = adds && agents_.size() >= options_.max_agents;
    const bool bytes_full = agent_bytes_ - old_bytes + new_bytes > options_.max_agent_bytes;
    if (!count_full && !bytes_full) return std::nullopt;
    // Agents outlive their owner (PROTOCOL.md §4), so only one whose owner is gone may make
    // room: the one registered longest ago. A scan, but only at a bound, and the table is small.
    auto victim = agents_.end();
    for (auto it = agents_.begin(); it != agents_.end(); ++it) {
      if (it->first == keep || live_locked(it->second->agent.session_id)) continue;
      if (victim == agents_.end() || it->second->registration < victim->second->registration) {
        victim = it;
      }
    }
    if (victim == agents_.end()) {
      return count_full ? too_many("host agents", options_.max_agents)
                        : Error{ErrorCode::server_busy,
                                fmt::format("too many host agents: at most {} bytes",
                                            options_.max_agent_bytes)};
    }
    std::string id = victim->first;
    std::string payload = to_json(victim->second->agent);
    agent_bytes_ -= victim->second->bytes;
    agents_.erase(victim);
    record_locked({"agent.unregistered", id,
                   fmt::format("agent '{}' unregistered: its owner is gone and the host is full",
                               id),
                   std::move(payload)});
  }
}

std::optional<Error> HostState::Impl::make_room_for_device_locked(std::string_view keep,
                                                                  bool adds,
                                                                  std::size_t old_bytes,
                                                                  std::size_t new_bytes) {
  for (;;) {
    const bool count_full = adds && devices_.size() >= options_.max_devices;
    const bool bytes_full = device_bytes_ - old_bytes + new_bytes > options_.max_device_bytes;
    if (!count_full && !bytes_full) return std::nullopt;
    auto victim = devices_.end();
    for (auto it = devices_.begin(); it != devices_.end(); ++it) {
      if (it->first == keep || live_locked(it->second.device.session_id)) continue;
      if (victim == devices_.end() || it->second.registration < victim->second.registration) {
        victim = it;
      }
    }
    if (victim == devices_.end()) {
      return count_full ? too_many("host devices", options_.max_devices)
                        : Error{ErrorCode::server_busy,
                                fmt::format("too many host devices: at most {} bytes",
                                            options_.max_device_bytes)};
    }
    std::string id = victim->first;
    std::string payload = to_json(victim->second.device);
    device_bytes_ -= victim->second.bytes;
    devices_.erase(victim);
    // [ext] kind: upstream has no device removal; clients ignore kinds they do not know.
    record_locked({"device.unregistered", std::nullopt,
                   fmt::format("device '{}' unregistered: its owner is gone and the host is full",
                               id),
                   std::move(payload)});
  }
}

// ---- devices ----

Result<HostDevice> HostState::Impl::register_device(std::string_view caller, DeviceSpec spec) {
  std::string id = spec.id ? std::move(*spec.id) : "device-" + uuid_v4();
  HostDevice copy;
  {
    std::lock_guard lock(mutex_);
    auto it = devices_.find(id);
    if (it != devices_.end()) {
      const std::string& owner = it->second.device.session_id;
      if (owner != caller && live_locked(owner)) return owned_by_another("device", id);
    }
    HostDevice d;
    d.id = id;
    d.name = std::move(spec.name);
    d.platform = std::move(spec.platform);
    d.capabilities = std::move(spec.capabilities);
    d.status = std::move(spec.status);
    d.metadata_json = spec.metadata_json ? std::move(*spec.metadata_json) : "{}";
    d.session_id = std::string(caller);
    d.updated_at = now_locked();
    EventSpec event{"device.registered", std::nullopt, fmt::format("device '{}' registered", id),
                    to_json(d)};
    if (auto e = check_event_locked(event)) return std::move(*e);
    const bool adds = it == devices_.end();
    const std::size_t old_bytes = adds ? 0 : it->second.bytes;
    const std::size_t new_bytes = event.payload_json.size();
    if (auto e = make_room_for_device_locked(id, adds, old_bytes, new_bytes)) return std::move(*e);
    if (adds) it = devices_.emplace(id, DeviceRow{}).first;
    device_bytes_ = device_bytes_ - old_bytes + new_bytes;
    it->second.bytes = new_bytes;
    it->second.device = d;
    it->second.registration = next_registration_++;
    copy = std::move(d);
    record_locked(event);
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
    if (it->second.device.session_id != caller) {
      return owned_by_another("device", update.device_id);
    }
    HostDevice d = it->second.device;
    if (update.name) d.name = std::move(*update.name);
    if (update.platform) d.platform = std::move(*update.platform);
    if (update.capabilities) d.capabilities = std::move(*update.capabilities);
    if (update.status) d.status = std::move(*update.status);
    if (update.metadata_json) d.metadata_json = std::move(*update.metadata_json);
    d.updated_at = now_locked();
    EventSpec event{"device.updated", std::nullopt, fmt::format("device '{}' updated", d.id),
                    to_json(d)};
    if (auto e = check_event_locked(event)) return std::move(*e);
    const std::size_t new_bytes = event.payload_json.size();
    if (auto e = make_room_for_device_locked(d.id, false, it->second.bytes, new_bytes)) {
      return std::move(*e);
    }
    device_bytes_ = device_bytes_ - it->second.bytes + new_bytes;
    it->second.bytes = new_bytes;
    it->second.device = d;
    copy = std::move(d);
    record_locked(event);
  }
  deliver();
  return copy;
}

std::vector<HostDevice> HostState::Impl::devices() const {
  std::lock_guard lock(mutex_);
  std::vector<HostDevice> out;
  out.reserve(devices_.size());
  for (const auto& [id, row] : devices_) out.push_back(row.device);
  return out;
}

std::string HostState::Impl::devices_json() const {
  json::Builder out;
  std::lock_guard lock(mutex_);
  out.begin_array();
  for (const auto& [id, row] : devices_) write_json(out, row.device);
  out.end_array();
  return out.take();
}

// ---- events ----

Result<HostEventRecord> HostState::Impl::record(EventSpec event) {
  HostEventRecord record;
  {
    std::lock_guard lock(mutex_);
    if (auto e = check_event_locked(event)) return std::move(*e);
    record = record_locked(event);
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

Result<HostState::Created> HostState::Impl::create_approval(ApprovalSpec spec,
                                                           ApprovalWaiter waiter) {
  Created created;
  std::string id = "approval-" + uuid_v4();
  Wakeups wake;  // orphans denied to make room (their waiters are gone; kept for symmetry)
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
    EventSpec event{"approval.requested", a.agent_id,
                    fmt::format("approval requested: {}", a.action), to_json(a)};
    // The reserve leaves room for the resolution fields its approval.resolved event adds.
    if (auto e = check_event_locked(event, options_.item_reserve)) return std::move(*e);
    const std::optional<std::string>& counted_for = a.client_id ? a.client_id : spec.requested_by;
    if (counted_for) {
      auto n = pending_by_session_.find(*counted_for);
      if (n != pending_by_session_.end() && n->second >= options_.max_pending_per_session) {
        return Error{ErrorCode::server_busy,
                     fmt::format("too many pending approvals: a session may have at most {}",
                                 options_.max_pending_per_session)};
      }
    }
    if (pending_counted_ >= options_.max_pending_approvals) {
      return Error{ErrorCode::server_busy,
                   fmt::format("too many pending approvals: at most {} in total",
                               options_.max_pending_approvals)};
    }
    const std::size_t bytes = event.payload_json.size();
    if (pending_bytes_ + bytes > options_.max_pending_approval_bytes) {
      return Error{ErrorCode::server_busy,
                   fmt::format("too many pending approvals: at most {} bytes",
                               options_.max_pending_approval_bytes)};
    }
    row->counted = true;
    row->bytes = bytes;
    pending_bytes_ += bytes;
    ++pending_counted_;
    if (counted_for) {
      row->counted_for = *counted_for;
      ++pending_by_session_[*counted_for];
    }
    row->requested_by = std::move(spec.requested_by);
    if (waiter) {
      created.waiter_id = next_waiter_id_++;
      row->waiters.emplace_back(created.waiter_id, std::move(waiter));
    }
    created.approval = a;
    record_locked(event);
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
    ApprovalRow& kept = *row;
    approval_order_.push_back(id);
    approvals_.emplace(id, std::move(row));
    // A gate row raised without a waiter has nobody waiting from the start.
    if (kept.requested_by && kept.waiters.empty()) {
      orphan_locked(kept);
      evict_orphans_locked(wake);
      evict_resolved_locked();
    }
  }
  deliver();
  for (auto& item : wake) item.waiter(item.approval);
  return created;
}

void HostState::Impl::uncount_pending_locked(ApprovalRow& row) {
  if (row.counted) {
    row.counted = false;
    --pending_counted_;
    pending_bytes_ -= row.bytes;
  }
  if (row.counted_for) {
    auto n = pending_by_session_.find(*row.counted_for);
    if (n != pending_by_session_.end() && --n->second == 0) pending_by_session_.erase(n);
    row.counted_for.reset();
  }
  if (row.orphan) {
    row.orphan = false;
    --orphan_count_;
  }
}

void HostState::Impl::orphan_locked(ApprovalRow& row) {
  if (row.orphan || !row.approval.pending()) return;
  uncount_pending_locked(row);
  row.orphan = true;
  ++orphan_count_;
  orphan_order_.push_back(row.approval.id);
}

void HostState::Impl::evict_orphans_locked(Wakeups& wake) {
  // Oldest orphan first. Entries of rows resolved meanwhile are skipped as they come up.
  while (orphan_count_ > options_.max_orphan_approvals && !orphan_order_.empty()) {
    auto it = approvals_.find(orphan_order_.front());
    orphan_order_.pop_front();
    if (it == approvals_.end() || !it->second->orphan) continue;
    resolve_row_locked(*it->second, Decision::deny, reaper_principal, std::string(orphan_notes),
                       wake);
  }
  // Stale entries (orphans a host resolved) are compacted away once they dominate.
  if (orphan_order_.size() > 2 * options_.max_orphan_approvals + 64) {
    std::erase_if(orphan_order_, [this](const std::string& id) {
      auto it = approvals_.find(id);
      return it == approvals_.end() || !it->second->orphan;
    });
  }
}

void HostState::Impl::forget_waiter(std::string_view approval_id, std::uint64_t waiter_id) {
  ApprovalWaiter dropped;  // destroyed outside the lock (declared first: outlives the guard)
  Wakeups wake;
  {
    std::lock_guard lock(mutex_);
    auto it = approvals_.find(approval_id);
    if (it == approvals_.end()) return;
    ApprovalRow& row = *it->second;
    auto& waiters = row.waiters;
    for (auto w = waiters.begin(); w != waiters.end(); ++w) {
      if (w->first == waiter_id) {
        dropped = std::move(w->second);
        waiters.erase(w);
        break;
      }
    }
    // Nobody waits for this gate row any more (timed out, or its connection closed): it stays
    // pending (PROTOCOL.md §5.1) but no longer counts against its requester, and only the newest
    // max_orphan_approvals such rows are kept.
    if (row.requested_by && row.waiters.empty() && row.approval.pending()) {
      orphan_locked(row);
      evict_orphans_locked(wake);
      evict_resolved_locked();
    }
  }
  if (!wake.empty()) deliver();
  for (auto& item : wake) item.waiter(item.approval);
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
      // The approval.resolved event carries the row with the caller's notes: it must fit.
      HostApproval after = a;
      after.status = ApprovalStatus::approved;
      after.resolution = decision;
      after.resolved_by = std::string(principal);
      after.resolved_at = now_locked();
      after.notes = notes;
      if (auto e = check_event_locked({"approval.resolved", a.agent_id,
                                       fmt::format("approval '{}' approved", a.id),
                                       to_json(after)})) {
        return std::move(*e);
      }
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
  uncount_pending_locked(row);
  std::string row_json = to_json(a);
  row.bytes = row_json.size();
  resolved_bytes_ += row.bytes;
  ++resolved_count_;
  resolved_order_.push_back(a.id);
  record_locked({"approval.resolved", a.agent_id,
                 fmt::format("approval '{}' {}", a.id, to_string(a.status)),
                 std::move(row_json)});
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
  while ((resolved_count_ > options_.max_resolved_approvals ||
          resolved_bytes_ > options_.max_resolved_approval_bytes) &&
         !resolved_order_.empty()) {
    auto it = approvals_.find(resolved_order_.front());
    resolved_order_.pop_front();
    if (it == approvals_.end() || it->second->approval.pending()) continue;
    resolved_bytes_ -= it->second->bytes;
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
    for (const auto& [id, row] : devices_) write_json(snap, row.device);
    snap.end_array().key("approvals").begin_array();
    for (const auto& id : approval_order_) {
      if (auto it = approvals_.find(id); it != approvals_.end()) {
        write_json(snap, it->second->approval);
      }
    }
    snap.end_array().key("events").begin_array();
    // The newest events that fit the byte budget (at most subscribe_backlog of them): the ring
    // holds up to event_ring_bytes, and each concurrent subscribe would otherwise copy all of it.
    std::size_t n = 0;
    std::size_t bytes = 0;
    for (auto it = ring_.rbegin(); it != ring_.rend() && n < options_.subscribe_backlog; ++it) {
      bytes += it->event_json().size() + 1;
      if (bytes > options_.subscribe_backlog_bytes) break;
      ++n;
    }
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

Result<HostEventRecord> HostState::record(EventSpec event) {
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

Result<HostState::Created> HostState::create_approval(ApprovalSpec spec, ApprovalWaiter waiter) {
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
