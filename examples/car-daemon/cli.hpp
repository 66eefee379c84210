#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "car/log.hpp"

// car-daemon's command line (PROTOCOL.md §9). Parsing is pure (no I/O) so it can be unit tested.
namespace car::daemon {

struct ListenAddress {
  std::string host;
  std::uint16_t port = 0;
};

enum class StdioFramingOption { ndjson, content_length };

// --sync: when an acknowledged run record is durable (runs::StoreSync).
enum class SyncOption { none, batch };

// --log-format: one line of text per record, or one JSON object per line (log_format.hpp).
enum class LogFormatOption { text, json };

// --http-endpoints: which WebSocket listeners also answer plain HTTP (/healthz, /metrics).
enum class HttpEndpointsOption { loopback, all, off };

struct Options {
  std::vector<ListenAddress> listen;
  std::vector<std::string> unix_paths;
  bool stdio = false;
  StdioFramingOption stdio_framing = StdioFramingOption::ndjson;
  // loopback (default): loopback --listen addresses and every --unix socket; all; off.
  HttpEndpointsOption http_endpoints = HttpEndpointsOption::loopback;
  // --tls-cert / --tls-key: PEM files; both or neither. With them every TCP listener (--listen
  // and inherited TCP sockets) serves wss:// (and https:// plain HTTP); Unix sockets stay plain.
  std::optional<std::string> tls_cert;
  std::optional<std::string> tls_key;

  std::optional<std::string> token;
  // Where `token` came from, for messages: "--token", "--auth-token" or "CAR_AUTH_TOKEN".
  std::string token_origin = "--token";
  std::optional<std::string> token_file;
  bool no_auth = false;
  // --no-auth on a listener other than loopback is refused unless this says it is meant.
  bool allow_unauthenticated_remote = false;
  std::optional<std::string> host_token;
  std::optional<std::string> host_token_file;
  bool no_host_token = false;
  // Where minted tokens go (PROTOCOL.md §9); unset = the well-known default (daemon.cpp).
  std::optional<std::string> token_dir;
  bool require_handshake = false;
  bool agent_tokens_only = false;
  std::vector<std::pair<std::string, std::string>> agent_tokens;
  std::optional<std::string> agent_id;
  std::optional<std::string> state_dir;
  SyncOption sync = SyncOption::none;
  std::optional<std::int64_t> retain_runs;  // run retention (PROTOCOL.md §7.7); 0 = unlimited
  std::optional<std::int64_t> retain_days;

  bool no_approvals = false;
  std::vector<std::string> approval_methods;
  std::optional<std::int64_t> approval_timeout_s;
  std::optional<std::int64_t> grace_ms;
  std::optional<std::int64_t> tool_timeout_s;
  std::optional<std::int64_t> tool_grace_ms;
  std::optional<std::int64_t> drain_timeout_ms;
  bool drain_on_loop = false;  // benchmark baseline: run-trace drains on the loop thread
  std::optional<std::int64_t> ping_interval_ms;
  std::vector<std::string> allow_origins;
  std::optional<std::int64_t> max_message;
  std::optional<std::int64_t> max_connections;
  std::optional<std::int64_t> threads;
  LogLevel log_level = LogLevel::info;
  LogFormatOption log_format = LogFormatOption::text;
  std::optional<std::string> log_file;  // unset = log records go to stderr

  // --nats: the JetStream record exporter (docs/FLEET.md "Export"); empty = no export.
  std::vector<std::string> nats_servers;
  std::optional<std::string> host_id;      // --host-id; unset = the machine's hostname
  std::optional<std::string> nats_stream;  // --nats-stream; unset = CAR
  std::optional<std::int64_t> nats_replicas;  // --nats-replicas 1..5; unset = 1

  // --fleet: serve every host's runs read-only from NATS JetStream (docs/FLEET.md "Gateway")
  // instead of local services; empty = an ordinary daemon. Shares --nats-stream.
  std::vector<std::string> fleet_servers;

  bool help = false;
  bool version = false;
};

struct CliError {
  std::string message;
};

std::variant<Options, CliError> parse_command_line(const std::vector<std::string>& args);

// Reads a variable of the environment; nullptr when it is unset. main() passes std::getenv.
using EnvLookup = std::function<const char*(const char*)>;

// Fills what the command line left unset from CAR_AUTH_TOKEN, CAR_NO_AUTH, CAR_NO_APPROVALS,
// CAR_TOOL_TIMEOUT and CAR_AGENT_ID (PROTOCOL.md §9): a flag always wins over its variable, and
// an empty variable counts as unset. A value that is unusable is a CliError naming the variable
// (exit 2, like a bad flag).
std::optional<CliError> apply_environment(Options& options, const EnvLookup& lookup);

// Refuses (exit 2) a daemon without authentication that would listen on an address other than
// loopback — anyone who can reach the port could drive it — unless
// --allow-unauthenticated-remote says that is intended. Called after apply_environment, since
// CAR_NO_AUTH=1 disables authentication too.
std::optional<CliError> check_exposure(const Options& options);

// Whether `host` (as --listen takes it) names only this machine: `localhost`, 127.0.0.0/8 or ::1.
bool is_loopback_host(const std::string& host);

// Parses "HOST:PORT" ("[::1]:9100" for IPv6). Port 0 means ephemeral.
std::optional<ListenAddress> parse_listen_address(const std::string& text);

std::string usage_text();

}  // namespace car::daemon
