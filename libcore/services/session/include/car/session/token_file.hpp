#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "car/error.hpp"
#include "car/export.hpp"
#include "car/result.hpp"
#include "car/session/pid_lock_file.hpp"

// Token files (PROTOCOL.md §9). A token read from a file has surrounding whitespace trimmed. A
// minted token is 32 random bytes as 43 characters of unpadded base64url, written to a file of
// mode 0600 inside a token directory that one process at a time holds locked.
namespace car::session {

// The token, or an Error whose message names the file and what went wrong.
using TokenResult = Result<std::string>;

// `text` without surrounding whitespace (how every token the daemon is given is read).
CAR_API std::string trim_token(std::string_view text);

// Reads and trims the token in `path`. An empty token is an error.
CAR_API TokenResult read_token_file(const std::string& path);

// `bytes` as unpadded base64url (RFC 4648 §5: `-` and `_`, no `=`).
CAR_API std::string base64url_unpadded(std::string_view bytes);

// A fresh secret from the kernel's CSPRNG: 32 random bytes as 43 base64url characters.
CAR_API std::string mint_token();

// Writes `token` and a newline to `path` with mode 0600. The text goes to a private temporary file
// beside it first, which is then renamed over `path`, so a reader sees the old file or the whole
// new one, and a symlink planted at `path` is replaced rather than followed.
CAR_API std::optional<Error> write_token_file(const std::string& path, std::string_view token);

// A token directory held exclusively by this process: `flock` on `<dir>/daemon.lock`, whose text
// is the holder's pid. Minted token files are removed, and the lock released, when the object is
// destroyed (a graceful shutdown); after a crash they stay behind until the next holder overwrites
// them.
class CAR_API TokenDirectory {
 public:
  // Creates `dir` and any missing parents (mode 0700) and takes the lock. Fails when `dir` is not
  // a directory owned by this user, or when another process holds the lock — then the message
  // names that process's pid, read from the lock file.
  static Result<std::unique_ptr<TokenDirectory>> lock(const std::string& dir);

  TokenDirectory(const TokenDirectory&) = delete;
  TokenDirectory& operator=(const TokenDirectory&) = delete;
  ~TokenDirectory();

  const std::string& path() const { return dir_; }
  std::string lock_path() const;

  // Mints a token into `<dir>/<name>` (write_token_file) and remembers the file for removal.
  // Returns the token; the file's path is `path() + "/" + name`.
  TokenResult mint(std::string_view name);

 private:
  TokenDirectory(std::string dir, std::unique_ptr<PidLockFile> lock)
      : dir_(std::move(dir)), lock_(std::move(lock)) {}

  std::string dir_;
  std::unique_ptr<PidLockFile> lock_;
  std::vector<std::string> minted_;
};

}  // namespace car::session
