#include "export_cursors.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "car/log.hpp"
#include "car/nats/subjects.hpp"

namespace car::nats::detail {

namespace fs = std::filesystem;

std::string ExportCursors::path_of(std::string_view run_id) const {
  return (fs::path(dir_) / encode_subject_token(run_id)).string();
}

const std::map<std::string, std::uint64_t>& ExportCursors::load() {
  loaded_.clear();
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    std::string name = entry.path().filename().string();
    if (name.size() > 4 && name.substr(name.size() - 4) == ".tmp") {
      fs::remove(entry.path(), ec);  // a write a crash interrupted; the old cursor is intact
      continue;
    }
    auto run_id = decode_subject_token(name);
    std::ifstream in(entry.path());
    std::string text;
    std::getline(in, text);
    std::uint64_t offset = 0;
    auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), offset);
    if (!run_id) {
      log_warn("nats exporter: ignoring cursor file {} (not a run cursor)", entry.path().string());
      continue;
    }
    if (err != std::errc() || end != text.data() + text.size()) {
      // A run's cursor whose text did not survive (e.g. empty after a power loss: cursors are
      // renamed into place but not fsynced): start the run over. Message ids make the republish
      // a no-op within the duplicate window, and readers ignore offsets they already have.
      log_warn("nats exporter: cursor file {} is unreadable; exporting that run from its start",
               entry.path().string());
      offset = 0;
    }
    cursors_[*run_id] = Cursor{offset, offset, std::chrono::steady_clock::now()};
    loaded_[*run_id] = offset;
  }
  if (ec) log_warn("nats exporter: cannot list cursors in {}: {}", dir_, ec.message());
  return loaded_;
}

std::optional<std::uint64_t> ExportCursors::next(std::string_view run_id) const {
  auto it = cursors_.find(run_id);
  if (it == cursors_.end()) return std::nullopt;
  return it->second.next;
}

std::optional<std::string> ExportCursors::set(std::string_view run_id, std::uint64_t next_offset,
                                              bool durable) {
  auto now = std::chrono::steady_clock::now();
  auto it = cursors_.find(run_id);
  if (it == cursors_.end()) {
    it = cursors_.emplace(std::string(run_id), Cursor{next_offset, next_offset, now}).first;
    return write(it->first, it->second);  // a new run's file exists before its first publish
  }
  it->second.next = next_offset;
  if (it->second.written == next_offset) return std::nullopt;
  if (!durable && now - it->second.written_at < write_interval) return std::nullopt;
  return write(it->first, it->second);
}

void ExportCursors::flush() {
  for (auto& [run_id, cursor] : cursors_) {
    if (cursor.written != cursor.next) {
      if (auto error = write(run_id, cursor)) log_warn("nats exporter: {}", *error);
    }
  }
}

std::optional<std::string> ExportCursors::write(const std::string& run_id, Cursor& cursor) {
  cursor.written_at = std::chrono::steady_clock::now();
  std::string path = path_of(run_id);
  std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "w");
  if (f == nullptr) return fmt::format("cannot write cursor {}: {}", tmp, std::strerror(errno));
  std::string text = fmt::format("{}\n", cursor.next);
  bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return fmt::format("cannot write cursor {}: {}", path, std::strerror(errno));
  }
  cursor.written = cursor.next;
  return std::nullopt;
}

void ExportCursors::finish(std::string_view run_id) {
  auto it = cursors_.find(run_id);
  if (it != cursors_.end()) cursors_.erase(it);
  std::remove(path_of(run_id).c_str());
}

}  // namespace car::nats::detail
