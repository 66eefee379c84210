#include "cli.hpp"

#include <charconv>
#include <functional>
#include <map>
#include <utility>
#include <vector>

#include <fmt/format.h>

namespace car::daemon {
namespace {

std::optional<std::int64_t> parse_integer(const std::string& text, std::int64_t min,
                                          std::int64_t max) {
  std::int64_t value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || ptr != text.data() + text.size() || value < min || value > max) {
    return std::nullopt;
  }
  return value;
}

// A flag's value handler: the reason the value is refused, or nothing once it is stored.
using Setter = std::function<std::optional<std::string>(const std::string&)>;

// A flag that takes one of a few words, each naming a value of `slot`'s enum.
template <typename T>
Setter one_of(T& slot, std::vector<std::pair<std::string, T>> choices) {
  return [&slot, choices = std::move(choices)](const std::string& v) -> std::optional<std::string> {
    for (const auto& [word, value] : choices) {
      if (v == word) {
        slot = value;
        return std::nullopt;
      }
    }
    std::string expected;
    for (std::size_t i = 0; i < choices.size(); ++i) {
      if (i != 0) expected += i + 1 == choices.size() ? " or " : ", ";
      expected += choices[i].first;
    }
    return "expects " + expected;
  };
}

}  // namespace

std::optional<ListenAddress> parse_listen_address(const std::string& text) {
  std::string host;
  std::string port_text;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string::npos) return std::nullopt;
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (host.find(':') != std::string::npos) return std::nullopt;  // bare IPv6 needs brackets
  }
  auto port = parse_integer(port_text, 0, 65535);
  if (host.empty() || !port) return std::nullopt;
  return ListenAddress{host, static_cast<std::uint16_t>(*port)};
}

