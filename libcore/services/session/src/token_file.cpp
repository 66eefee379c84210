#include "car/session/token_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "car/random.hpp"

namespace car::session {
std::string trim_token(std::string_view s) {
  const char* ws = " \t\r\n\f\v";
  auto begin = s.find_first_not_of(ws);
  if (begin == std::string_view::npos) return {};
  auto end = s.find_last_not_of(ws);
  return std::string(s.substr(begin, end - begin + 1));
}

namespace {

// Writes a fresh token into `path` (mode 0600): exclusively created, or — `replace` — written
// to a private temporary file that is then renamed over `path`.
TokenResult mint_token_file(const std::string& path, bool replace) {
  std::string token = random_hex(32);
  std::string target = replace ? path + ".new" : path;
  int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (replace ? O_TRUNC : O_EXCL);
  int fd = ::open(target.c_str(), flags, 0600);
  if (fd < 0) {
    if (!replace && errno == EEXIST) return read_token_file(path);  // another process won
    return Error::internal(fmt::format("cannot create token file {}: {}", target, std::strerror(errno)));
  }
  ::fchmod(fd, 0600);
  std::string line = token + "\n";
  bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ok = (::fsync(fd) == 0) && ok;
  ::close(fd);
  if (ok && replace) ok = ::rename(target.c_str(), path.c_str()) == 0;
  if (!ok) return Error::internal(fmt::format("cannot write token file {}", path));
  return token;
}

}  // namespace

TokenResult read_token_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error::internal(fmt::format("cannot read token file {}: {}", path, std::strerror(errno)));
  std::stringstream content;
  content << in.rdbuf();
  std::string token = trim_token(content.str());
  if (token.empty()) return Error::internal(fmt::format("token file {} is empty", path));
  return token;
}

TokenResult load_or_mint_token_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    auto existing = read_token_file(path);
    if (existing) return existing;
    // Readable but empty (or only whitespace): it holds no token, so one is minted in its place
    // (PROTOCOL.md §9: "if there is none"). An unreadable file is reported, never overwritten.
    std::ifstream in(path, std::ios::binary);
    if (!in || !std::filesystem::is_regular_file(path, ec)) return existing;
    return mint_token_file(path, true);
  }
  auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) {
    std::filesystem::create_directories(parent, ec);
    if (ec) return Error::internal(fmt::format("cannot create {}: {}", parent.string(), ec.message()));
    ::chmod(parent.c_str(), 0700);
  }
  return mint_token_file(path, false);
}

}  // namespace car::session
