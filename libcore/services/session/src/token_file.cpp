#include "car/session/token_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "car/detail/hex_value.hpp"
#include "car/random.hpp"

namespace car::session {

std::string trim_token(std::string_view s) {
  const char* ws = " \t\r\n\f\v";
  auto begin = s.find_first_not_of(ws);
  if (begin == std::string_view::npos) return {};
  auto end = s.find_last_not_of(ws);
  return std::string(s.substr(begin, end - begin + 1));
}

TokenResult read_token_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return Error::internal(
        fmt::format("cannot read token file {}: {}", path, std::strerror(errno)));
  }
  std::stringstream content;
  content << in.rdbuf();
  std::string token = trim_token(content.str());
  if (token.empty()) return Error::internal(fmt::format("token file {} is empty", path));
  return token;
}

std::string base64url_unpadded(std::string_view bytes) {
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((bytes.size() * 4 + 2) / 3);
  std::size_t i = 0;
  auto at = [&bytes](std::size_t k) { return static_cast<unsigned char>(bytes[k]); };
  for (; i + 3 <= bytes.size(); i += 3) {
    unsigned v = (at(i) << 16) | (at(i + 1) << 8) | at(i + 2);
    out.push_back(alphabet[(v >> 18) & 63]);
    out.push_back(alphabet[(v >> 12) & 63]);
    out.push_back(alphabet[(v >> 6) & 63]);
    out.push_back(alphabet[v & 63]);
  }
  // The tail: 1 byte => 2 characters, 2 bytes => 3 characters, and no '=' padding.
  if (std::size_t rest = bytes.size() - i; rest > 0) {
    unsigned v = at(i) << 16;
    if (rest == 2) v |= at(i + 1) << 8;
    out.push_back(alphabet[(v >> 18) & 63]);
    out.push_back(alphabet[(v >> 12) & 63]);
    if (rest == 2) out.push_back(alphabet[(v >> 6) & 63]);
  }
  return out;
}

std::string mint_token() {
  // random_hex is the engine's one door to the kernel CSPRNG; decode its hex back to the bytes.
  std::string hex = random_hex(32);
  std::string bytes;
  bytes.reserve(32);
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    bytes.push_back(
        static_cast<char>(detail::hex_value(hex[i]) * 16 + detail::hex_value(hex[i + 1])));
  }
  return base64url_unpadded(bytes);
}

std::optional<Error> write_token_file(const std::string& path, std::string_view token) {
  // mkstemp creates the file 0600 and exclusively, so nobody can open it before the rename.
  std::string temp = path + ".XXXXXX";
  int fd = ::mkostemp(temp.data(), O_CLOEXEC);
  if (fd < 0) {
    return Error::internal(
        fmt::format("cannot create token file {}: {}", path, std::strerror(errno)));
  }
  ::fchmod(fd, 0600);
  std::string line = std::string(token) + "\n";
  bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ok = (::fsync(fd) == 0) && ok;
  ok = (::close(fd) == 0) && ok;
  if (ok) ok = ::rename(temp.c_str(), path.c_str()) == 0;
  if (!ok) {
    int saved = errno;
    ::unlink(temp.c_str());
    return Error::internal(
        fmt::format("cannot write token file {}: {}", path, std::strerror(saved)));
  }
  return std::nullopt;
}

namespace {

constexpr const char* lock_name = "daemon.lock";

// mkdir -p with mode 0700 for every directory it creates; existing ones are left as they are.
std::optional<Error> make_private_dirs(const std::string& dir) {
  for (std::size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    std::string prefix = dir.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0700) == 0) {
      ::chmod(prefix.c_str(), 0700);  // a umask may have taken bits the owner needs
      continue;
    }
    int saved = errno;
    // Some file systems answer EACCES or EROFS for a directory that exists: only a real absence
    // fails here (a non-directory is refused by the caller's check).
    struct stat st {};
    if (saved != EEXIST && ::stat(prefix.c_str(), &st) != 0) {
      return Error::internal(
          fmt::format("cannot create token directory {}: {}", prefix, std::strerror(saved)));
    }
  }
  return std::nullopt;
}

}  // namespace

Result<std::unique_ptr<TokenDirectory>> TokenDirectory::lock(const std::string& dir_in) {
  std::string dir = dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (dir.empty()) return Error::internal("the token directory is empty");
  if (auto error = make_private_dirs(dir)) return *error;
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Error::internal(fmt::format("token directory {} is not a directory", dir));
  }
  // Tokens are secrets: a directory someone else owns could have its files swapped under us.
  if (st.st_uid != ::geteuid()) {
    return Error::internal(
        fmt::format("token directory {} is owned by uid {}, not by this user ({})", dir, st.st_uid,
                    ::geteuid()));
  }
  auto held = PidLockFile::acquire(dir + "/" + lock_name, fmt::format("token directory {}", dir));
  if (!held) return held.error();
  return std::unique_ptr<TokenDirectory>(new TokenDirectory(dir, std::move(held.value())));
}

TokenDirectory::~TokenDirectory() {
  for (const auto& file : minted_) ::unlink(file.c_str());
  lock_.reset();  // then the lock file, and the lock with it
}

std::string TokenDirectory::lock_path() const { return dir_ + "/" + lock_name; }

TokenResult TokenDirectory::mint(std::string_view name) {
  std::string file = dir_ + "/" + std::string(name);
  std::string token = mint_token();
  if (auto error = write_token_file(file, token)) return *error;
  minted_.push_back(file);
  return token;
}

}  // namespace car::session
