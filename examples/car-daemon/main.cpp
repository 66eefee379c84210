// car-daemon: the reference daemon built on carcore.
#include <cstdio>
#include <variant>

#include <fmt/format.h>

#include "car/log.hpp"
#include "car/version.hpp"
#include "cli.hpp"
#include "daemon.hpp"

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
    return 0;
  }
  car::set_log_level(options.log_level);
  try {
    car::daemon::Daemon daemon(std::move(options));
    return daemon.run();
  } catch (const std::exception& e) {
    car::log_error("fatal: {}", e.what());
    return 1;
  }
}
