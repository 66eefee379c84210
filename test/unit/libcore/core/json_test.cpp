// The JSON helpers of json.hpp: rewriting unpaired UTF-16 surrogate escapes (PROTOCOL.md §2).
#include "../../test_support.hpp"

using namespace car;

TEST_SUITE("json") {
  TEST_CASE("replace_lone_surrogate_escapes touches only unpaired escapes inside strings") {
    using json::replace_lone_surrogate_escapes;
    CHECK_FALSE(replace_lone_surrogate_escapes(R"({"a":"\ud83d\ude00"})").has_value());  // a pair
    CHECK_FALSE(replace_lone_surrogate_escapes(R"({"a":"\\ud83d"})").has_value());  // a backslash
    CHECK_FALSE(replace_lone_surrogate_escapes(R"({"a":"\u00e9 \"\ud8"})").has_value());
    CHECK(replace_lone_surrogate_escapes(R"({"a":"\ud83d"})") == std::string(R"({"a":"\uFFFD"})"));
    CHECK(replace_lone_surrogate_escapes(R"(["\ude00\ud800x","\\","\udbff"])") ==
          std::string(R"(["\uFFFD\uFFFDx","\\","\uFFFD"])"));
    // Keys are strings too; text outside strings is left alone (the parser reports it).
    CHECK(replace_lone_surrogate_escapes(R"({"\ud800":1} \ud800)") ==
          std::string(R"({"\uFFFD":1} \ud800)"));
  }
}
