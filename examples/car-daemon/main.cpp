// car-daemon: the reference daemon built on carcore.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <variant>

#include <fmt/format.h>

#include "car/log.hpp"
#include "car/version.hpp"
#include "cli.hpp"
#include "daemon.hpp"
#include "daemon_log.hpp"
#include "nats_export.hpp"
#include "systemd_activation.hpp"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = car::daemon::parse_command_line(args);
  if (auto* error = std::get_if<car::daemon::CliError>(&parsed)) {
    fmt::print(stderr, "car-daemon: {}\nTry 'car-daemon --help'.\n", error->message);
    return 2;
  }
  auto& options = std::get<car::daemon::Options>(parsed);
  if (options.help) {
    fmt::print("{}", car::daemon::usage_text());
    return 0;
  }
  if (options.version) {
    fmt::print("car-daemon {} (protocol {})\n", car::version_string, car::protocol_version);
    // Optional build features, one word each ("none" without any): scripts and tests read it.
    std::string features;
    if (car::daemon::systemd_supported()) features += " systemd";
    if (car::daemon::nats_supported()) features += " nats";
    fmt::print("features:{}\n", features.empty() ? " none" : features);
    return 0;
  }
  // PROTOCOL.md §9: CAR_* variables fill what the flags left unset; a bad one is a bad invocation.
  if (auto error = car::daemon::apply_environment(
          options, [](const char* name) { return std::getenv(name); })) {
    fmt::print(stderr, "car-daemon: {}\nTry 'car-daemon --help'.\n", error->message);
    return 2;
  }
  if (auto error = car::daemon::check_exposure(options)) {
    fmt::print(stderr, "car-daemon: {}\n", error->message);
    return 2;
  }
  if (!options.nats_servers.empty() && !car::daemon::nats_supported()) {
    fmt::print(stderr, "car-daemon: --nats: this car-daemon was built without the nats feature "
                       "(meson -Dnats=enabled, needs libnats)\n");
    return 2;
  }
  if (!options.fleet_servers.empty() && !car::daemon::nats_supported()) {
    fmt::print(stderr, "car-daemon: --fleet: this car-daemon was built without the nats feature "
                       "(meson -Dnats=enabled, needs libnats)\n");
    return 2;
  }
  car::set_log_level(options.log_level);
  // Every log record goes through a writer thread, stderr's or --log-file's (daemon_log.hpp).
  auto log_format = options.log_format == car::daemon::LogFormatOption::json
                        ? car::daemon::LogLineFormat::json
                        : car::daemon::LogLineFormat::text;
  if (auto error = car::daemon::install_daemon_log(log_format, options.log_file)) {
    fmt::print(stderr, "car-daemon: {}\n", error->message);
    return 1;
  }
  // Sockets a service manager passed (systemd socket activation); they obey --no-auth's
  // exposure rule like --listen does.
  auto inherited = car::daemon::take_inherited_sockets();
  if (!inherited) {
    car::log_error("{}", inherited.error().message);
    car::daemon::flush_daemon_log(std::chrono::seconds(2));
    return 1;
  }
  if (auto error = car::daemon::check_inherited_exposure(options, inherited.value())) {
    car::log_error("{}", error->message);
    car::daemon::flush_daemon_log(std::chrono::seconds(2));
    return 2;
  }
  if (options.threads) {
    // libuv sizes its pool from the environment when the first job is queued (PROTOCOL.md §9 --threads).
    setenv("UV_THREADPOOL_SIZE", std::to_string(*options.threads).c_str(), 1);
  }
  int status = 1;
  try {
    car::daemon::Daemon daemon(std::move(options), std::move(inherited.value()));
    status = daemon.run();
  } catch (const std::exception& e) {
    car::log_error("fatal: {}", e.what());
  }
  car::daemon::release_nats_library();
  // Bounded: a stderr nobody reads must not keep the process from exiting.
  car::daemon::flush_daemon_log(std::chrono::seconds(2));
  return status;
}
