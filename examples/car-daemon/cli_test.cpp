// car-daemon command-line parsing (PROTOCOL.md §9).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "cli.hpp"

using namespace car::daemon;

namespace {

Options parse_ok(std::vector<std::string> args) {
  auto result = parse_command_line(args);
  REQUIRE_MESSAGE(std::holds_alternative<Options>(result),
                  (std::holds_alternative<CliError>(result) ? std::get<CliError>(result).message : ""));
  return std::get<Options>(result);
}

std::string parse_error(std::vector<std::string> args) {
  auto result = parse_command_line(args);
  REQUIRE(std::holds_alternative<CliError>(result));
  return std::get<CliError>(result).message;
}

}  // namespace

TEST_SUITE("cli") {
  TEST_CASE("defaults") {
    auto o = parse_ok({});
    CHECK(o.listen.empty());
    CHECK_FALSE(o.stdio);
    CHECK_FALSE(o.no_auth);
    CHECK_FALSE(o.drain_on_loop);
    CHECK(o.log_level == car::LogLevel::info);
  }

  TEST_CASE("every flag of the spec parses") {
    auto o = parse_ok({"--listen", "127.0.0.1:0", "--listen=[::1]:9100", "--unix", "/tmp/s",
                       "--stdio", "--stdio-framing", "content-length", "--token", "t",
                       "--host-token-file", "/h", "--agent-token", "a1=x=y", "--agent-id", "bot",
                       "--state-dir", "/s", "--approval-method", "m1", "--approval-method=m2",
                       "--approval-timeout", "5", "--grace-ms", "10", "--tool-timeout", "7",
                       "--drain-timeout-ms", "100", "--ping-interval-ms", "500",
                       "--allow-origin", "http://a", "--max-message", "4096",
                       "--max-connections", "3", "--threads", "2", "--log-level", "debug",
                       "--drain-on-loop"});
    REQUIRE(o.listen.size() == 2);
    CHECK(o.listen[0].host == "127.0.0.1");
    CHECK(o.listen[0].port == 0);
    CHECK(o.listen[1].host == "::1");
    CHECK(o.listen[1].port == 9100);
    CHECK(o.unix_paths == std::vector<std::string>{"/tmp/s"});
    CHECK(o.stdio_framing == StdioFramingOption::content_length);
    CHECK(*o.token == "t");
    CHECK(*o.host_token_file == "/h");
    REQUIRE(o.agent_tokens.size() == 1);
    CHECK(o.agent_tokens[0].first == "a1");
    CHECK(o.agent_tokens[0].second == "x=y");
    CHECK(o.approval_methods == std::vector<std::string>{"m1", "m2"});
    CHECK(*o.approval_timeout_s == 5);
    CHECK(*o.grace_ms == 10);
    CHECK(*o.tool_timeout_s == 7);
    CHECK(*o.drain_timeout_ms == 100);
    CHECK(o.drain_on_loop);
    CHECK(*o.ping_interval_ms == 500);
    CHECK(*o.max_message == 4096);
    CHECK(*o.max_connections == 3);
    CHECK(*o.threads == 2);
    CHECK(o.log_level == car::LogLevel::debug);
  }

  TEST_CASE("bad command lines are refused with a message naming the flag") {
    CHECK(parse_error({"--bogus"}).find("--bogus") != std::string::npos);
    CHECK(parse_error({"--listen"}).find("needs a value") != std::string::npos);
    CHECK(parse_error({"--listen", "localhost"}).find("HOST:PORT") != std::string::npos);
    CHECK(parse_error({"--listen", "h:70000"}).find("--listen") != std::string::npos);
    CHECK(parse_error({"--listen", "::1:80"}).find("--listen") != std::string::npos);
    CHECK(parse_error({"--grace-ms", "-1"}).find("--grace-ms") != std::string::npos);
    CHECK(parse_error({"--threads", "x"}).find("--threads") != std::string::npos);
    CHECK(parse_error({"--log-level", "loud"}).find("--log-level") != std::string::npos);
    CHECK(parse_error({"--stdio-framing", "xml", "--stdio"}).find("ndjson") != std::string::npos);
    CHECK(parse_error({"--stdio-framing", "ndjson"}).find("--stdio") != std::string::npos);
    CHECK(parse_error({"--token", "a", "--no-auth"}).find("only one") != std::string::npos);
    CHECK(parse_error({"--no-approvals", "--approval-method", "x"}).find("contradict") !=
          std::string::npos);
    CHECK(parse_error({"--stdio=yes"}).find("takes no value") != std::string::npos);
    CHECK(parse_error({"--agent-token", "novalue"}).find("ID=TOKEN") != std::string::npos);
  }

  TEST_CASE("listen address forms") {
    CHECK(parse_listen_address("0.0.0.0:1")->port == 1);
    CHECK(parse_listen_address("[::]:0")->host == "::");
    CHECK_FALSE(parse_listen_address(":80"));
    CHECK_FALSE(parse_listen_address("[::1]80"));
    CHECK_FALSE(parse_listen_address("h:"));
    CHECK_FALSE(parse_listen_address("h:8x"));
  }
}
