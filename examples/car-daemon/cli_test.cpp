// car-daemon command-line parsing (PROTOCOL.md §9).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <map>

#include "cli.hpp"

using namespace car::daemon;

namespace {

Options parse_ok_impl(std::vector<std::string> args) {
  auto result = parse_command_line(args);
  REQUIRE_MESSAGE(std::holds_alternative<Options>(result),
                  (std::holds_alternative<CliError>(result) ? std::get<CliError>(result).message : ""));
  return std::get<Options>(result);
}

// A fake environment for apply_environment.
EnvLookup env_of(const std::map<std::string, std::string>& vars) {
  return [vars](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

Options with_env(std::vector<std::string> args, const std::map<std::string, std::string>& vars) {
  auto o = parse_ok_impl(std::move(args));
  auto error = apply_environment(o, env_of(vars));
  REQUIRE_MESSAGE(!error, (error ? error->message : ""));
  return o;
}

std::string env_error(std::vector<std::string> args,
                      const std::map<std::string, std::string>& vars) {
  auto o = parse_ok_impl(std::move(args));
  auto error = apply_environment(o, env_of(vars));
  REQUIRE(error);
  return error->message;
}

Options parse_ok(std::vector<std::string> args) { return parse_ok_impl(std::move(args)); }

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
    CHECK_FALSE(o.token);
    CHECK_FALSE(o.token_dir);
    CHECK_FALSE(o.no_host_token);
    CHECK_FALSE(o.require_handshake);
    CHECK_FALSE(o.agent_tokens_only);
    CHECK_FALSE(o.tool_grace_ms);
  }

  TEST_CASE("revision 2 flags: --auth-token alias, --token-dir, --no-host-token and the rest") {
    auto o = parse_ok({"--auth-token", "a", "--token-dir", "/run/t", "--no-host-token",
                       "--require-handshake", "--agent-tokens-only", "--tool-grace-ms", "0"});
    CHECK(*o.token == "a");
    CHECK(o.token_origin == "--auth-token");
    CHECK(*o.token_dir == "/run/t");
    CHECK(o.no_host_token);
    CHECK(o.require_handshake);
    CHECK(o.agent_tokens_only);
    CHECK(*o.tool_grace_ms == 0);
    CHECK(*parse_ok({"--auth-token=b"}).token == "b");
    CHECK(*parse_ok({"--tool-grace-ms=86400000"}).tool_grace_ms == 86400000);
    // The alias and the flag are one option: the last one given wins, and names where it came from.
    auto both = parse_ok({"--auth-token", "a", "--token", "t"});
    CHECK(*both.token == "t");
    CHECK(both.token_origin == "--token");
    CHECK(parse_ok({"--token", "t"}).token_origin == "--token");
  }

  TEST_CASE("revision 2 flags: bad values and contradictions are bad command lines") {
    CHECK(parse_error({"--auth-token", "a", "--no-auth"}).find("only one") != std::string::npos);
    CHECK(parse_error({"--auth-token", "a", "--token-file", "f"}).find("--auth-token") !=
          std::string::npos);
    CHECK(parse_error({"--auth-token", ""}).find("--auth-token") != std::string::npos);
    CHECK(parse_error({"--token-dir", ""}).find("--token-dir") != std::string::npos);
    CHECK(parse_error({"--token-dir"}).find("needs a value") != std::string::npos);
    CHECK(parse_error({"--tool-grace-ms", "-1"}).find("--tool-grace-ms") != std::string::npos);
    CHECK(parse_error({"--tool-grace-ms", "86400001"}).find("--tool-grace-ms") !=
          std::string::npos);
    CHECK(parse_error({"--require-handshake=1"}).find("takes no value") != std::string::npos);
    CHECK(parse_error({"--no-host-token", "--host-token", "h"}).find("--no-host-token") !=
          std::string::npos);
    CHECK(parse_error({"--no-host-token", "--host-token-file", "f"}).find("only one") !=
          std::string::npos);
    CHECK(parse_error({"--host-token", "h", "--host-token-file", "f"}).find("only one") !=
          std::string::npos);
  }

  TEST_CASE("environment: each variable fills its option when the flag is absent") {
    auto o = with_env({}, {{"CAR_AUTH_TOKEN", "envtok"},
                           {"CAR_NO_APPROVALS", "1"},
                           {"CAR_TOOL_TIMEOUT", "7"},
                           {"CAR_AGENT_ID", "bot"}});
    CHECK(*o.token == "envtok");
    CHECK(o.token_origin == "CAR_AUTH_TOKEN");
    CHECK_FALSE(o.no_auth);
    CHECK(o.no_approvals);
    CHECK(*o.tool_timeout_s == 7);
    CHECK(*o.agent_id == "bot");
    CHECK(with_env({}, {{"CAR_NO_AUTH", "1"}}).no_auth);
    // 0 and empty mean off / unset.
    auto off = with_env({}, {{"CAR_NO_AUTH", "0"},
                             {"CAR_NO_APPROVALS", "0"},
                             {"CAR_AUTH_TOKEN", ""},
                             {"CAR_AGENT_ID", ""},
                             {"CAR_TOOL_TIMEOUT", ""}});
    CHECK_FALSE(off.no_auth);
    CHECK_FALSE(off.no_approvals);
    CHECK_FALSE(off.token);
    CHECK_FALSE(off.agent_id);
    CHECK_FALSE(off.tool_timeout_s);
    // No variables at all: nothing changes.
    auto none = with_env({}, {});
    CHECK_FALSE(none.token);
    CHECK_FALSE(none.no_auth);
  }

  TEST_CASE("environment: a flag wins over its variable") {
    auto token = with_env({"--token", "flag"}, {{"CAR_AUTH_TOKEN", "env"}, {"CAR_NO_AUTH", "1"}});
    CHECK(*token.token == "flag");
    CHECK(token.token_origin == "--token");
    CHECK_FALSE(token.no_auth);
    auto file = with_env({"--token-file", "/f"}, {{"CAR_AUTH_TOKEN", "env"}});
    CHECK_FALSE(file.token);
    CHECK(*file.token_file == "/f");
    auto no_auth = with_env({"--no-auth"}, {{"CAR_AUTH_TOKEN", "env"}});
    CHECK(no_auth.no_auth);
    CHECK_FALSE(no_auth.token);
    // --approval-method is the opposite flag of CAR_NO_APPROVALS: the gate stays on.
    auto gate = with_env({"--approval-method", "tools.invoke"}, {{"CAR_NO_APPROVALS", "1"}});
    CHECK_FALSE(gate.no_approvals);
    CHECK(*with_env({"--tool-timeout", "3"}, {{"CAR_TOOL_TIMEOUT", "9"}}).tool_timeout_s == 3);
    CHECK(*with_env({"--agent-id", "a"}, {{"CAR_AGENT_ID", "b"}}).agent_id == "a");
    // A variable whose flag won is not even checked.
    CHECK(with_env({"--tool-timeout", "3"}, {{"CAR_TOOL_TIMEOUT", "soon"}}).tool_timeout_s == 3);
    CHECK(with_env({"--no-auth"}, {{"CAR_NO_AUTH", "yes"}}).no_auth);
  }

  TEST_CASE("environment: unusable values are refused naming the variable") {
    CHECK(env_error({}, {{"CAR_NO_AUTH", "yes"}}).find("CAR_NO_AUTH expects 1 or 0") !=
          std::string::npos);
    CHECK(env_error({}, {{"CAR_NO_APPROVALS", "true"}}).find("CAR_NO_APPROVALS") !=
          std::string::npos);
    CHECK(env_error({}, {{"CAR_TOOL_TIMEOUT", "0"}}).find("CAR_TOOL_TIMEOUT") != std::string::npos);
    CHECK(env_error({}, {{"CAR_TOOL_TIMEOUT", "5s"}}).find("'5s'") != std::string::npos);
    CHECK(env_error({}, {{"CAR_AUTH_TOKEN", "t"}, {"CAR_NO_AUTH", "1"}}).find("contradict") !=
          std::string::npos);
  }

  TEST_CASE("--help documents every revision 2 flag and variable") {
    auto help = usage_text();
    for (const char* needle :
         {"--auth-token", "--token-dir", "--no-host-token", "--require-handshake",
          "--agent-tokens-only", "--tool-grace-ms", "CAR_AUTH_TOKEN", "CAR_NO_AUTH",
          "CAR_NO_APPROVALS", "CAR_TOOL_TIMEOUT", "CAR_AGENT_ID", "ai.parslee.car"}) {
      CHECK_MESSAGE(help.find(needle) != std::string::npos, needle);
    }
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

  TEST_CASE("--no-auth on a non-loopback listener is refused unless it is meant") {
    CHECK(is_loopback_host("127.0.0.1"));
    CHECK(is_loopback_host("127.9.8.7"));
    CHECK(is_loopback_host("::1"));
    CHECK(is_loopback_host("localhost"));
    for (const char* host : {"0.0.0.0", "::", "192.168.1.2", "128.0.0.1", "127.0.0", "127.0.0.1.",
                             "127..0.1", "example.com", "localhost.example.com", "::ffff:127.0.0.1"}) {
      CAPTURE(host);
      CHECK_FALSE(is_loopback_host(host));
    }
    auto exposure = [](std::vector<std::string> args) {
      auto o = parse_ok(std::move(args));
      auto error = check_exposure(o);
      return error ? error->message : std::string();
    };
    CHECK(exposure({"--no-auth", "--listen", "0.0.0.0:9100"}).find("--allow-unauthenticated-remote") !=
          std::string::npos);
    CHECK(exposure({"--no-auth", "--listen", "127.0.0.1:1", "--listen", "[::]:2"}).find("::") !=
          std::string::npos);
    CHECK(exposure({"--no-auth", "--listen", "0.0.0.0:9100", "--allow-unauthenticated-remote"}).empty());
    CHECK(exposure({"--no-auth", "--listen", "[::1]:9100", "--unix", "/tmp/s"}).empty());
    CHECK(exposure({"--no-auth"}).empty());  // the default listener is 127.0.0.1
    CHECK(exposure({"--listen", "0.0.0.0:9100"}).empty());  // authentication is on
    // CAR_NO_AUTH=1 disables authentication as --no-auth does: the same check applies after it.
    auto o = parse_ok({"--listen", "0.0.0.0:9100"});
    REQUIRE_FALSE(apply_environment(o, [](const char* name) -> const char* {
      return std::string_view(name) == "CAR_NO_AUTH" ? "1" : nullptr;
    }));
    CHECK(check_exposure(o));
  }

  TEST_CASE("--sync none|batch") {
    CHECK(parse_ok({}).sync == SyncOption::none);
    CHECK(parse_ok({"--sync", "batch"}).sync == SyncOption::batch);
    CHECK(parse_ok({"--sync=none"}).sync == SyncOption::none);
    CHECK(parse_error({"--sync", "always"}).find("expects none or batch") != std::string::npos);
    CHECK(usage_text().find("--sync none|batch") != std::string::npos);
  }

  TEST_CASE("--retain-runs and --retain-days take 0 (unlimited) or a positive count") {
    auto o = parse_ok({"--retain-runs", "5", "--retain-days=0"});
    CHECK(*o.retain_runs == 5);
    CHECK(*o.retain_days == 0);
    CHECK_FALSE(parse_ok({}).retain_runs);
    CHECK(parse_error({"--retain-runs", "-1"}).find("--retain-runs") != std::string::npos);
    CHECK(parse_error({"--retain-days", "x"}).find("--retain-days") != std::string::npos);
  }

  TEST_CASE("--log-format text|json and --log-file PATH") {
    auto defaults = parse_ok({});
    CHECK(defaults.log_format == LogFormatOption::text);
    CHECK_FALSE(defaults.log_file);
    auto o = parse_ok({"--log-format", "json", "--log-file", "/tmp/car.log"});
    CHECK(o.log_format == LogFormatOption::json);
    REQUIRE(o.log_file);
    CHECK(*o.log_file == "/tmp/car.log");
    CHECK(parse_ok({"--log-format=text"}).log_format == LogFormatOption::text);
    CHECK(*parse_ok({"--log-file=x.log"}).log_file == "x.log");
    CHECK(parse_error({"--log-format", "xml"}).find("expects text or json") != std::string::npos);
    CHECK(parse_error({"--log-file"}).find("needs a value") != std::string::npos);
    CHECK(parse_error({"--log-file="}).find("non-empty") != std::string::npos);
    CHECK(usage_text().find("--log-format text|json") != std::string::npos);
    CHECK(usage_text().find("--log-file PATH") != std::string::npos);
  }

  TEST_CASE("--nats URL[,URL...], --host-id, --nats-stream, --nats-replicas") {
    auto defaults = parse_ok({});
    CHECK(defaults.nats_servers.empty());
    CHECK_FALSE(defaults.host_id);
    auto o = parse_ok({"--nats", "127.0.0.1:4222,nats://10.0.0.2:4222", "--nats=tls://n3:4222",
                       "--host-id", "web-1", "--nats-stream", "FLEET", "--nats-replicas", "3"});
    REQUIRE(o.nats_servers.size() == 3);
    CHECK(o.nats_servers[0] == "nats://127.0.0.1:4222");
    CHECK(o.nats_servers[1] == "nats://10.0.0.2:4222");
    CHECK(o.nats_servers[2] == "tls://n3:4222");
    CHECK(*o.host_id == "web-1");
    CHECK(*o.nats_stream == "FLEET");
    CHECK(*o.nats_replicas == 3);
    CHECK(parse_error({"--nats", "a:1,,b:2"}).find("expects URL[,URL...]") != std::string::npos);
    CHECK(parse_error({"--nats", "a:1", "--nats-replicas", "0"}).find("from 1 to 5") !=
          std::string::npos);
    CHECK(parse_error({"--nats", "a:1", "--nats-replicas", "6"}).find("from 1 to 5") !=
          std::string::npos);
    CHECK(parse_error({"--nats", "a:1", "--nats-stream", "A.B"}).find("stream name") !=
          std::string::npos);
    CHECK(parse_error({"--host-id", "h"}).find("need --nats") != std::string::npos);
    CHECK(parse_error({"--nats-stream", "S"}).find("needs --nats or --fleet") != std::string::npos);
    CHECK(usage_text().find("--nats URL[,URL...]") != std::string::npos);
    CHECK(usage_text().find("--nats-replicas N") != std::string::npos);
  }

  TEST_CASE("--fleet URL[,URL...] makes a gateway: --nats-stream, but no local-service flags") {
    CHECK(parse_ok({}).fleet_servers.empty());
    auto o = parse_ok({"--fleet", "127.0.0.1:4222,nats://n2:4222", "--nats-stream", "FLEET",
                       "--fleet=n3:4222", "--listen", "127.0.0.1:0"});
    REQUIRE(o.fleet_servers.size() == 3);
    CHECK(o.fleet_servers[0] == "nats://127.0.0.1:4222");
    CHECK(o.fleet_servers[1] == "nats://n2:4222");
    CHECK(o.fleet_servers[2] == "nats://n3:4222");
    CHECK(*o.nats_stream == "FLEET");
    CHECK(o.nats_servers.empty());
    CHECK(parse_error({"--fleet", ",a:1"}).find("expects URL[,URL...]") != std::string::npos);
    CHECK(parse_error({"--fleet", "a:1", "--nats", "a:1"}).find("not with --nats") !=
          std::string::npos);
    CHECK(parse_error({"--fleet", "a:1", "--sync", "batch"}).find(
              "--sync configures local services") != std::string::npos);
    CHECK(parse_ok({"--fleet", "a:1", "--state-dir", "/tmp/x"}).fleet_servers.size() == 1);
    CHECK(parse_error({"--fleet", "a:1", "--retain-runs=5"}).find("--retain-runs configures") !=
          std::string::npos);
    CHECK(parse_error({"--fleet", "a:1", "--no-approvals"}).find("--no-approvals configures") !=
          std::string::npos);
    CHECK(parse_error({"--fleet", "a:1", "--host-id", "h"}).find("need --nats") !=
          std::string::npos);
    CHECK(usage_text().find("--fleet URL[,URL...]") != std::string::npos);
  }

  TEST_CASE("--http-endpoints loopback|all|off") {
    CHECK(parse_ok({}).http_endpoints == HttpEndpointsOption::loopback);
    CHECK(parse_ok({"--http-endpoints", "all"}).http_endpoints == HttpEndpointsOption::all);
    CHECK(parse_ok({"--http-endpoints=off"}).http_endpoints == HttpEndpointsOption::off);
    CHECK(parse_ok({"--http-endpoints", "off", "--http-endpoints", "loopback"}).http_endpoints ==
          HttpEndpointsOption::loopback);
    CHECK(parse_error({"--http-endpoints", "public"}).find("expects loopback, all or off") !=
          std::string::npos);
    CHECK(parse_error({"--http-endpoints"}).find("needs a value") != std::string::npos);
    CHECK(usage_text().find("--http-endpoints loopback|all|off") != std::string::npos);
  }

  TEST_CASE("--tls-cert FILE --tls-key FILE: both or neither") {
    auto defaults = parse_ok({});
    CHECK_FALSE(defaults.tls_cert);
    CHECK_FALSE(defaults.tls_key);
    auto o = parse_ok({"--tls-cert", "/etc/car/cert.pem", "--tls-key=/etc/car/key.pem"});
    REQUIRE(o.tls_cert);
    REQUIRE(o.tls_key);
    CHECK(*o.tls_cert == "/etc/car/cert.pem");
    CHECK(*o.tls_key == "/etc/car/key.pem");
    CHECK(parse_error({"--tls-cert", "cert.pem"}).find("--tls-cert and --tls-key go together") !=
          std::string::npos);
    CHECK(parse_error({"--tls-key", "key.pem"}).find("give both or neither") != std::string::npos);
    CHECK(parse_error({"--tls-cert"}).find("needs a value") != std::string::npos);
    CHECK(parse_error({"--tls-key=", "--tls-cert", "c"}).find("non-empty") != std::string::npos);
    CHECK(usage_text().find("--tls-cert FILE --tls-key FILE") != std::string::npos);
  }
}
