#pragma once

#include <memory>
#include <string>

#include "car/export.hpp"
#include "car/result.hpp"

// A file that one process at a time holds: an exclusive `flock` on it, and its text is the
// holder's pid, so that a second process can say who is in the way. The daemon holds one in its
// token directory (`daemon.lock`, PROTOCOL.md §9) and one in its state directory (`state.lock`),
// so two daemons never mint over each other's tokens or append to the same run logs.
namespace car::session {

class CAR_API PidLockFile {
 public:
  // Opens (creating, mode 0600, never following a symlink) and locks `path`, then writes this
  // process's pid into it. Fails at once, without waiting, when another process holds the lock:
  // the message then names `what` (e.g. "state directory /x"), the holder's pid and the path.
  static Result<std::unique_ptr<PidLockFile>> acquire(const std::string& path,
                                                      const std::string& what);

  PidLockFile(const PidLockFile&) = delete;
  PidLockFile& operator=(const PidLockFile&) = delete;
  // Removes the file, then releases the lock (in that order: see acquire's retry).
  ~PidLockFile();

  const std::string& path() const { return path_; }

 private:
  PidLockFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}

  std::string path_;
  int fd_ = -1;
};

}  // namespace car::session
