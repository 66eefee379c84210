#include "car/fleet/fleet_index.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "car/json.hpp"

namespace car::fleet {

namespace {

std::optional<std::string> string_member(const json::Document& doc, const char* name) {
  auto it = doc.FindMember(name);
  if (it == doc.MemberEnd() || !it->value.IsString()) return std::nullopt;
  return std::string(json::view(it->value));
}

}  // namespace

FleetIndex::FleetIndex(FleetIndexLimits limits) : limits_(limits) {}

FleetIndex::RunKey FleetIndex::key_of(std::string_view host_id, std::string_view run_id) {
  return fmt::format("{}:{}{}", host_id.size(), host_id, run_id);
}

bool FleetIndex::apply(const FleetRecord& record) {
  auto host = hosts_.find(std::string(record.host_id));
  if (host == hosts_.end()) {
    if (hosts_.size() >= limits_.max_hosts) {
      ++records_ignored_;
      return false;
    }
    host = hosts_.emplace(std::string(record.host_id), FleetHost{std::string(record.host_id)}).first;
  }
  RunKey key = key_of(record.host_id, record.run_id);
  auto it = runs_.find(key);
  if (it == runs_.end()) {
    if (limits_.max_runs == 0) {
      ++records_ignored_;
      return false;
    }
    while (runs_.size() >= limits_.max_runs && evict_oldest()) {
    }
    FleetRun run;
    run.host_id = std::string(record.host_id);
    run.agent_id = std::string(record.agent_id);
    run.run_id = std::string(record.run_id);
    run.first_sequence = record.stream_sequence;
    it = runs_.emplace(key, std::move(run)).first;
    by_first_sequence_.emplace(record.stream_sequence, key);
    by_agent_[it->second.agent_id].emplace(it->second.started_at, key);
    by_run_id_[it->second.run_id].insert(key);
    host->second.runs_seen += 1;
  }
  FleetRun& run = it->second;
  if (record.offset < run.next_offset) {
    ++records_ignored_;  // a duplicate: already applied
    return false;
  }
  if (record.offset > run.next_offset) ++offset_gaps_;
  run.next_offset = record.offset + 1;
  run.records += 1;
  run.last_sequence = record.stream_sequence;
  host->second.records_seen += 1;
  host->second.last_record_ns = std::max(host->second.last_record_ns, record.stored_at_ns);
  ++records_applied_;

  std::string_view kind = runs::record_kind(record.json);
  if (kind == "turn") {
    run.turn_count += 1;
    return true;
  }
  json::Document doc;
  if (json::parse(record.json, doc) || !doc.IsObject()) return true;  // counted, not described
  if (kind == "started") {
    auto& agent_runs = by_agent_[run.agent_id];
    agent_runs.erase({run.started_at, key});
    run.intent = string_member(doc, "intent").value_or("");
    run.started_at = string_member(doc, "started_at").value_or("");
    agent_runs.emplace(run.started_at, key);
  } else if (kind == "ended") {
    run.ended_at = string_member(doc, "ended_at");
    run.status = string_member(doc, "termination") == std::optional<std::string>("outcome")
                     ? runs::RunStatus::completed
                     : runs::RunStatus::incomplete;
  }
  return true;
}

void FleetIndex::unlink(const RunKey& key, const FleetRun& run) {
  if (auto a = by_agent_.find(run.agent_id); a != by_agent_.end()) {
    a->second.erase({run.started_at, key});
    if (a->second.empty()) by_agent_.erase(a);
  }
  if (auto r = by_run_id_.find(run.run_id); r != by_run_id_.end()) {
    r->second.erase(key);
    if (r->second.empty()) by_run_id_.erase(r);
  }
}

bool FleetIndex::evict_oldest() {
  // Every indexed run has exactly one entry here, so this ends once the table is empty.
  while (!by_first_sequence_.empty()) {
    auto oldest = by_first_sequence_.begin();
    RunKey key = oldest->second;
    by_first_sequence_.erase(oldest);
    auto it = runs_.find(key);
    if (it == runs_.end()) continue;  // not expected; never loop on it
    evict(it);
    return true;
  }
  return false;
}

void FleetIndex::evict(std::unordered_map<RunKey, FleetRun>::iterator it) {
  const RunKey key = it->first;
  if (auto host = hosts_.find(it->second.host_id); host != hosts_.end()) {
    host->second.runs_evicted += 1;
  }
  unlink(key, it->second);
  runs_.erase(it);
  ++runs_evicted_;
}

Result<FleetRunPage> FleetIndex::list(std::string_view agent_id,
                                      std::optional<std::string_view> host_id,
                                      std::optional<std::size_t> limit,
                                      std::optional<std::string_view> before) const {
  FleetRunPage page;
  auto agent = by_agent_.find(std::string(agent_id));
  if (agent == by_agent_.end()) {
    if (before) {
      return Error(ErrorCode::invalid_params, fmt::format("unknown run '{}' for 'before'", *before));
    }
    return page;
  }
  const auto& ordered = agent->second;
  auto it = ordered.rbegin();
  if (before) {
    // The run `before` names, among this agent's runs (on host_id when given).
    it = std::find_if(ordered.rbegin(), ordered.rend(), [&](const auto& entry) {
      const FleetRun& run = runs_.at(entry.second);
      return run.run_id == *before && (!host_id || run.host_id == *host_id);
    });
    if (it == ordered.rend()) {
      return Error(ErrorCode::invalid_params, fmt::format("unknown run '{}' for 'before'", *before));
    }
    ++it;
  }
  for (; it != ordered.rend(); ++it) {
    const FleetRun& run = runs_.at(it->second);
    if (host_id && run.host_id != *host_id) continue;
    if (limit && page.runs.size() == *limit) {
      page.next_before = page.runs.back().run_id;
      break;
    }
    page.runs.push_back(run);
  }
  return page;
}

std::vector<FleetRun> FleetIndex::find(std::string_view run_id,
                                       std::optional<std::string_view> host_id) const {
  std::vector<FleetRun> found;
  auto keys = by_run_id_.find(std::string(run_id));
  if (keys == by_run_id_.end()) return found;
  for (const RunKey& key : keys->second) {
    const FleetRun& run = runs_.at(key);
    if (!host_id || run.host_id == *host_id) found.push_back(run);
  }
  return found;
}

std::vector<FleetHost> FleetIndex::hosts() const {
  std::vector<FleetHost> out;
  out.reserve(hosts_.size());
  for (const auto& [id, host] : hosts_) out.push_back(host);
  return out;
}

std::vector<std::pair<std::string, bool>> FleetIndex::agents() const {
  std::vector<std::pair<std::string, bool>> out;
  out.reserve(by_agent_.size());
  for (const auto& [agent, ordered] : by_agent_) {
    bool open = std::any_of(ordered.begin(), ordered.end(), [&](const auto& entry) {
      return runs_.at(entry.second).status == runs::RunStatus::in_progress;
    });
    out.emplace_back(agent, open);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace car::fleet
