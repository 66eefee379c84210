// The credential helpers of auth.hpp: constant-time comparison (PROTOCOL.md §3).
#include "../../../test_support.hpp"

using namespace car::session;

TEST_SUITE("auth") {
  TEST_CASE("constant_time_equal") {
    CHECK(constant_time_equal("abc", "abc"));
    CHECK_FALSE(constant_time_equal("abc", "abd"));
    CHECK_FALSE(constant_time_equal("abc", "abcd"));
    CHECK(constant_time_equal("", ""));
  }
}
