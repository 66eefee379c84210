// The baseline servers of car-bench (see bench_servers.cpp) and the fixed request/reply bytes
// every target is driven with.
#pragma once

#include <cstddef>
#include <string>

namespace car_bench {

// The benchmarked request and the reply car-daemon gives to it (byte for byte, for protocol
// version 2 and server version 0.1.0). The 6-digit id sits at kIdOffset in both; car-bench
// writes the slot number there.
inline constexpr const char* kRequest =
    R"({"jsonrpc":"2.0","id":100000,"method":"server.handshake","params":{"protocol_version":2}})";
inline constexpr const char* kReply =
    R"({"jsonrpc":"2.0","id":100000,"result":{"protocol_version":2,"server_version":"0.1.0",)"
    R"("client_protocol_version":2}})";
inline constexpr std::size_t kIdOffset = 22;
inline constexpr std::size_t kIdDigits = 6;

struct ServerOptions {
  bool websocket = false;  // ws-prebuilt-server; else echo-server (NDJSON lines)
  std::string unix_path;   // listen on this Unix socket, else on 127.0.0.1:tcp_port
  int tcp_port = 0;
  int cpu = -1;            // pin to this core
  int max_seconds = 3600;  // bound: exit after this long even if never signalled
};

// Opens the non-blocking listening socket for `options` and sets `url` to what the `listening`
// line shows (ws://127.0.0.1:PORT, tcp:127.0.0.1:PORT or unix:PATH). Returns -1 on failure.
int listen_socket(const ServerOptions& options, std::string& url);

// Runs until SIGINT/SIGTERM or max_seconds; prints `listening ...` on stderr when ready.
int run_server(const ServerOptions& options);

}  // namespace car_bench
