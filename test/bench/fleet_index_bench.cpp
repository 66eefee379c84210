// What the fleet gateway's index costs (docs/FLEET.md, "Capacity plan"): the heap one indexed run
// holds, how many records per second one thread applies, and what a runs.list page costs with the
// index full. Records are shaped like exported ones (a `started`, `turns` turns and an `ended`
// per run, ids like car-daemon's), spread over `hosts` hosts with 4 agents each.
//
//   fleet_index_bench [RUNS] [TURNS] [HOSTS]     defaults 100000 10 10000; prints one JSON line
#include <fmt/format.h>
#include <malloc.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "car/fleet/fleet_index.hpp"

namespace {

std::size_t heap_in_use() {
  struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t runs = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 100000;
  std::size_t turns = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 10;
  std::size_t hosts = argc > 3 ? std::strtoul(argv[3], nullptr, 10) : 10000;
  if (runs == 0 || hosts == 0) {
    std::fprintf(stderr, "usage: fleet_index_bench [RUNS] [TURNS] [HOSTS]\n");
    return 2;
  }
  using clock = std::chrono::steady_clock;
  std::size_t heap_before = heap_in_use();
  car::fleet::FleetIndex index({.max_runs = runs, .max_hosts = hosts});
  std::uint64_t sequence = 0;
  std::uint64_t records = 0;
  std::string turn = R"({"record":"turn","index":0,"prompt":"p","response":"r"})";
  auto started = clock::now();
  for (std::size_t i = 0; i < runs; ++i) {
    std::string host = fmt::format("host-{:05}", i % hosts);
    std::string agent = fmt::format("agent-{}", (i / hosts) % 4);
    std::string run = fmt::format("run-{:08x}-4c1e-9a7b-{:012x}", i, i * 2654435761u);
    std::string first = fmt::format(
        R"({{"record":"started","run_id":"{}","agent_id":"{}","client_id":"c-{}",)"
        R"("intent":"fix the flaky test in module {}","started_at":"2026-12-03T10:{:02}:{:02}.000Z"}})",
        run, agent, i, i % 97, (i / 60) % 60, i % 60);
    auto apply = [&](std::uint64_t offset, const std::string& json) {
      index.apply({host, agent, run, offset, ++sequence, static_cast<std::int64_t>(sequence), json});
      records += 1;
    };
    apply(0, first);
    for (std::size_t t = 0; t < turns; ++t) apply(t + 1, turn);
    apply(turns + 1, R"({"record":"ended","termination":"outcome","ended_at":"2026-12-03T11:00:00.000Z"})");
  }
  double seconds = std::chrono::duration<double>(clock::now() - started).count();
  std::size_t heap_after = heap_in_use();

  // A full page of the most crowded agent, as runs.list asks for it.
  auto listed = clock::now();
  constexpr int pages = 200;
  std::size_t listed_runs = 0;
  for (int p = 0; p < pages; ++p) {
    auto page = index.list("agent-0", std::nullopt, 100, std::nullopt);
    if (page) listed_runs += page.value().runs.size();
  }
  double list_us = std::chrono::duration<double, std::micro>(clock::now() - listed).count() / pages;
  if (index.run_count() != runs || listed_runs == 0) {
    std::fprintf(stderr, "fleet_index_bench: indexed %zu of %zu runs\n", index.run_count(), runs);
    return 1;
  }
  std::printf(
      "{\"runs\":%zu,\"turns\":%zu,\"hosts\":%zu,\"records\":%llu,\"records_per_s\":%.0f,"
      "\"heap_bytes_per_run\":%.0f,\"list_page_100_us\":%.1f}\n",
      runs, turns, hosts, static_cast<unsigned long long>(records),
      static_cast<double>(records) / seconds,
      static_cast<double>(heap_after - heap_before) / static_cast<double>(runs), list_us);
  return 0;
}
