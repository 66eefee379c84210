#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>

#include <openssl/evp.h>

#include "car/log.hpp"
#include "car/runs/run_store.hpp"

namespace car::runs {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view extension = ".jsonl";

// File names are limited (NAME_MAX, 255 bytes) and %XX triples non-ASCII bytes, so a 128-character
// idempotency key can need 1536 bytes. Such names keep an encoded prefix and end in '~' plus a
// SHA-256 of the id: '~' never appears in an encoded component, so short and long names cannot
// collide, and the full ids live in the `started` record anyway.
constexpr std::size_t max_component = 200;

std::string sha256_hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr);
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < length; ++i) {
    out.push_back(hex[digest[i] >> 4]);
    out.push_back(hex[digest[i] & 0xF]);
  }
  return out;
}

std::string component(std::string_view id) {
  std::string encoded = encode_path_component(id);
  if (encoded.size() <= max_component) return encoded;
  std::size_t cut = max_component - 65;
  // Do not split a %XX triple.
  if (encoded[cut - 1] == '%') {
    cut -= 1;
  } else if (encoded[cut - 2] == '%') {
    cut -= 2;
  }
  encoded.resize(cut);
  encoded.push_back('~');
  encoded.append(sha256_hex(id));
  return encoded;
}

std::string file_name(std::string_view run_id) { return component(run_id) + std::string(extension); }

std::string errno_text(int err) { return std::strerror(err); }

// Reads a whole file; nothing when it cannot be opened.
std::optional<std::string> read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string out;
  char buffer[65536];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

// Reads up to the first newline (the `started` record) without loading the whole file.
std::optional<std::string> read_first_line(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string out;
  char buffer[4096];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    std::string_view chunk(buffer, static_cast<std::size_t>(n));
    auto nl = chunk.find('\n');
    out.append(chunk.substr(0, nl));
    if (nl != std::string_view::npos) break;
  }
  ::close(fd);
  return out;
}

std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    if (!line.empty()) lines.push_back(line);
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return lines;
}

bool parse_object(std::string_view line, json::Document& doc) {
  return !json::parse(line, doc) && doc.IsObject() && doc.HasMember("record") &&
         doc["record"].IsString();
}

std::string string_member(const json::Value& v, const char* name) {
  auto it = v.FindMember(name);
  if (it == v.MemberEnd() || !it->value.IsString()) return {};
  return std::string(json::view(it->value));
}

// Fills location/summary fields from a parsed `started` record. False if it is not one.
bool apply_started(const json::Document& doc, RunLocation& loc, RunSummary& summary) {
  if (json::view(doc["record"]) != "started") return false;
  loc.run_id = string_member(doc, "run_id");
  loc.agent_id = string_member(doc, "agent_id");
  loc.client_id = string_member(doc, "client_id");
  summary.run_id = loc.run_id;
  summary.agent_id = loc.agent_id;
  summary.intent = string_member(doc, "intent");
  summary.started_at = string_member(doc, "started_at");
  return !loc.run_id.empty();
}

void apply_ended(const json::Document& doc, RunLocation& loc, RunSummary& summary) {
  loc.ended = true;
  summary.ended_at = string_member(doc, "ended_at");
  summary.status = string_member(doc, "termination") == "outcome" ? RunStatus::completed
                                                                   : RunStatus::incomplete;
}

class JsonlRunStore final : public RunStore {
 public:
  explicit JsonlRunStore(std::string state_dir)
      : root_((fs::path(state_dir) / "runs").string()) {}

  std::optional<std::string> append(std::string_view agent_id, std::string_view run_id,
                                    std::span<const std::string> records) override {
    fs::path dir = fs::path(root_) / component(agent_id);
    std::error_code ec;
    if (fs::create_directories(dir, ec)) {
      // Traces hold prompts and tool output: keep them to the daemon's user.
      ::chmod(root_.c_str(), 0700);
      ::chmod(dir.c_str(), 0700);
    }
    if (ec) return ec.message();
    fs::path path = dir / file_name(run_id);
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
    // One write(2) for the whole call in the common case; loop on short writes.
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
    if (failure) {
      // Leave no half line behind: the next append must start on a line of its own.
      if (::ftruncate(fd, st.st_size) != 0) {
        log_warn("run store: could not roll back {}: {}", path.string(), errno_text(errno));
      }
    }
    if (::close(fd) != 0 && !failure) failure = errno_text(errno);
    return failure;
  }

