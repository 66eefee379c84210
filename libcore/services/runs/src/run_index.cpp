#include "run_index.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "car/json.hpp"
#include "car/log.hpp"
#include "car/runs/run_trace_reader.hpp"
#include "store_files.hpp"

namespace car::runs::detail {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view format_version = "1\n";
// A by-id entry is written just before its run's first line; younger than this, an entry without
// its file is taken for a start still in progress.
constexpr long stale_entry_seconds = 60;

std::string string_member(const json::Value& v, const char* name) {
  auto it = v.FindMember(name);
  if (it == v.MemberEnd() || !it->value.IsString()) return {};
  return std::string(json::view(it->value));
}

std::string start_line(const RunSummary& s) {
  json::Builder b;
  b.begin_object();
  b.key("op").str("start");
  b.key("run_id").str(s.run_id);
  b.key("agent_id").str(s.agent_id);
  b.key("intent").str(s.intent);
  b.key("started_at").str(s.started_at);
  b.end_object();
  return b.take();
}

std::string end_line(const RunSummary& s) {
  json::Builder b;
  b.begin_object();
  b.key("op").str("end");
  b.key("run_id").str(s.run_id);
  b.key("status").str(to_string(s.status));
  b.key("ended_at").str(s.ended_at.value_or(""));
  b.key("turns").integer(static_cast<long long>(s.turn_count));
  b.end_object();
  return b.take();
}

std::string drop_line(std::string_view run_id) {
  json::Builder b;
  b.begin_object();
  b.key("op").str("drop");
  b.key("run_id").str(run_id);
  b.end_object();
  return b.take();
}

std::string location_text(const RunLocation& l) {
  json::Builder b;
  b.begin_object();
  b.key("run_id").str(l.run_id);
  b.key("agent_id").str(l.agent_id);
  b.key("client_id").str(l.client_id);
  b.end_object();
  return b.take();
}

bool is_index_dir_name(const std::string& name) { return !name.empty() && name[0] == '.'; }

void make_private_dir(const fs::path& dir) {
  std::error_code ec;
  if (fs::create_directories(dir, ec)) ::chmod(dir.c_str(), 0700);
}

}  // namespace

RunIndex::RunIndex(std::string runs_root) : root_(std::move(runs_root)) {}

std::string RunIndex::agent_dir(const std::string& key) const {
  return (fs::path(root_) / key).string();
}
std::string RunIndex::log_path(const std::string& key) const {
  return (fs::path(root_) / key / ".summaries").string();
}
std::string RunIndex::by_id_path(std::string_view run_id) const {
  return (fs::path(root_) / ".index" / "by-id" / store_component(run_id)).string();
}

// ---- readiness and rebuilds ----

void RunIndex::ensure_ready_locked() {
  if (ready_) return;
  const fs::path marker = fs::path(root_) / ".index" / "format";
  if (auto text = read_whole_file(marker.string()); text && *text == format_version) {
    ready_ = true;
    return;
  }
  std::error_code ec;
  bool had_root = fs::is_directory(root_, ec);
  if (!had_root) {
    if (!fs::create_directories(root_, ec) || ec) return;  // no state dir: calls fall back
    ::chmod(root_.c_str(), 0700);
  }
  make_private_dir(fs::path(root_) / ".index" / "by-id");
  if (had_root) rebuild_all_locked();
  if (!replace_file(marker.string(), format_version)) ready_ = true;
}

