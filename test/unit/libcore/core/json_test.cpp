// The JSON helpers of json.hpp: rewriting unpaired UTF-16 surrogate escapes (PROTOCOL.md §2) and
// refusing text that a raw NUL byte would cut short.
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

  TEST_CASE("a raw NUL byte anywhere is a parse error, not the end of the text") {
    using namespace std::string_literals;
    json::Document doc;
    CHECK_FALSE(json::parse(R"({"a":1})", doc, 64).has_value());
    // After a complete value: RapidJSON alone would stop at the NUL and call it a success.
    auto after = json::parse("{\"a\":1}\0garbage"s, doc, 64);
    REQUIRE(after.has_value());
    CHECK(*after == "NUL byte at offset 7");
    CHECK(json::parse("{\"a\":1}  \0"s, doc, 64).has_value());  // even with nothing after it
    CHECK(json::parse("{\"a\":\"x\0y\"}"s, doc, 64).has_value());  // inside a string
    CHECK(json::parse("{\"a\":\0 1}"s, doc, 64).has_value());      // between tokens
    CHECK(json::parse("\0"s, doc, 64).has_value());
  }
}
