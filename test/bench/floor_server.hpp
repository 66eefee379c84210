// car-bench floor-server: the no-limits floor of issue 14 — a single-threaded epoll JSON-RPC
// WebSocket server (floor_server.cpp) doing baseline_rpc's JSON work.
#pragma once

#include "bench_servers.hpp"

namespace car_bench {

// Runs until SIGINT/SIGTERM or max_seconds; prints `listening ...` on stderr when ready.
int run_floor_server(const ServerOptions& options);

}  // namespace car_bench
