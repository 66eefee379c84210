#pragma once

#include <uv.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "car/host/host_service.hpp"
#include "car/runs/run_service.hpp"
#include "car/server.hpp"
#include "car/session/pid_lock_file.hpp"
#include "car/session/session_service.hpp"
#include "car/session/token_file.hpp"
#include "car/stdio/stdio_transport.hpp"
#include "car/unix_socket/unix_listener.hpp"
#include "car/uv/uv_executor.hpp"
#include "car/ws/tcp_listener.hpp"
#include "cli.hpp"
#include "fleet_mode.hpp"
#include "inherited_sockets.hpp"
#include "nats_export.hpp"
#include "systemd_notify.hpp"
#include "http_routes.hpp"

// car-daemon's process: resolves configuration from the command line, owns the libuv loop, the
// server and its services, the listeners, and the signal handling for graceful shutdown.
namespace car::daemon {

class Daemon {
 public:
  // `inherited`: listening sockets passed by a service manager (systemd_activation.hpp), served
  // beside the flags' listeners; when there are any, the default listener is not added.
  explicit Daemon(Options options, std::vector<InheritedSocket> inherited = {});
  ~Daemon();

  // Runs until shutdown; returns the process exit status (0 normal, 1 runtime failure).
  int run();

 private:
  bool lock_state_dir();
  // --tls-cert/--tls-key: loads and checks them into tls_ (false, logged, when they are unusable).
  bool load_tls();
  bool configure_auth(ServerConfig& config, session::AuthConfig& auth);
  bool mint_tokens(session::AuthConfig& auth, bool mint_daemon, bool mint_host);
  bool install_services(session::AuthConfig auth);  // false (logged): exit 1
  bool start_listeners();
  // The listener options for a listener: with plain HTTP (http_routes_) when --http-endpoints
  // serves it (`loopback`: the listener is a loopback address or a Unix socket).
  using ListenerOptions = std::function<std::shared_ptr<ws::WsOptions>(bool loopback)>;
  // Serves every inherited socket (adopt_listeners.cpp); false (logged) when one cannot be.
  bool adopt_inherited(const ListenerOptions& options_for);
  // Fills http_routes_ (/healthz, /metrics, ...) before the first listener starts.
  void install_http_routes();
  void begin_shutdown(const char* why);
  void finish_shutdown();

  Options options_;
  std::string state_dir_;
  // `<state_dir>/state.lock`, held while the daemon runs: one daemon per run store.
  std::unique_ptr<session::PidLockFile> state_lock_;
  // Held while the daemon runs when it minted tokens: the lock, and the files it removes.
  std::unique_ptr<session::TokenDirectory> token_dir_;
  uv_loop_t loop_{};
  std::unique_ptr<uv::UvExecutor> executor_;
  std::unique_ptr<Server> server_;
  std::shared_ptr<session::SessionService> sessions_;
  std::shared_ptr<host::HostService> host_;
  std::shared_ptr<runs::RunService> runs_;
  // --fleet: the gateway instead of host_ and runs_ (both null then); stopped in finish_shutdown.
  FleetMode fleet_;
  NatsExport nats_export_;  // --nats; stopped in finish_shutdown, before the services go
  std::atomic<bool> runs_flushed_{true};
  std::shared_ptr<stdio::StdioTransport> stdio_;
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  // What plain HTTP on a listener answers (--http-endpoints says which listeners); shared with
  // each listener's WsOptions::http_handler, only read once the listeners start.
  std::shared_ptr<HttpRoutes> http_routes_ = std::make_shared<HttpRoutes>();
  // The token the start-up `viewer:` line carries (viewer_route.hpp): the host token when this
  // daemon minted it, else the daemon token when it minted that; empty = no line (a token the
  // operator gave is never echoed).
  std::string viewer_token_;
  // The TLS context every TCP listener shares (null without --tls-cert).
  std::shared_ptr<const tls::ServerContext> tls_;
  std::vector<std::unique_ptr<ws::TcpListener>> tcp_listeners_;
  std::vector<std::unique_ptr<unix_socket::UnixListener>> unix_listeners_;
  uv_signal_t sigint_{};
  uv_signal_t sigterm_{};
  uv_signal_t sighup_{};  // reopens --log-file (daemon_log.hpp); never a shutdown
  uv_timer_t shutdown_timer_{};
  bool shutting_down_ = false;
  bool finished_ = false;
  std::uint64_t flush_ticks_ = 0;
  int exit_status_ = 0;
  std::vector<InheritedSocket> inherited_;
  // The `listening ...` targets, for the READY=1 status line.
  std::vector<std::string> listening_;
  ServiceNotifier notifier_{&loop_};
};

// The state directory from --state-dir, $XDG_STATE_HOME/car or ~/.local/state/car.
std::string default_state_dir();

// Where tokens are minted without --token-dir (PROTOCOL.md §9): $XDG_RUNTIME_DIR/ai.parslee.car,
// else ~/.config/ai.parslee.car; an error when there is neither a runtime nor a home directory.
Result<std::string> default_token_dir();

}  // namespace car::daemon