// URL[,URL...] (--nats, --fleet): every server of one NATS cluster, for the client to fail over among;
// `nats://` is implied.
static std::optional<std::string> append_nats_urls(const std::string& v,
                                                   std::vector<std::string>& out) {
  std::vector<std::string> urls;
  std::size_t start = 0;
  for (;;) {
    std::size_t comma = v.find(',', start);
    std::string url = v.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (url.empty()) return "expects URL[,URL...]";
    if (url.find("://") == std::string::npos) url = "nats://" + url;
    urls.push_back(std::move(url));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  out.insert(out.end(), urls.begin(), urls.end());
  return std::nullopt;
}

std::variant<Options, CliError> parse_command_line(const std::vector<std::string>& args) {
  Options o;
  constexpr std::int64_t big = std::int64_t{1} << 50;
  auto integer = [](std::optional<std::int64_t>& slot, std::int64_t min, std::int64_t max) {
    return Setter([&slot, min, max](const std::string& v) -> std::optional<std::string> {
      auto parsed = parse_integer(v, min, max);
      if (!parsed) return fmt::format("expects an integer from {} to {}", min, max);
      slot = parsed;
      return std::nullopt;
    });
  };
  auto text = [](std::optional<std::string>& slot) {
    return Setter([&slot](const std::string& v) -> std::optional<std::string> {
      if (v.empty()) return "expects a non-empty value";
      slot = v;
      return std::nullopt;
    });
  };
  auto append = [](std::vector<std::string>& list) {
    return Setter([&list](const std::string& v) -> std::optional<std::string> {
      if (v.empty()) return "expects a non-empty value";
      list.push_back(v);
      return std::nullopt;
    });
  };
  // Flags that take a value.
  std::map<std::string, Setter> valued = {
      {"--listen",
       [&o](const std::string& v) -> std::optional<std::string> {
         auto address = parse_listen_address(v);
         if (!address) return "expects HOST:PORT (IPv6 as [ADDR]:PORT)";
         o.listen.push_back(*address);
         return std::nullopt;
       }},
      {"--unix", append(o.unix_paths)},
      {"--stdio-framing", one_of(o.stdio_framing, {{"ndjson", StdioFramingOption::ndjson},
                                                   {"content-length", StdioFramingOption::content_length}})},
      {"--http-endpoints", one_of(o.http_endpoints, {{"loopback", HttpEndpointsOption::loopback},
                                                     {"all", HttpEndpointsOption::all},
                                                     {"off", HttpEndpointsOption::off}})},
      {"--tls-cert", text(o.tls_cert)},
      {"--tls-key", text(o.tls_key)},
      {"--sync", one_of(o.sync, {{"none", SyncOption::none}, {"batch", SyncOption::batch}})},
      {"--token", text(o.token)},
      // An alias, as the contract names it: both set the same token (the last one given wins).
      {"--auth-token",
       [&o](const std::string& v) -> std::optional<std::string> {
         if (v.empty()) return "expects a non-empty value";
         o.token = v;
         o.token_origin = "--auth-token";
         return std::nullopt;
       }},
      {"--token-file", text(o.token_file)},
      {"--host-token", text(o.host_token)},
      {"--host-token-file", text(o.host_token_file)},
      {"--token-dir", text(o.token_dir)},
      {"--agent-token",
       [&o](const std::string& v) -> std::optional<std::string> {
         auto eq = v.find('=');
         if (eq == std::string::npos || eq == 0 || eq + 1 == v.size()) return "expects ID=TOKEN";
         o.agent_tokens.emplace_back(v.substr(0, eq), v.substr(eq + 1));
         return std::nullopt;
       }},
      {"--agent-id", text(o.agent_id)},
      {"--state-dir", text(o.state_dir)},
      {"--retain-runs", integer(o.retain_runs, 0, 100000000)},
      {"--retain-days", integer(o.retain_days, 0, 1000000)},
      {"--approval-method", append(o.approval_methods)},
      {"--approval-timeout", integer(o.approval_timeout_s, 1, 86400)},
      {"--grace-ms", integer(o.grace_ms, 0, big)},
      {"--tool-timeout", integer(o.tool_timeout_s, 1, 86400)},
      {"--tool-grace-ms", integer(o.tool_grace_ms, 0, 86400000)},
      {"--drain-timeout-ms", integer(o.drain_timeout_ms, 1, big)},
      {"--ping-interval-ms", integer(o.ping_interval_ms, 0, big)},
      {"--allow-origin", append(o.allow_origins)},
      {"--max-message", integer(o.max_message, 64, std::int64_t{1} << 31)},
      {"--max-connections", integer(o.max_connections, 1, 1000000)},
      {"--threads", integer(o.threads, 1, 128)},
      {"--log-format",
       one_of(o.log_format, {{"text", LogFormatOption::text}, {"json", LogFormatOption::json}})},
      {"--log-file", text(o.log_file)},
      {"--nats", [&o](const std::string& v) { return append_nats_urls(v, o.nats_servers); }},
      {"--host-id", text(o.host_id)},
      {"--fleet",
       [&o](const std::string& v) { return append_nats_urls(v, o.fleet_servers); }},
      {"--nats-stream",
       [&o](const std::string& v) -> std::optional<std::string> {
         if (v.empty() || v.find_first_of(" \t.*>/\\") != std::string::npos) {
           return "expects a stream name without spaces, '.', '*', '>', '/' or '\\'";
         }
         o.nats_stream = v;
         return std::nullopt;
       }},
      {"--nats-replicas", integer(o.nats_replicas, 1, 5)},
      {"--log-level",
       [&o](const std::string& v) -> std::optional<std::string> {
         auto level = parse_log_level(v);
         if (!level || *level == LogLevel::off) return "expects trace, debug, info, warn or error";
         o.log_level = *level;
         return std::nullopt;
       }},
  };
  std::map<std::string, bool*> switches = {
      {"--stdio", &o.stdio},
      {"--no-auth", &o.no_auth},
      {"--allow-unauthenticated-remote", &o.allow_unauthenticated_remote},
      {"--no-approvals", &o.no_approvals},
      {"--help", &o.help},
      {"-h", &o.help},
      {"--version", &o.version},
      {"--drain-on-loop", &o.drain_on_loop},
      {"--no-host-token", &o.no_host_token},
      {"--require-handshake", &o.require_handshake},
      {"--agent-tokens-only", &o.agent_tokens_only},
  };

  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string arg = args[i];
    std::optional<std::string> inline_value;
    if (auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      inline_value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    }
    if (auto s = switches.find(arg); s != switches.end()) {
      if (inline_value) return CliError{fmt::format("{} takes no value", arg)};
      *s->second = true;
      continue;
    }
    auto v = valued.find(arg);
    if (v == valued.end()) return CliError{fmt::format("unknown option '{}'", args[i])};
    std::string value;
    if (inline_value) {
      value = *inline_value;
    } else {
      if (i + 1 >= args.size()) return CliError{fmt::format("{} needs a value", arg)};
      value = args[++i];
    }
    if (auto problem = v->second(value)) {
      return CliError{fmt::format("{} {}: '{}'", arg, *problem, value)};
    }
    if (arg == "--token") o.token_origin = "--token";
  }

  int auth_modes = (o.token ? 1 : 0) + (o.token_file ? 1 : 0) + (o.no_auth ? 1 : 0);
  if (auth_modes > 1) {
    return CliError{"give only one of --token (or --auth-token), --token-file and --no-auth"};
  }
  int host_modes = (o.host_token ? 1 : 0) + (o.host_token_file ? 1 : 0) + (o.no_host_token ? 1 : 0);
  if (host_modes > 1) {
    return CliError{"give only one of --host-token, --host-token-file and --no-host-token"};
  }
  if (o.no_approvals && !o.approval_methods.empty()) {
    return CliError{"--no-approvals and --approval-method contradict each other"};
  }
  if (o.tls_cert.has_value() != o.tls_key.has_value()) {
    return CliError{"--tls-cert and --tls-key go together: give both or neither"};
  }
  bool framing_given = false;
  for (const auto& a : args) framing_given = framing_given || a.rfind("--stdio-framing", 0) == 0;
  if (framing_given && !o.stdio) return CliError{"--stdio-framing needs --stdio"};
  if (o.nats_servers.empty() && (o.host_id || o.nats_replicas)) {
    return CliError{"--host-id and --nats-replicas need --nats"};
  }
  if (o.nats_stream && o.nats_servers.empty() && o.fleet_servers.empty()) {
    return CliError{"--nats-stream needs --nats or --fleet"};
  }
  if (!o.fleet_servers.empty()) {
    // A gateway has no local runs, host state or tools: the flags that configure them would be
    // silently ignored, so they are refused. (--state-dir is accepted: it names no service, only
    // where a daemon would keep its store, and scripts pass it to every daemon.)
    if (!o.nats_servers.empty()) {
      return CliError{"--fleet serves the fleet read-only and has no runs to export: not with --nats"};
    }
    for (const auto& a : args) {
      for (const char* local : {"--sync", "--retain-runs", "--retain-days",
                                "--agent-id", "--grace-ms", "--approval-method",
                                "--approval-timeout", "--no-approvals", "--tool-timeout",
                                "--tool-grace-ms", "--drain-on-loop"}) {
        std::string_view flag(local);
        if (a == flag || (a.rfind(flag, 0) == 0 && a.size() > flag.size() && a[flag.size()] == '=')) {
          return CliError{fmt::format("{} configures local services; --fleet has none", flag)};
        }
      }
    }
  }
  return o;
}

