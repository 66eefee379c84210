#include "car/token_file.hpp"

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

namespace car {
namespace {

std::string trim(std::string_view s) {
  const char* ws = " \t\r\n\f\v";
  auto begin = s.find_first_not_of(ws);
  if (begin == std::string_view::npos) return {};
  auto end = s.find_last_not_of(ws);
  return std::string(s.substr(begin, end - begin + 1));
}

}  // namespace

TokenResult read_token_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return TokenFileError{fmt::format("cannot read token file {}: {}", path, std::strerror(errno))};
  std::stringstream content;
  content << in.rdbuf();
  std::string token = trim(content.str());
  if (token.empty()) return TokenFileError{fmt::format("token file {} is empty", path)};
  return token;
}

TokenResult load_or_mint_token_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) return read_token_file(path);
  auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) {
    std::filesystem::create_directories(parent, ec);
    if (ec) return TokenFileError{fmt::format("cannot create {}: {}", parent.string(), ec.message())};
    ::chmod(parent.c_str(), 0700);
  }
  std::string token = random_hex(32);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return read_token_file(path);  // another process won the race
    return TokenFileError{fmt::format("cannot create token file {}: {}", path, std::strerror(errno))};
  }
  std::string line = token + "\n";
  bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ok = (::fsync(fd) == 0) && ok;
  ::close(fd);
  if (!ok) return TokenFileError{fmt::format("cannot write token file {}", path)};
  return token;
}

}  // namespace car
