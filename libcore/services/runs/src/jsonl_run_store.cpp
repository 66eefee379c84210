#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include <fmt/format.h>

#include "car/json.hpp"
#include "car/log.hpp"
#include "car/runs/run_store.hpp"
#include "car/runs/run_trace_reader.hpp"
#include "run_index.hpp"
#include "store_files.hpp"

namespace car::runs {
namespace {

namespace fs = std::filesystem;
using detail::errno_text;
using detail::run_file_name;
using detail::store_component;

// Writes `records` to the run's file with one write(2) in the common case; on failure the file is
// cut back to where it was, so no half line is left behind.
std::optional<std::string> append_records(const fs::path& path,
                                          std::span<const std::string> records) {
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return errno_text(errno);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return errno_text(err);
  }
  std::string buffer;
  std::size_t size = 0;
  for (const auto& r : records) size += r.size() + 1;
  buffer.reserve(size);
  for (const auto& r : records) {
    buffer.append(r);
    buffer.push_back('\n');
  }
  std::string_view rest = buffer;
  std::optional<std::string> failure;
  while (!rest.empty()) {
    ssize_t n = ::write(fd, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      failure = errno_text(errno);
      break;
    }
    rest.remove_prefix(static_cast<std::size_t>(n));
  }
  if (failure && ::ftruncate(fd, st.st_size) != 0) {
    log_warn("run store: could not roll back {}: {}", path.string(), errno_text(errno));
  }
  if (::close(fd) != 0 && !failure) failure = errno_text(errno);
  return failure;
}

class JsonlRunStore final : public RunStore {
 public:
  explicit JsonlRunStore(std::string state_dir)
      : root_((fs::path(state_dir) / "runs").string()), index_(root_) {}

  std::optional<std::string> append(std::string_view agent_id, std::string_view run_id,
                                    std::span<const std::string> records) override {
    fs::path dir = fs::path(root_) / store_component(agent_id);
    std::error_code ec;
    if (fs::create_directories(dir, ec)) {
      // Traces hold prompts and tool output: keep them to the daemon's user.
      ::chmod(root_.c_str(), 0700);
      ::chmod(dir.c_str(), 0700);
    }
    if (ec) return ec.message();
    // The index learns of a run before its file does: a crash in between leaves an entry that
    // find() and list pages recognise as a run that never started.
    const bool starts = !records.empty() && record_kind(records.front()) == "started";
    if (starts) {
      auto trace = parse_trace(records.front());
      if (!trace) return std::string("invalid started record");
      if (auto error = index_.note_started(trace->location, trace->summary)) return error;
    }
    auto failure = append_records(dir / run_file_name(run_id), records);
    if (failure) {
      if (starts) index_.note_removed(agent_id, run_id);
      return failure;
    }
    std::size_t turns = 0;
    for (const auto& r : records) {
      std::string_view kind = record_kind(r);
      if (kind == "turn") {
        turns += 1;
      } else if (kind == "ended") {
        if (turns != 0) index_.note_turns(run_id, turns);
        turns = 0;
        note_ended(agent_id, run_id, r);
      }
    }
    if (turns != 0) index_.note_turns(run_id, turns);
    return std::nullopt;
  }

  std::optional<std::string> sync(std::string_view agent_id, std::string_view run_id) override {
    // The file's data, then the directories that name it — a run created since the last sync has
    // a new entry in its agent directory (and maybe a new agent directory in runs/) — and its
    // by-id index entry, without which a surviving file could not be found. A file or directory
    // with nothing new to write syncs at almost no cost, so there is no bookkeeping of which
    // ones are new.
    fs::path dir = fs::path(root_) / store_component(agent_id);
    if (auto failure = sync_path(dir / run_file_name(run_id), O_WRONLY, false)) return failure;
    if (auto failure = sync_path(dir, O_RDONLY | O_DIRECTORY, true)) return failure;
    if (auto failure = sync_path(fs::path(root_), O_RDONLY | O_DIRECTORY, true)) return failure;
    fs::path entry = index_.entry_path(run_id);
    if (auto failure = sync_path(entry, O_RDONLY, false)) return failure;
    return sync_path(entry.parent_path(), O_RDONLY | O_DIRECTORY, true);
  }

  std::optional<RunLocation> find(std::string_view run_id) override { return index_.find(run_id); }

  std::optional<StoredTrace> read(std::string_view run_id) override {
    auto location = index_.find(run_id);
    if (!location) return std::nullopt;
    auto text = detail::read_whole_file(
        (fs::path(root_) / store_component(location->agent_id) / run_file_name(run_id)).string());
    if (!text) return std::nullopt;
    return parse_trace(*text);
  }

  std::vector<RunSummary> list(std::string_view agent_id) override {
    auto page = index_.page(agent_id, 0, std::nullopt);
    return page ? std::move(page->runs) : std::vector<RunSummary>{};
  }

  std::optional<RunPage> list_page(std::string_view agent_id, std::size_t limit,
                                   std::optional<std::string_view> before) override {
    return index_.page(agent_id, limit, before);
  }

  std::size_t prune(std::optional<std::string_view> agent_id, const RetentionPolicy& policy,
                    const IsOpenRun& is_open, std::chrono::system_clock::time_point now) override {
    return index_.prune(agent_id, policy, is_open, now);
  }

 private:
  void note_ended(std::string_view agent_id, std::string_view run_id, std::string_view record) {
    json::Document doc;
    if (json::parse(record, doc) || !doc.IsObject()) return;
    const json::Value& root = doc;  // const iterators: clang's C++20 != on mutable ones is ambiguous
    auto member = [&root](const char* name) -> std::string_view {
      auto it = root.FindMember(name);
      return it != root.MemberEnd() && it->value.IsString() ? json::view(it->value)
                                                           : std::string_view();
    };
    RunStatus status =
        member("termination") == "outcome" ? RunStatus::completed : RunStatus::incomplete;
    index_.note_ended(agent_id, run_id, status, member("ended_at"));
  }

  static std::optional<std::string> sync_path(const fs::path& path, int flags, bool whole) {
    int fd = ::open(path.c_str(), flags | O_CLOEXEC);
    if (fd < 0) return fmt::format("{}: {}", path.string(), errno_text(errno));
    int rc = whole ? ::fsync(fd) : ::fdatasync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0) return fmt::format("{}: {}", path.string(), errno_text(err));
    return std::nullopt;
  }

  const std::string root_;
  detail::RunIndex index_;
};

}  // namespace

std::shared_ptr<RunStore> make_jsonl_run_store(std::string state_dir) {
  return std::make_shared<JsonlRunStore>(std::move(state_dir));
}

std::string jsonl_run_path(std::string_view state_dir, std::string_view agent_id,
                           std::string_view run_id) {
  return (fs::path(state_dir) / "runs" / store_component(agent_id) / run_file_name(run_id))
      .string();
}

}  // namespace car::runs