std::optional<CliError> apply_environment(Options& o, const EnvLookup& lookup) {
  auto get = [&lookup](const char* name) -> std::optional<std::string> {
    const char* value = lookup(name);
    if (value == nullptr || *value == '\0') return std::nullopt;  // empty = unset
    return std::string(value);
  };
  // A switch variable is 1 (on) or 0 (off); anything else is refused rather than guessed at.
  auto switch_on = [](const char* name, const std::string& value) -> std::variant<bool, CliError> {
    if (value == "1") return true;
    if (value == "0") return false;
    return CliError{fmt::format("{} expects 1 or 0: '{}'", name, value)};
  };

  // Any auth flag decides authentication alone; only without one do the two variables count,
  // and then they must not contradict each other.
  if (!o.token && !o.token_file && !o.no_auth) {
    auto token = get("CAR_AUTH_TOKEN");
    bool no_auth = false;
    if (auto value = get("CAR_NO_AUTH")) {
      auto on = switch_on("CAR_NO_AUTH", *value);
      if (auto* error = std::get_if<CliError>(&on)) return *error;
      no_auth = std::get<bool>(on);
    }
    if (token && no_auth) return CliError{"CAR_AUTH_TOKEN and CAR_NO_AUTH=1 contradict each other"};
    if (token) {
      o.token = *token;
      o.token_origin = "CAR_AUTH_TOKEN";
    }
    o.no_auth = no_auth;
  }
  // --no-approvals is the flag of CAR_NO_APPROVALS, and --approval-method (a gate with these
  // methods) is its opposite: either one given means the variable is not consulted.
  if (!o.no_approvals && o.approval_methods.empty()) {
    if (auto value = get("CAR_NO_APPROVALS")) {
      auto on = switch_on("CAR_NO_APPROVALS", *value);
      if (auto* error = std::get_if<CliError>(&on)) return *error;
      o.no_approvals = std::get<bool>(on);
    }
  }
  if (!o.tool_timeout_s) {
    if (auto value = get("CAR_TOOL_TIMEOUT")) {
      auto seconds = parse_integer(*value, 1, 86400);
      if (!seconds) {
        return CliError{fmt::format(
            "CAR_TOOL_TIMEOUT expects an integer from 1 to 86400 (seconds): '{}'", *value)};
      }
      o.tool_timeout_s = seconds;
    }
  }
  if (!o.agent_id) o.agent_id = get("CAR_AGENT_ID");
  return std::nullopt;
}

