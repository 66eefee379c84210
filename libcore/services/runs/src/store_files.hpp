#pragma once

#include <optional>
#include <string>
#include <string_view>

// Private to the runs layer: the file names of the JSONL store and the few file operations its
// logs and index need (POSIX, no exceptions, errors as errno text). Any thread.
namespace car::runs::detail {

// The path component of an id (encode_path_component, shortened with a SHA-256 when too long).
std::string store_component(std::string_view id);
// `<component>.jsonl`
std::string run_file_name(std::string_view run_id);

// The whole file; nothing when it cannot be opened.
std::optional<std::string> read_whole_file(const std::string& path);
// Up to the first newline, without loading the rest.
std::optional<std::string> read_first_line(const std::string& path);
// Replaces `path` with `content` through a temporary file and rename(2), mode 0600.
std::optional<std::string> replace_file(const std::string& path, std::string_view content);
// Appends `line` and a newline with one write(2), mode 0600 when created. A file whose last byte
// is not a newline (a torn line) first gets one, so the new line stands on its own.
std::optional<std::string> append_line(const std::string& path, std::string_view line);

std::string errno_text(int err);

}  // namespace car::runs::detail