void RunIndex::rebuild_all_locked() {
  full_rebuilds_ += 1;
  agents_.clear();
  lru_.clear();
  std::size_t agents = 0;
  std::size_t runs = 0;
  std::error_code ec;
  for (fs::directory_iterator it(root_, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code type_ec;
    std::string name = it->path().filename().string();
    if (is_index_dir_name(name) || !it->is_directory(type_ec)) continue;
    runs += rebuild_agent_locked(name).by_start.size();
    agents += 1;
  }
  if (runs != 0) {
    log_info("run store: index rebuilt from {} run file(s) of {} agent(s)", runs, agents);
  }
}

RunIndex::AgentRuns RunIndex::rebuild_agent_locked(const std::string& key) {
  agent_rebuilds_ += 1;
  AgentRuns runs;
  std::string log;
  std::error_code ec;
  for (fs::directory_iterator it(agent_dir(key), ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& p = it->path();
    if (p.extension() != ".jsonl") continue;
    auto text = read_whole_file(p.string());
    if (!text) continue;
    auto trace = parse_trace(*text);
    if (!trace) continue;
    // The file must be where its own ids say it is, or find() could not verify it.
    if (store_component(trace->location.agent_id) != key ||
        p.filename().string() != run_file_name(trace->location.run_id)) {
      continue;
    }
    (void)replace_file(by_id_path(trace->location.run_id), location_text(trace->location));
    Entry entry{trace->summary, trace->location.ended};
    log += start_line(entry.summary) + "\n";
    runs.lines += 1;
    if (entry.ended) {
      log += end_line(entry.summary) + "\n";
      runs.lines += 1;
    }
    std::string id = entry.summary.run_id;
    runs.started_at_of[id] = entry.summary.started_at;
    runs.by_start[{entry.summary.started_at, id}] = std::move(entry);
  }
  // An agent directory without runs needs no log (so a store of many empty directories is
  // indexed without writing a file for each).
  std::error_code exists_ec;
  if (log.empty() && !fs::exists(log_path(key), exists_ec)) return runs;
  if (auto error = replace_file(log_path(key), log)) {
    log_warn("run store: could not write the summaries of {}: {}", key, *error);
  }
  return runs;
}

RunIndex::AgentRuns RunIndex::load_agent_locked(const std::string& key) {
  auto text = read_whole_file(log_path(key));
  if (!text) {
    std::error_code ec;
    if (!fs::is_directory(agent_dir(key), ec)) return {};  // no runs at all
    return rebuild_agent_locked(key);
  }
  AgentRuns runs;
  std::string_view rest = *text;
  while (!rest.empty()) {
    auto nl = rest.find('\n');
    const bool last = nl == std::string_view::npos;
    std::string_view line = rest.substr(0, nl);
    rest.remove_prefix(last ? rest.size() : nl + 1);
    if (line.empty()) continue;
    runs.lines += 1;
    json::Document doc;
    bool ok = !json::parse(line, doc) && doc.IsObject();
    std::string op = ok ? string_member(doc, "op") : std::string();
    std::string id = ok ? string_member(doc, "run_id") : std::string();
    if (id.empty() || (op != "start" && op != "end" && op != "drop")) {
      if (last) break;  // torn by a crash mid-append: that line never happened
      log_warn("run store: summaries of {} are corrupt; rebuilding them from the run files", key);
      return rebuild_agent_locked(key);
    }
    auto known = runs.started_at_of.find(id);
    if (op == "start") {
      if (known != runs.started_at_of.end()) runs.by_start.erase({known->second, id});
      Entry entry;
      entry.summary.run_id = id;
      entry.summary.agent_id = string_member(doc, "agent_id");
      entry.summary.intent = string_member(doc, "intent");
      entry.summary.started_at = string_member(doc, "started_at");
      runs.started_at_of[id] = entry.summary.started_at;
      runs.by_start[{entry.summary.started_at, id}] = std::move(entry);
    } else if (known != runs.started_at_of.end()) {
      if (op == "drop") {
        runs.by_start.erase({known->second, id});
        runs.started_at_of.erase(known);
        continue;
      }
      Entry& entry = runs.by_start[{known->second, id}];
      entry.ended = true;
      std::string status = string_member(doc, "status");
      entry.summary.status = status == "completed" ? RunStatus::completed : RunStatus::incomplete;
      entry.summary.ended_at = string_member(doc, "ended_at");
      const json::Value& object = doc;  // const iterators (clang: C++20 reversed != is ambiguous)
      auto turns = object.FindMember("turns");
      if (turns != object.MemberEnd() && turns->value.IsUint64()) {
        entry.summary.turn_count = static_cast<std::size_t>(turns->value.GetUint64());
      }
    }
  }
  return runs;
}

RunIndex::AgentRuns* RunIndex::cached_locked(const std::string& key) {
  auto it = agents_.find(key);
  if (it != agents_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return &it->second.runs;
  }
  AgentRuns runs = load_agent_locked(key);
  lru_.push_front(key);
  auto& cached = agents_[key];
  cached.runs = std::move(runs);
  cached.lru = lru_.begin();
  while (agents_.size() > max_cached_agents) {
    agents_.erase(lru_.back());
    lru_.pop_back();
  }
  return &cached.runs;
}

void RunIndex::compact_locked(const std::string& key, AgentRuns& runs) {
  if (runs.lines <= 2 * runs.by_start.size() + 64) return;
  std::string log;
  std::size_t lines = 0;
  for (const auto& [k, entry] : runs.by_start) {
    log += start_line(entry.summary) + "\n";
    lines += 1;
    if (entry.ended) {
      log += end_line(entry.summary) + "\n";
      lines += 1;
    }
  }
  if (!replace_file(log_path(key), log)) runs.lines = lines;
}

void RunIndex::drop_locked(const std::string& key, AgentRuns& runs, const std::string& run_id) {
  auto known = runs.started_at_of.find(run_id);
  if (known == runs.started_at_of.end()) return;
  runs.by_start.erase({known->second, run_id});
  runs.started_at_of.erase(known);
  if (!append_line(log_path(key), drop_line(run_id))) runs.lines += 1;
}

// ---- writes ----

std::optional<std::string> RunIndex::note_started(const RunLocation& location,
                                                  const RunSummary& summary) {
  std::lock_guard lock(mutex_);
  ensure_ready_locked();
  const std::string key = store_component(location.agent_id);
  if (auto error = replace_file(by_id_path(location.run_id), location_text(location))) {
    return error;
  }
  if (auto error = append_line(log_path(key), start_line(summary))) return error;
  if (auto it = agents_.find(key); it != agents_.end()) {
    AgentRuns& runs = it->second.runs;
    runs.lines += 1;
    if (auto known = runs.started_at_of.find(summary.run_id); known != runs.started_at_of.end()) {
      runs.by_start.erase({known->second, summary.run_id});
    }
    runs.started_at_of[summary.run_id] = summary.started_at;
    runs.by_start[{summary.started_at, summary.run_id}] = Entry{summary, false};
  }
  open_turns_[summary.run_id] = 0;
  return std::nullopt;
}

void RunIndex::note_turns(std::string_view run_id, std::size_t count) {
  std::lock_guard lock(mutex_);
  auto it = open_turns_.find(std::string(run_id));
  if (it != open_turns_.end()) it->second += count;
}

void RunIndex::note_ended(std::string_view agent_id, std::string_view run_id, RunStatus status,
                          std::string_view ended_at) {
  const std::string key = store_component(agent_id);
  const std::string id(run_id);
  std::optional<std::size_t> turns;
  {
    std::lock_guard lock(mutex_);
    if (auto it = open_turns_.find(id); it != open_turns_.end()) {
      turns = it->second;
      open_turns_.erase(it);
    }
  }
  RunSummary summary;
  if (!turns) {
    // Not started by this process (an embedder's own writes): count from the file, once.
    auto text = read_whole_file(agent_dir(key) + "/" + run_file_name(run_id));
    auto trace = text ? parse_trace(*text) : std::nullopt;
    if (!trace) return;
    summary = trace->summary;
  }
  std::lock_guard lock(mutex_);
  ensure_ready_locked();
  AgentRuns* cached = nullptr;
  if (auto it = agents_.find(key); it != agents_.end()) cached = &it->second.runs;
  if (turns) {
    summary.run_id = id;
    summary.turn_count = *turns;
  }
  summary.status = status;
  summary.ended_at = std::string(ended_at);
  if (auto error = append_line(log_path(key), end_line(summary))) {
    log_warn("run store: could not log the end of run {}: {}", id, *error);
    return;  // a page reads the run's file instead
  }
  if (cached) {
    cached->lines += 1;
    if (auto known = cached->started_at_of.find(id); known != cached->started_at_of.end()) {
      Entry& entry = cached->by_start[{known->second, id}];
      entry.ended = true;
      entry.summary.status = status;
      entry.summary.ended_at = summary.ended_at;
      entry.summary.turn_count = summary.turn_count;
    }
  }
}

void RunIndex::note_removed(std::string_view agent_id, std::string_view run_id) {
  std::lock_guard lock(mutex_);
  const std::string key = store_component(agent_id);
  const std::string id(run_id);
  open_turns_.erase(id);
  ::unlink(by_id_path(run_id).c_str());
  if (auto it = agents_.find(key); it != agents_.end()) {
    drop_locked(key, it->second.runs, id);
  } else {
    (void)append_line(log_path(key), drop_line(run_id));
  }
}

// ---- reads ----

namespace {

// The identity of the run in `path` from its first line — the daemon's files always start with
// `started` — or, when that line is damaged, from the whole file as every reader sees it.
std::optional<StoredTrace> started_of(const std::string& path) {
  auto line = read_first_line(path);
  if (!line) return std::nullopt;
  if (auto trace = parse_trace(*line)) return trace;
  auto text = read_whole_file(path);
  return text ? parse_trace(*text) : std::nullopt;
}

}  // namespace

std::optional<RunLocation> RunIndex::verify(std::string_view run_id, std::string_view agent_id) {
  auto trace = started_of(agent_dir(store_component(agent_id)) + "/" + run_file_name(run_id));
  if (!trace || trace->location.run_id != run_id) return std::nullopt;
  trace->location.ended = false;  // find() reports identity only
  return trace->location;
}

std::optional<RunLocation> RunIndex::scan_for(std::string_view run_id) {
  // The slow path of a damaged entry: every agent directory, once, then the entry is repaired.
  const std::string name = run_file_name(run_id);
  std::error_code ec;
  for (fs::directory_iterator it(root_, ec), end; !ec && it != end; it.increment(ec)) {
    std::string dir = it->path().filename().string();
    if (is_index_dir_name(dir)) continue;
    auto trace = started_of((it->path() / name).string());
    if (!trace || trace->location.run_id != run_id) continue;
    (void)replace_file(by_id_path(run_id), location_text(trace->location));
    trace->location.ended = false;
    return trace->location;
  }
  // Nowhere: a start that never got its `started` line written (crash, full disk). An entry
  // this young may belong to a start still writing, so only an old one is removed.
  struct stat st {};
  const std::string entry = by_id_path(run_id);
  if (::stat(entry.c_str(), &st) == 0 && st.st_mtime + stale_entry_seconds < ::time(nullptr)) {
    ::unlink(entry.c_str());
  }
  return std::nullopt;
}

std::optional<RunLocation> RunIndex::find(std::string_view run_id) {
  std::optional<std::string> entry;
  {
    std::lock_guard lock(mutex_);
    ensure_ready_locked();
    if (!ready_) return std::nullopt;  // no state directory: nothing is stored
    entry = read_whole_file(by_id_path(run_id));
  }
  if (!entry) return std::nullopt;  // the common miss: one failed open
  json::Document doc;
  std::string agent_id;
  if (!json::parse(*entry, doc) && doc.IsObject() && string_member(doc, "run_id") == run_id) {
    agent_id = string_member(doc, "agent_id");
  }
  if (!agent_id.empty()) {
    if (auto found = verify(run_id, agent_id)) return found;
    // No file where the entry points: a start still writing it (or one that just failed). A
    // young entry is therefore a plain miss — so pipelined starts and lookups of the same keys
    // cannot make anyone pay a scan; an old one is scanned for once, then removed.
    struct stat st {};
    std::string file = agent_dir(store_component(agent_id)) + "/" + run_file_name(run_id);
    if (::stat(file.c_str(), &st) != 0 && ::stat(by_id_path(run_id).c_str(), &st) == 0 &&
        st.st_mtime + stale_entry_seconds >= ::time(nullptr)) {
      return std::nullopt;
    }
  }
  // Damaged, or left by a start that never wrote its file: one scan settles it and repairs it.
  log_warn("run store: index entry of run {} does not match the run files; repairing it", run_id);
  return scan_for(run_id);
}

std::optional<RunPage> RunIndex::page(std::string_view agent_id, std::size_t limit,
                                      std::optional<std::string_view> before) {
  const std::string key = store_component(agent_id);
  RunPage page;
  std::vector<std::size_t> unended;  // positions in page.runs whose files tell the rest
  {
    std::lock_guard lock(mutex_);
    ensure_ready_locked();
    AgentRuns* runs = cached_locked(key);
    auto it = runs->by_start.end();
    if (before) {
      auto known = runs->started_at_of.find(std::string(*before));
      if (known == runs->started_at_of.end()) return std::nullopt;
      it = runs->by_start.find({known->second, known->first});
    }
    while (it != runs->by_start.begin()) {
      if (limit != 0 && page.runs.size() == limit) {
        page.next_before = page.runs.back().run_id;
        break;
      }
      --it;
      const Entry& entry = it->second;
      page.runs.push_back(entry.summary);
      if (entry.ended) continue;
      if (auto open = open_turns_.find(entry.summary.run_id); open != open_turns_.end()) {
        page.runs.back().turn_count = open->second;
      } else {
        unended.push_back(page.runs.size() - 1);
      }
    }
  }
  // Runs without a logged end that are not open here (a crash, or an end not yet logged): their
  // files say what they are. At most one page of them, read outside the lock.
  std::vector<bool> gone(page.runs.size(), false);
  for (std::size_t i : unended) {
    RunSummary& s = page.runs[i];
    auto text = read_whole_file(agent_dir(key) + "/" + run_file_name(s.run_id));
    auto trace = text ? parse_trace(*text) : std::nullopt;
    if (!trace || trace->location.run_id != s.run_id) {
      gone[i] = true;  // logged but never written (a crash between the two)
      continue;
    }
    s = std::move(trace->summary);
  }
  if (!unended.empty()) {
    std::vector<RunSummary> kept;
    for (std::size_t i = 0; i < page.runs.size(); ++i) {
      if (!gone[i]) kept.push_back(std::move(page.runs[i]));
    }
    page.runs = std::move(kept);
  }
  return page;
}

// ---- retention ----

std::size_t RunIndex::prune(std::optional<std::string_view> agent_id,
                            const RetentionPolicy& policy, const IsOpenRun& is_open,
                            std::chrono::system_clock::time_point now) {
  if (policy.max_runs_per_agent == 0 && policy.max_age_days == 0) return 0;
  if (agent_id) return prune_agent(store_component(*agent_id), policy, is_open, now);
  {
    std::lock_guard lock(mutex_);
    ensure_ready_locked();
  }
  std::size_t removed = 0;
  std::error_code ec;
  for (fs::directory_iterator it(root_, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    std::error_code type_ec;
    if (is_index_dir_name(name) || !it->is_directory(type_ec)) continue;
    removed += prune_agent(name, policy, is_open, now);
  }
  return removed;
}

std::size_t RunIndex::prune_agent(const std::string& key, const RetentionPolicy& policy,
                                  const IsOpenRun& is_open,
                                  std::chrono::system_clock::time_point now) {
  std::string cutoff;
  if (policy.max_age_days != 0) {
    cutoff = format_timestamp(now - std::chrono::hours(24) * policy.max_age_days);
  }
  std::vector<std::string> candidates;
  {
    std::lock_guard lock(mutex_);
    ensure_ready_locked();
    auto it = agents_.find(key);
    AgentRuns local;
    AgentRuns& runs = it != agents_.end() ? it->second.runs : (local = load_agent_locked(key));
    std::size_t remaining = runs.by_start.size();
    for (const auto& [start, entry] : runs.by_start) {  // oldest first
      bool over = policy.max_runs_per_agent != 0 && remaining > policy.max_runs_per_agent;
      bool old = !cutoff.empty() && start.first < cutoff;
      if (!over && !old) break;  // everything after is newer, and within the count
      remaining -= 1;  // open runs are kept and do not count towards the limit
      if (open_turns_.count(start.second) != 0) continue;  // open in this process
      candidates.push_back(start.second);
    }
  }
  std::erase_if(candidates, [&](const std::string& id) { return is_open && is_open(id); });
  if (candidates.empty()) return 0;
  std::lock_guard lock(mutex_);
  auto it = agents_.find(key);
  AgentRuns local;
  AgentRuns& runs = it != agents_.end() ? it->second.runs : (local = load_agent_locked(key));
  std::size_t removed = 0;
  for (const auto& id : candidates) {
    if (open_turns_.count(id) != 0) continue;  // restarted meanwhile under the same key
    std::string file = agent_dir(key) + "/" + run_file_name(id);
    if (::unlink(file.c_str()) != 0 && errno != ENOENT) {
      log_warn("run store: could not prune run {}: {}", id, errno_text(errno));
      continue;
    }
    ::unlink(by_id_path(id).c_str());
    drop_locked(key, runs, id);
    removed += 1;
  }
  compact_locked(key, runs);
  return removed;
}

std::size_t RunIndex::full_rebuilds() const {
  std::lock_guard lock(mutex_);
  return full_rebuilds_;
}

std::size_t RunIndex::agent_rebuilds() const {
  std::lock_guard lock(mutex_);
  return agent_rebuilds_;
}

}  // namespace car::runs::detail