bool is_loopback_host(const std::string& host) {
  if (host == "localhost" || host == "::1") return true;
  // An IPv4 literal in 127.0.0.0/8: four decimal octets, the first 127.
  int octets = 0;
  std::size_t start = 0;
  while (start <= host.size()) {
    std::size_t end = host.find('.', start);
    if (end == std::string::npos) end = host.size();
    auto octet = parse_integer(host.substr(start, end - start), 0, 255);
    if (!octet || end == start || end - start > 3) return false;
    if (octets == 0 && *octet != 127) return false;
    ++octets;
    start = end + 1;
  }
  return octets == 4;
}

std::optional<CliError> check_exposure(const Options& o) {
  if (!o.no_auth || o.allow_unauthenticated_remote) return std::nullopt;
  for (const auto& address : o.listen) {
    if (is_loopback_host(address.host)) continue;
    return CliError{fmt::format(
        "--listen {}: authentication is disabled and this address is not loopback, so anyone who "
        "can reach it could drive this daemon; listen on 127.0.0.1 or ::1, enable authentication, "
        "or add --allow-unauthenticated-remote if that is what you want",
        address.host)};
  }
  return std::nullopt;
}

std::string usage_text() {
  return R"(usage: car-daemon [options]

Serves the CAR JSON-RPC protocol over WebSocket (TCP and Unix sockets) and stdio.

Listeners (none given => --listen 127.0.0.1:9100):
  --listen HOST:PORT          WebSocket over TCP; repeatable; port 0 picks a free port
  --unix PATH                 WebSocket over a Unix socket (mode 0600); repeatable
  --stdio                     JSON-RPC on stdin/stdout; exit 0 at EOF once replies are flushed
  --stdio-framing ndjson|content-length   (default ndjson)
  --http-endpoints loopback|all|off
                              plain HTTP GET /healthz and /metrics on the WebSocket listeners:
                              loopback (default) on loopback --listen addresses and --unix
                              sockets, all on every listener, off on none (400 as before)
  --tls-cert FILE --tls-key FILE
                              TLS on every TCP listener (wss://, https://): a PEM certificate
                              chain (server certificate first) and its unencrypted PEM key;
                              both or neither; Unix sockets and stdio stay plaintext

Authentication (a token not given is minted at each launch into the token directory, files
auth-token and host-token, mode 0600, removed at shutdown):
  --token TOKEN | --auth-token TOKEN | --token-file PATH | --no-auth    (env CAR_AUTH_TOKEN,
                              CAR_NO_AUTH=1)
  --allow-unauthenticated-remote
                              let --no-auth listen on a non-loopback --listen address (refused
                              otherwise); without auth only loopback browser Origins connect
  --host-token TOKEN | --host-token-file PATH | --no-host-token
                              the host-role token; --no-host-token: mint none
  --token-dir DIR             where tokens are minted (and locked: one daemon per directory);
                              default $XDG_RUNTIME_DIR/ai.parslee.car, else ~/.config/ai.parslee.car
  --agent-token ID=TOKEN      per-agent token (repeatable)
  --agent-tokens-only         the daemon token no longer binds an agent_id; only agents with
                              their own --agent-token may bind
  --require-handshake         refuse host.subscribe (-32005) until server.handshake
  --agent-id ID               default agent id for runs.start (env CAR_AGENT_ID)
  --state-dir DIR             run store; default $XDG_STATE_HOME/car, else ~/.local/state/car
                              (locked: one daemon per state directory)
  --sync none|batch           when a recorded turn is acknowledged: none (default) after
                              write(2), surviving a daemon crash; batch after fdatasync,
                              surviving power loss (one sync per store job, shared by
                              pipelined calls)
  --retain-runs N             keep the newest N ended runs per agent, default 1000 (0: all)
  --retain-days D             delete runs started more than D days ago, default 30 (0: never)

Approval gate and timeouts:
  --no-approvals              disable the high-risk approval gate (env CAR_NO_APPROVALS=1)
  --approval-method NAME      gate this method (repeatable; replaces the default set)
  --approval-timeout SECONDS  default 60
  --grace-ms MS               run disconnect grace window, default 2000
  --tool-timeout SECONDS      default 300 (env CAR_TOOL_TIMEOUT)
  --tool-grace-ms MS          wait this long past a tool call's deadline, default 5000
  --drain-timeout-ms MS       run-trace drain write deadline, default 10000
  --drain-on-loop             run-trace drains on the event loop, not the thread pool
                              (a baseline for benchmarks; not for production)
  --ping-interval-ms MS       WebSocket idle ping, default 30000

Limits:
  --allow-origin ORIGIN       WebSocket Origin allowlist (repeatable; default: any origin with
                              auth, loopback origins only with --no-auth)
  --max-message BYTES         default 16777216
  --max-connections N         default 1024 (or the fd limit - 64 if smaller)
  --threads N                 libuv thread-pool size (default 4)

  --log-level trace|debug|info|warn|error   (default info; logs go to stderr); debug adds
                              one line per request: method, id, duration, error code
  --log-format text|json      text (default): "TIME [car LEVEL] message"; json: one object per
                              line; times are RFC 3339 UTC with milliseconds
  --log-file PATH             append log records to PATH (created 0600) instead of stderr;
                              SIGHUP reopens it (logrotate); errors are copied to stderr

Fleet export (docs/FLEET.md; needs a build with the nats feature):
  --nats URL[,URL...]         publish every run record and host event to NATS JetStream at
                              these servers (one cluster; nats:// is implied)
  --host-id ID                this daemon's name in the fleet's subjects (default: hostname)
  --nats-stream NAME          the JetStream stream, created if missing (default CAR); with
                              --fleet, the stream the gateway reads
  --nats-replicas N           replicas of a stream it creates, 1 to 5 (default 1)

Fleet gateway (docs/FLEET.md; needs a build with the nats feature):
  --fleet URL[,URL...]        serve every host's runs read-only from NATS JetStream at these
                              servers (one cluster; nats:// is implied): runs.list,
                              runs.get_trace, runs.subscribe, fleet.hosts; no local runs,
                              host state or tools, and every write is refused

  --version, --help

A flag wins over its environment variable.
Exit status: 0 after a normal shutdown, 1 on a runtime failure (e.g. the token or state
directory is in use by another daemon), 2 on a bad command line or environment variable
(including --no-auth on a non-loopback --listen without --allow-unauthenticated-remote).
)";
}

}  // namespace car::daemon
