// Token files (token_file.hpp): minted 0600 with 64 hex characters, reused, trimmed on read
// (PROTOCOL.md §3).
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "../../../test_support.hpp"

using namespace car;
using namespace car::session;

TEST_SUITE("token_file") {
  TEST_CASE("token files: minted 0600 with 64 hex chars, then reused; read trims") {
    auto dir = std::filesystem::temp_directory_path() / ("carcore-token-" + random_hex(6));
    auto path = (dir / "nested" / "auth-token").string();
    auto minted = load_or_mint_token_file(path);
    REQUIRE(minted.ok());
    const auto& token = minted.value();
    CHECK(token.size() == 64);
    CHECK(token.find_first_not_of("0123456789abcdef") == std::string::npos);
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    auto again = load_or_mint_token_file(path);
    CHECK(again.value() == token);
    auto spaced = (dir / "spaced").string();
    std::ofstream(spaced) << "  tok en \n\n";
    CHECK(read_token_file(spaced).value() == "tok en");
    std::ofstream(dir / "empty") << " \n";
    CHECK_FALSE(read_token_file((dir / "empty").string()).ok());
    CHECK_FALSE(read_token_file((dir / "missing").string()).ok());
    // An empty token file holds no token: load_or_mint replaces it with a minted one (0600).
    auto empty = (dir / "empty").string();
    ::chmod(empty.c_str(), 0644);
    auto replaced = load_or_mint_token_file(empty);
    REQUIRE(replaced.ok());
    CHECK(replaced.value().size() == 64);
    CHECK(read_token_file(empty).value() == replaced.value());
    REQUIRE(::stat(empty.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    CHECK(trim_token("\t tok \n") == "tok");
    std::filesystem::remove_all(dir);
  }
}
