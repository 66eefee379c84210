#include "daemon.hpp"

#include <pwd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <system_error>
#include <cstdlib>
#include <variant>

#include "car/connection.hpp"
#include "car/log.hpp"
#include "car/session/token_file.hpp"
#include "daemon_log.hpp"
#include "health_endpoints.hpp"
#include "stderr_writer.hpp"
#include "viewer_route.hpp"

#include <fmt/format.h>

namespace car::daemon {
namespace {

// Every shutdown path waits at most this long for connections to flush (PROTOCOL.md §1: 2 s).
constexpr std::uint64_t shutdown_flush_ms = 2000;

// The well-known directory's name under $XDG_RUNTIME_DIR or ~/.config (PROTOCOL.md §9).
constexpr const char* token_dir_name = "ai.parslee.car";

std::optional<std::string> resolve_token(const std::optional<std::string>& literal,
                                         const std::optional<std::string>& file,
                                         const std::string& literal_origin, const char* file_flag) {
  if (literal) {
    std::string token = session::trim_token(*literal);  // PROTOCOL.md §9: surrounding whitespace trimmed
    if (token.empty()) log_error("{}: the token is empty", literal_origin);
    return token;  // empty = failure, reported
  }
  if (!file) return std::nullopt;
  auto result = session::read_token_file(*file);
  if (!result) {
    log_error("{}: {}", file_flag, result.error().message);
    return std::string();  // empty = failure, reported
  }
  return std::move(result.value());
}

}  // namespace

std::string default_state_dir() {
  if (const char* xdg = std::getenv("XDG_STATE_HOME"); xdg != nullptr && *xdg != '\0') {
    return std::string(xdg) + "/car";
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    return std::string(home) + "/.local/state/car";
  }
  return ".car-state";
}

Result<std::string> default_token_dir() {
  // The XDG base-directory spec says a relative XDG_RUNTIME_DIR is to be ignored.
  if (const char* runtime = std::getenv("XDG_RUNTIME_DIR"); runtime != nullptr && *runtime == '/') {
    return fmt::format("{}/{}", runtime, token_dir_name);
  }
  std::string home;
  if (const char* env = std::getenv("HOME"); env != nullptr && *env != '\0') {
    home = env;
  } else {
    // No HOME (a service manager's bare environment): the account's home directory.
    std::vector<char> buf(16384);
    passwd entry{};
    passwd* found = nullptr;
    if (::getpwuid_r(::getuid(), &entry, buf.data(), buf.size(), &found) == 0 && found != nullptr &&
        found->pw_dir != nullptr && *found->pw_dir != '\0') {
      home = found->pw_dir;
    }
  }
  if (home.empty()) {
    return Error::internal(
        "no token directory: XDG_RUNTIME_DIR and HOME are unset; give --token-dir");
  }
  return fmt::format("{}/.config/{}", home, token_dir_name);
}

Daemon::Daemon(Options options, std::vector<InheritedSocket> inherited)
    : options_(std::move(options)), inherited_(std::move(inherited)) {
  state_dir_ = options_.state_dir ? *options_.state_dir : default_state_dir();
  uv_loop_init(&loop_);
  executor_ = std::make_unique<uv::UvExecutor>(&loop_);
}

Daemon::~Daemon() {
  server_.reset();
  executor_.reset();
  // Let libuv run the close callbacks of everything closed above, then release the loop.
  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_loop_close(&loop_);
}

bool Daemon::load_tls() {
  if (!options_.tls_cert) return true;
  // Start-up, before the loop runs: reading two small files here blocks nothing that serves.
  auto loaded = tls::ServerContext::from_files(*options_.tls_cert, *options_.tls_key);
  if (!loaded) {
    log_error("--tls-cert/--tls-key: {}", loaded.error().message);
    return false;
  }
  tls_ = std::move(loaded.value());
  log_info("TLS on the TCP listeners with {} ({})", *options_.tls_cert, tls_->subject());
  return true;
}

bool Daemon::lock_state_dir() {
  // Two daemons appending to the same run logs would interleave records and disagree about which
  // runs are live: the second one refuses to start, naming the first (PROTOCOL.md §9).
  std::error_code error;
  if (std::filesystem::create_directories(state_dir_, error)) {
    std::filesystem::permissions(state_dir_, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::replace, error);
  }
  if (error || !std::filesystem::is_directory(state_dir_, error)) {
    log_error("state directory {} cannot be used: {}", state_dir_,
              error ? error.message() : "not a directory");
    return false;
  }
  auto held = session::PidLockFile::acquire(state_dir_ + "/state.lock",
                                            fmt::format("state directory {}", state_dir_));
  if (!held) {
    log_error("{}; give this daemon its own --state-dir", held.error().message);
    return false;
  }
  state_lock_ = std::move(held.value());
  return true;
}

bool Daemon::configure_auth(ServerConfig& config, session::AuthConfig& auth) {
  auto host = resolve_token(options_.host_token, options_.host_token_file, "--host-token",
                            "--host-token-file");
  if (host && host->empty()) return false;
  auth.host_token = host;
  for (const auto& [id, token] : options_.agent_tokens) auth.agent_tokens[id] = token;
  auth.agent_tokens_only = options_.agent_tokens_only;
  if (options_.no_auth) {
    config.require_auth = false;
    log_warn("authentication is disabled (--no-auth)");
    return true;
  }
  config.require_auth = true;
  auto token =
      resolve_token(options_.token, options_.token_file, options_.token_origin, "--token-file");
  if (token && token->empty()) return false;
  if (token) auth.token = *token;
  // PROTOCOL.md §9: the daemon token is minted when none was given, and the host token whenever
  // no host-token flag settled it — also beside a given daemon token, or a host shell (which
  // reads `host-token` from the token directory) could never take the host role. A daemon given
  // both tokens, or a daemon token and --no-host-token, mints nothing and takes no lock.
  bool mint_daemon = !token;
  bool mint_host = !host && !options_.no_host_token;
  if (!mint_daemon && !mint_host) return true;
  return mint_tokens(auth, mint_daemon, mint_host);
}

bool Daemon::mint_tokens(session::AuthConfig& auth, bool mint_daemon, bool mint_host) {
  std::string dir;
  if (options_.token_dir) {
    dir = *options_.token_dir;
  } else {
    auto found = default_token_dir();
    if (!found) {
      log_error("{}", found.error().message);
      return false;
    }
    dir = found.value();
  }
  auto locked = session::TokenDirectory::lock(dir);
  if (!locked) {
    log_error(
        "{}; give this daemon its own --token-dir, or its tokens (--token or --token-file, "
        "with --host-token, --host-token-file or --no-host-token; or --no-auth)",
        locked.error().message);
    return false;
  }
  token_dir_ = std::move(locked.value());
  // Mints `file` into the token directory and announces it: PROTOCOL.md §9 prints it as a plain
  // line (scripts read it), not as a log record.
  auto mint = [this](std::string_view file, std::string_view label) -> std::optional<std::string> {
    auto minted = token_dir_->mint(file);
    if (!minted) {
      log_error("{}", minted.error().message);
      return std::nullopt;
    }
    StderrWriter::process().write(
        fmt::format("{} token file: {}/{}\n", label, token_dir_->path(), file));
    return std::move(minted.value());
  };
  if (mint_daemon) {
    auto daemon_token = mint("auth-token", "auth");
    if (!daemon_token) return false;
    auth.token = std::move(*daemon_token);
    viewer_token_ = auth.token;
  }
  if (mint_host) {
    auto host_token = mint("host-token", "host");
    if (!host_token) return false;
    auth.host_token = std::move(*host_token);
    viewer_token_ = *auth.host_token;  // the host role reads every agent's runs (§7.5)
  }
  return true;
}

// The default connection cap, lowered below the descriptor limit: 64 descriptors stay for the
// listeners, the store, stdio and the logs, so a flood of clients meets 503 rather than EMFILE.
static std::size_t default_max_connections(std::size_t cap) {
  constexpr rlim_t reserved = 64;
  struct rlimit limit {};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return cap;
  if (limit.rlim_cur <= reserved) return 1;
  return std::min(cap, static_cast<std::size_t>(limit.rlim_cur - reserved));
}

void Daemon::install_http_routes() {
  add_health_endpoints(*http_routes_, {server_.get(), host_, runs_, started_});
  http_routes_->add("/", viewer_page_handler());  // the run viewer (docs/VIEWER.md)
}

bool Daemon::start_listeners() {
  install_http_routes();
  auto ws_options = std::make_shared<ws::WsOptions>();
  ws_options->allowed_origins = options_.allow_origins;
  // Without auth, the browser's Origin is the only thing between any web page and this daemon:
  // only loopback pages, and those --allow-origin names, may connect (PROTOCOL.md §1).
  if (options_.no_auth) ws_options->unlisted_origins = ws::UnlistedOrigins::loopback_only;
  if (options_.max_connections) {
    ws_options->max_connections = static_cast<std::size_t>(*options_.max_connections);
  } else {
    ws_options->max_connections = default_max_connections(ws_options->max_connections);
  }
  if (options_.ping_interval_ms) {
    ws_options->ping_interval = std::chrono::milliseconds(*options_.ping_interval_ms);
  }
  // TCP listeners only (the Unix-socket listener ignores it): --listen and inherited TCP alike.
  ws_options->tls = tls_;
  // --http-endpoints (docs/OPERATIONS.md "Health and metrics"): the same settings, plus plain
  // HTTP, for the listeners that serve it; the others keep answering a GET without Upgrade 400.
  auto with_http = std::make_shared<ws::WsOptions>(*ws_options);
  with_http->http_handler = [routes = http_routes_](const ws::PlainHttpRequest& request) {
    return routes->answer(request);
  };
  ListenerOptions options_for = [&](bool loopback) {
    const auto mode = options_.http_endpoints;
    const bool served = mode == HttpEndpointsOption::all ||
                        (mode == HttpEndpointsOption::loopback && loopback);
    return served ? with_http : ws_options;
  };
  if (!adopt_inherited(options_for)) return false;
  std::vector<ListenAddress> tcp = options_.listen;
  // Inherited sockets are listeners too: with them, no flag still means no default listener.
  if (tcp.empty() && options_.unix_paths.empty() && !options_.stdio && inherited_.empty()) {
    tcp.push_back({"127.0.0.1", 9100});  // PROTOCOL.md §9: no listener flag => the default listener
  }
  std::string viewer;  // the `viewer:` line, for the first loopback listener serving HTTP
  for (const auto& address : tcp) {
    const bool loopback = is_loopback_host(address.host);
    auto started = ws::TcpListener::start(&loop_, *server_, options_for(loopback), address.host,
                                          address.port);
    if (!started) {
      log_error("{}", started.error().message);
      return false;
    }
    auto& listener = started.value();
    StderrWriter::process().write(fmt::format("listening {}\n", listener->url()));
    listening_.push_back(listener->url());
    const bool serves_http = options_for(loopback) == with_http;
    if (viewer.empty() && loopback && serves_http && !viewer_token_.empty()) {
      viewer = viewer_line(listener->url(), viewer_token_);
    }
    tcp_listeners_.push_back(std::move(listener));
  }
  for (const auto& path : options_.unix_paths) {
    auto started = unix_socket::UnixListener::start(&loop_, *server_, options_for(true), path);
    if (!started) {
      log_error("{}", started.error().message);
      return false;
    }
    auto& listener = started.value();
    StderrWriter::process().write(fmt::format("listening {}\n", listener->url()));
    listening_.push_back(listener->url());
    unix_listeners_.push_back(std::move(listener));
  }
  if (options_.stdio) {
    stdio::StdioOptions stdio_options;
    stdio_options.framing = options_.stdio_framing == StdioFramingOption::content_length
                                ? stdio::Framing::content_length
                                : stdio::Framing::ndjson;
    // stdio ends the daemon: EOF (or a closed connection) means the peer is done with us.
    stdio_ = stdio::start_stdio(&loop_, *server_, stdio_options, [this] {
      // Lost replies must not look like success to whoever runs us (the failure is logged).
      if (stdio_->failed()) exit_status_ = 1;
      stdio_.reset();
      begin_shutdown("stdio finished");
    });
    if (!stdio_) return false;
    // PROTOCOL.md §9: a plain line once the listener is ready (tests wait for it).
    StderrWriter::process().write("listening stdio\n");
    listening_.push_back("stdio");
  }
  if (tls_ && tcp_listeners_.empty()) {
    log_warn("--tls-cert/--tls-key given, but no TCP listener to use them (Unix sockets and stdio "
             "stay plaintext)");
  }
  // A plain line, like `listening ...`: the operator's link to the run viewer (docs/VIEWER.md).
  if (!viewer.empty()) StderrWriter::process().write(viewer);
  return true;
}

// The order matters only in that every service must be installed before the first connection.
bool Daemon::install_services(session::AuthConfig auth) {
  sessions_ = session::install_session_service(*server_, std::move(auth));
  // --fleet: the same sessions and tokens, but the fleet's runs instead of local services.
  if (!options_.fleet_servers.empty()) return fleet_.install(*server_, options_);

  host::HostConfig host_config;
  host_config.gate.enabled = !options_.no_approvals;
  if (!options_.approval_methods.empty()) host_config.gate.methods = options_.approval_methods;
  if (options_.approval_timeout_s) {
    host_config.gate.timeout = std::chrono::seconds(*options_.approval_timeout_s);
  }
  if (options_.tool_timeout_s) host_config.tool_timeout = std::chrono::seconds(*options_.tool_timeout_s);
  if (options_.tool_grace_ms) {
    host_config.tool_grace = std::chrono::milliseconds(*options_.tool_grace_ms);
  }
  host_ = host::install_host_services(*server_, host_config);

  runs::RunConfig run_config;
  run_config.state_dir = state_dir_;
  // --agent-id, else CAR_AGENT_ID (filled in by apply_environment).
  run_config.default_agent_id = options_.agent_id;
  if (options_.grace_ms) run_config.grace = std::chrono::milliseconds(*options_.grace_ms);
  if (options_.drain_timeout_ms) {
    run_config.drain_timeout = std::chrono::milliseconds(*options_.drain_timeout_ms);
  }
  if (options_.drain_on_loop) run_config.drain_thread = DrainThread::loop;
  run_config.sync = options_.sync == SyncOption::batch ? runs::StoreSync::batch : runs::StoreSync::none;
  if (options_.retain_runs) {
    run_config.retention.max_runs_per_agent = static_cast<std::size_t>(*options_.retain_runs);
  }
  if (options_.retain_days) {
    run_config.retention.max_age_days = static_cast<std::uint32_t>(*options_.retain_days);
  }
  if (auto error = nats_export_.configure(options_, state_dir_, run_config)) {
    log_error("{}", *error);
    return false;
  }
  runs_ = runs::install_run_services(*server_, run_config);
  nats_export_.installed(*host_, *runs_);
  return true;
}

int Daemon::run() {
  ServerConfig config;
  session::AuthConfig auth;
  // First: an unusable certificate is a configuration error that needs nothing undone.
  if (!load_tls()) return 1;
  // A gateway (--fleet) has no run store: no state directory to lock.
  if (options_.fleet_servers.empty() && !lock_state_dir()) return 1;
  if (!configure_auth(config, auth)) return 1;
  config.require_handshake = options_.require_handshake;
  if (options_.max_message) config.max_message = static_cast<std::size_t>(*options_.max_message);
  server_ = std::make_unique<Server>(*executor_, config);
  if (!install_services(std::move(auth))) return 1;

  // A peer that vanishes mid-write must produce EPIPE, not kill the process.
  std::signal(SIGPIPE, SIG_IGN);
  uv_signal_init(&loop_, &sigint_);
  uv_signal_init(&loop_, &sigterm_);
  sigint_.data = sigterm_.data = this;
  auto on_signal = [](uv_signal_t* handle, int signum) {
    static_cast<Daemon*>(handle->data)->begin_shutdown(signum == SIGINT ? "SIGINT" : "SIGTERM");
  };
  uv_signal_start(&sigint_, on_signal, SIGINT);
  uv_signal_start(&sigterm_, on_signal, SIGTERM);
  // SIGHUP's default action would kill the daemon (exit 129, no 1001 close): it means "reopen
  // your logs" here, as logrotate expects, and every connection stays open.
  uv_signal_init(&loop_, &sighup_);
  uv_signal_start(&sighup_, [](uv_signal_t*, int) { hangup_daemon_log(); }, SIGHUP);
  uv_timer_init(&loop_, &shutdown_timer_);
  shutdown_timer_.data = this;

  if (!start_listeners()) {
    exit_status_ = 1;
    begin_shutdown("startup failed");
  } else {
    // Every listener listens: a socket-activated client's connection is served from now on.
    notifier_.ready(listening_);
    notifier_.start_watchdog();
  }
  uv_run(&loop_, UV_RUN_DEFAULT);
  // Every connection is gone: the minted token files and the lock go too (PROTOCOL.md §9).
  token_dir_.reset();
  state_lock_.reset();  // the store's last writes landed before the loop ended
  return exit_status_;
}

void Daemon::begin_shutdown(const char* why) {
  if (shutting_down_) return;
  shutting_down_ = true;
  log_info("shutting down ({})", why);
  notifier_.stopping(why);
  // Stop accepting first, then ask every connection to close with 1001 and flush.
  for (auto& l : tcp_listeners_) l->stop();
  for (auto& l : unix_listeners_) l->stop();
  if (stdio_) stdio_->stop();
  server_->close_all(1001, "server shutting down");
  // Every open run ends `incomplete` now (PROTOCOL.md §7.6); its store writes must land before exit.
  if (runs_) {
    runs_flushed_ = false;
    runs_->shutdown([this] { runs_flushed_ = true; });
  }
  // Give connections up to the flush time, checking every 20 ms whether all are gone.
  uv_timer_start(
      &shutdown_timer_,
      [](uv_timer_t* t) {
        auto* self = static_cast<Daemon*>(t->data);
        ++self->flush_ticks_;
        bool connections_done = self->server_->connection_count() == 0 ||
                                self->flush_ticks_ * 20 >= shutdown_flush_ms;
        // Store writes are local file appends: wait for them longer than for peers, but bounded.
        bool store_done = self->runs_flushed_ || self->flush_ticks_ * 20 >= 5 * shutdown_flush_ms;
        if (connections_done && store_done) {
          self->finish_shutdown();
        }
      },
      20, 20);
}

void Daemon::finish_shutdown() {
  if (finished_) return;
  finished_ = true;
  uv_timer_stop(&shutdown_timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&shutdown_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sigint_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sigterm_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sighup_), nullptr);
  // Closing the handle restores SIGHUP's default action; one arriving during the last flush must
  // not turn a clean exit into 129.
  std::signal(SIGHUP, SIG_IGN);
  notifier_.close();
  nats_export_.stop();
  // Connections still open after the flush window are cut off.
  for (auto& c : server_->connections()) c->sink().abort(SinkError::aborted, "shutdown");
  fleet_.stop();
  executor_->shutdown();
}

}  // namespace car::daemon
