#include "store_files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <openssl/evp.h>

#include "car/runs/run_record.hpp"

namespace car::runs::detail {
namespace {

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

std::optional<std::string> write_all(int fd, std::string_view rest) {
  while (!rest.empty()) {
    ssize_t n = ::write(fd, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_text(errno);
    rest.remove_prefix(static_cast<std::size_t>(n));
  }
  return std::nullopt;
}

}  // namespace

std::string errno_text(int err) { return std::strerror(err); }

std::string store_component(std::string_view id) {
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

std::string run_file_name(std::string_view run_id) { return store_component(run_id) + ".jsonl"; }

std::optional<std::string> read_whole_file(const std::string& path) {
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

std::optional<std::string> replace_file(const std::string& path, std::string_view content) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return errno_text(errno);
  auto failure = write_all(fd, content);
  if (::close(fd) != 0 && !failure) failure = errno_text(errno);
  if (!failure && ::rename(tmp.c_str(), path.c_str()) != 0) failure = errno_text(errno);
  if (failure) ::unlink(tmp.c_str());
  return failure;
}

std::optional<std::string> append_line(const std::string& path, std::string_view line) {
  int fd = ::open(path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return errno_text(errno);
  std::string buffer;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && st.st_size > 0) {
    char last = '\n';
    if (::pread(fd, &last, 1, st.st_size - 1) == 1 && last != '\n') buffer.push_back('\n');
  }
  buffer.append(line);
  buffer.push_back('\n');
  auto failure = write_all(fd, buffer);
  if (::close(fd) != 0 && !failure) failure = errno_text(errno);
  return failure;
}

}  // namespace car::runs::detail