  std::optional<std::string> sync(std::string_view agent_id, std::string_view run_id) override {
    // The file's data, then the directories that name it: a run created since the last sync has
    // a new entry in its agent directory (and maybe a new agent directory in runs/). fsync of a
    // directory with nothing new to write is cheap, so no bookkeeping of which ones are new.
    fs::path dir = fs::path(root_) / component(agent_id);
    fs::path path = dir / file_name(run_id);
    if (auto failure = sync_path(path, O_WRONLY, false)) return failure;
    if (auto failure = sync_path(dir, O_RDONLY | O_DIRECTORY, true)) return failure;
    return sync_path(fs::path(root_), O_RDONLY | O_DIRECTORY, true);
  }

  std::optional<RunLocation> find(std::string_view run_id) override {
    auto path = locate(run_id);
    if (!path) return std::nullopt;
    auto line = read_first_line(*path);
    if (!line) return std::nullopt;
    json::Document doc;
    RunLocation loc;
    RunSummary summary;
    if (!parse_object(*line, doc) || !apply_started(doc, loc, summary)) return std::nullopt;
    return loc;
  }

  std::optional<StoredTrace> read(std::string_view run_id) override {
    auto path = locate(run_id);
    if (!path) return std::nullopt;
    auto text = read_file(*path);
    if (!text) return std::nullopt;
    StoredTrace trace;
    bool started = false;
    for (std::string_view line : split_lines(*text)) {
      json::Document doc;
      if (!parse_object(line, doc)) continue;  // torn or corrupt: skipped
      std::string_view kind = json::view(doc["record"]);
      if (!started) {
        if (!apply_started(doc, trace.location, trace.summary)) return std::nullopt;
        started = true;
      } else if (kind == "turn") {
        if (trace.location.ended) continue;
        trace.summary.turn_count += 1;
      } else if (kind == "ended") {
        if (trace.location.ended) continue;
        apply_ended(doc, trace.location, trace.summary);
      } else {
        continue;
      }
      trace.records.emplace_back(line);
    }
    if (!started) return std::nullopt;
    return trace;
  }

  std::vector<RunSummary> list(std::string_view agent_id) override {
    std::vector<RunSummary> out;
    fs::path dir = fs::path(root_) / component(agent_id);
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      const fs::path& p = it->path();
      if (p.extension() != extension) continue;
      if (auto s = summarize(p.string())) out.push_back(std::move(*s));
    }
    return out;
  }

 private:
  // The run's file, searched under every agent directory (a run id is unique across agents).
  std::optional<std::string> locate(std::string_view run_id) const {
    std::string name = file_name(run_id);
    std::error_code ec;
    for (fs::directory_iterator it(root_, ec), end; !ec && it != end; it.increment(ec)) {
      std::error_code type_ec;
      if (!it->is_directory(type_ec)) continue;
      fs::path candidate = it->path() / name;
      if (fs::is_regular_file(candidate, type_ec)) return candidate.string();
    }
    return std::nullopt;
  }

  // A summary without parsing every turn: the first line (started), the turn lines counted by
  // their tag, and the last line parsed in full (it may be torn by a crash).
  static std::optional<RunSummary> summarize(const std::string& path) {
    auto text = read_file(path);
    if (!text) return std::nullopt;
    auto lines = split_lines(*text);
    if (lines.empty()) return std::nullopt;
    json::Document first;
    RunLocation loc;
    RunSummary summary;
    if (!parse_object(lines[0], first) || !apply_started(first, loc, summary)) return std::nullopt;
    std::size_t last = lines.size() - 1;
    bool last_valid = true;
    if (last > 0) {
      json::Document doc;
      last_valid = parse_object(lines[last], doc);
      if (last_valid && json::view(doc["record"]) == "ended") apply_ended(doc, loc, summary);
    }
    for (std::size_t i = 1; i < lines.size(); ++i) {
      if (i == last && !last_valid) break;
      if (record_kind(lines[i]) == "turn") summary.turn_count += 1;
    }
    return summary;
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
};

}  // namespace

std::shared_ptr<RunStore> make_jsonl_run_store(std::string state_dir) {
  return std::make_shared<JsonlRunStore>(std::move(state_dir));
}

std::string jsonl_run_path(std::string_view state_dir, std::string_view agent_id,
                           std::string_view run_id) {
  return (fs::path(state_dir) / "runs" / component(agent_id) / file_name(run_id)).string();
}

}  // namespace car::runs
