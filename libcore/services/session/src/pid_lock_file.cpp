#include "car/session/pid_lock_file.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string_view>
#include <thread>

#include <fmt/format.h>

#include "car/session/token_file.hpp"

namespace car::session {
namespace {

// The holder's pid as written in the lock file. The holder writes it right after locking, so an
// empty file is retried for a bounded 200 ms before the pid is reported as unknown.
std::string read_holder_pid(int fd) {
  for (int attempt = 0; attempt < 20; ++attempt) {
    char buf[32] = {};
    ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    std::string pid = n > 0 ? trim_token(std::string_view(buf, static_cast<std::size_t>(n))) : "";
    if (!pid.empty()) return pid;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return "unknown";
}

}  // namespace

Result<std::unique_ptr<PidLockFile>> PidLockFile::acquire(const std::string& path,
                                                          const std::string& what) {
  // A holder removes the file at shutdown. If it does so between our open and our flock, we would
  // hold a lock on a file nobody else can find: detect that (the path names another inode, or
  // none) and start again. Bounded: each retry needs another process to come and go.
  for (int attempt = 0; attempt < 16; ++attempt) {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
      return Error::internal(
          fmt::format("cannot open lock file {}: {}", path, std::strerror(errno)));
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      int saved = errno;
      if (saved == EWOULDBLOCK) {
        std::string pid = read_holder_pid(fd);
        ::close(fd);
        return Error::internal(
            fmt::format("{} is in use by another daemon (pid {}, lock {})", what, pid, path));
      }
      ::close(fd);
      return Error::internal(fmt::format("cannot lock {}: {}", path, std::strerror(saved)));
    }
    struct stat held {};
    struct stat named {};
    if (::fstat(fd, &held) == 0 && ::stat(path.c_str(), &named) == 0 &&
        held.st_dev == named.st_dev && held.st_ino == named.st_ino) {
      std::string pid = fmt::format("{}\n", ::getpid());
      bool ok = ::ftruncate(fd, 0) == 0;
      ok = ok && ::pwrite(fd, pid.data(), pid.size(), 0) == static_cast<ssize_t>(pid.size());
      if (!ok) {
        int saved = errno;
        ::close(fd);
        return Error::internal(
            fmt::format("cannot write lock file {}: {}", path, std::strerror(saved)));
      }
      return std::unique_ptr<PidLockFile>(new PidLockFile(path, fd));
    }
    ::close(fd);
  }
  return Error::internal(fmt::format("cannot lock {}: it keeps being replaced", path));
}

PidLockFile::~PidLockFile() {
  // Unlink before unlocking: a process that opened the old inode and locks it after our close
  // sees that the path no longer names it and retries (see acquire()).
  ::unlink(path_.c_str());
  ::close(fd_);
}

}  // namespace car::session
