// Token files (token_file.hpp, PROTOCOL.md §9): reading trims, minted tokens are 43 characters of
// unpadded base64url written 0600, and a token directory is held by one process at a time.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "../../../test_support.hpp"

using namespace car;
using namespace car::session;

namespace {

std::filesystem::path fresh_dir() {
  return std::filesystem::temp_directory_path() / ("carcore-token-" + random_hex(6));
}

std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

unsigned mode_of(const std::filesystem::path& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_mode & 0777;
}

}  // namespace

TEST_SUITE("token_file") {
  TEST_CASE("read_token_file trims; empty and missing files are errors") {
    auto dir = fresh_dir();
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "spaced") << "  tok en \n\n";
    CHECK(read_token_file((dir / "spaced").string()).value() == "tok en");
    std::ofstream(dir / "empty") << " \n";
    auto empty = read_token_file((dir / "empty").string());
    REQUIRE_FALSE(empty.ok());
    CHECK(empty.error().message.find("is empty") != std::string::npos);
    auto missing = read_token_file((dir / "missing").string());
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.error().message.find("cannot read token file") != std::string::npos);
    CHECK(trim_token("\t tok \n") == "tok");
    CHECK(trim_token(" \n ").empty());
    std::filesystem::remove_all(dir);
  }

  TEST_CASE("base64url without padding (RFC 4648 test vectors, URL-safe alphabet)") {
    CHECK(base64url_unpadded("") == "");
    CHECK(base64url_unpadded("f") == "Zg");
    CHECK(base64url_unpadded("fo") == "Zm8");
    CHECK(base64url_unpadded("foo") == "Zm9v");
    CHECK(base64url_unpadded("foob") == "Zm9vYg");
    CHECK(base64url_unpadded("fooba") == "Zm9vYmE");
    CHECK(base64url_unpadded("foobar") == "Zm9vYmFy");
    // Standard base64 would say "+/8=": the URL-safe alphabet has '-' and '_' and no '='.
    CHECK(base64url_unpadded(std::string("\xfb\xff", 2)) == "-_8");
  }

  TEST_CASE("a minted token is 32 random bytes as 43 base64url characters, fresh every time") {
    auto a = mint_token();
    auto b = mint_token();
    CHECK(a.size() == 43);
    CHECK(a.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ==
          std::string::npos);
    CHECK(a != b);
    // 32 bytes = 256 bits; 43 characters carry 258, so the last character holds 4 bits of data
    // and 2 zero bits: it is one of the 16 characters whose value is a multiple of 4.
    CHECK(std::string("AEIMQUYcgkosw048").find(a.back()) != std::string::npos);
  }

  TEST_CASE("write_token_file writes 0600, replaces an old file and a planted symlink") {
    auto dir = fresh_dir();
    std::filesystem::create_directories(dir);
    auto path = dir / "auth-token";
    std::ofstream(path) << "old\n";
    ::chmod(path.c_str(), 0644);
    REQUIRE_FALSE(write_token_file(path.string(), "tok-1").has_value());
    CHECK(slurp(path) == "tok-1\n");
    CHECK(mode_of(path) == 0600);
    // A symlink at the path is replaced, never written through.
    std::ofstream(dir / "victim") << "keep\n";
    std::filesystem::remove(path);
    std::filesystem::create_symlink(dir / "victim", path);
    REQUIRE_FALSE(write_token_file(path.string(), "tok-2").has_value());
    CHECK_FALSE(std::filesystem::is_symlink(path));
    CHECK(slurp(path) == "tok-2\n");
    CHECK(slurp(dir / "victim") == "keep\n");
    // No temporary file is left beside it.
    int entries = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++entries;
    CHECK(entries == 2);
    // A directory that does not exist: an error naming the file.
    auto failed = write_token_file((dir / "no" / "such").string(), "t");
    REQUIRE(failed.has_value());
    CHECK(failed->message.find("cannot create token file") != std::string::npos);
    std::filesystem::remove_all(dir);
  }

  TEST_CASE("a token directory: created 0700, locked with the pid, files minted 0600 and removed") {
    auto root = fresh_dir();
    auto dir = root / "a" / "ai.parslee.car";
    std::string auth_token;
    {
      auto locked = TokenDirectory::lock(dir.string() + "/");
      REQUIRE_MESSAGE(locked.ok(), (locked.ok() ? "" : locked.error().message));
      auto& held = locked.value();
      CHECK(held->path() == dir.string());
      CHECK(mode_of(dir) == 0700);
      CHECK(mode_of(root / "a") == 0700);
      CHECK(slurp(held->lock_path()) == std::to_string(::getpid()) + "\n");
      CHECK(mode_of(held->lock_path()) == 0600);

      auto minted = held->mint("auth-token");
      REQUIRE(minted.ok());
      auth_token = minted.value();
      CHECK(auth_token.size() == 43);
      CHECK(slurp(dir / "auth-token") == auth_token + "\n");
      CHECK(mode_of(dir / "auth-token") == 0600);
      auto host = held->mint("host-token");
      REQUIRE(host.ok());
      CHECK(host.value() != auth_token);

      // A second holder is refused while the first lives (flock locks belong to the open file, so
      // this conflicts even within one process), and the message names the holder's pid.
      auto second = TokenDirectory::lock(dir.string());
      REQUIRE_FALSE(second.ok());
      CHECK(second.error().message.find("in use by another daemon (pid " +
                                        std::to_string(::getpid())) != std::string::npos);
      CHECK(second.error().message.find(dir.string()) != std::string::npos);
    }
    // Destroyed (a graceful shutdown): the minted files and the lock file are gone...
    CHECK_FALSE(std::filesystem::exists(dir / "auth-token"));
    CHECK_FALSE(std::filesystem::exists(dir / "host-token"));
    CHECK_FALSE(std::filesystem::exists(dir / "daemon.lock"));
    CHECK(std::filesystem::is_directory(dir));
    // ...and the next holder gets the directory and mints a different token.
    {
      auto again = TokenDirectory::lock(dir.string());
      REQUIRE(again.ok());
      auto minted = again.value()->mint("auth-token");
      REQUIRE(minted.ok());
      CHECK(minted.value() != auth_token);
    }
    std::filesystem::remove_all(root);
  }

  TEST_CASE("a token directory that exists keeps its mode; a file in its place is refused") {
    auto root = fresh_dir();
    std::filesystem::create_directories(root);
    ::chmod(root.c_str(), 0750);
    {
      auto locked = TokenDirectory::lock(root.string());
      REQUIRE(locked.ok());
      CHECK(mode_of(root) == 0750);
    }
    std::ofstream(root / "plain") << "x";
    auto refused = TokenDirectory::lock((root / "plain").string());
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().message.find("is not a directory") != std::string::npos);
    auto under_file = TokenDirectory::lock((root / "plain" / "sub").string());
    REQUIRE_FALSE(under_file.ok());
    CHECK(under_file.error().message.find("cannot create token directory") != std::string::npos);
    CHECK_FALSE(TokenDirectory::lock("").ok());
    std::filesystem::remove_all(root);
  }
}
