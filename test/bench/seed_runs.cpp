// seed_runs: fills a daemon state directory with N completed runs through carcore's own run store
// (make_jsonl_run_store), so the files are laid out exactly as car-daemon writes them. Used by
// run-all.sh's "stored runs" cost curve: the daemon is then started on the directory and car-bench
// measures request cost against N. Runs are spread round-robin over --agents agents; each has a
// started record, one turn and an ended record. Prints one JSON line with the seeding time.
//
//   seed_runs --dir DIR --runs N [--agents A]     (run ids seed-0 … seed-(N-1))
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "car/runs/run_record.hpp"
#include "car/runs/run_store.hpp"

int main(int argc, char** argv) {
  std::string dir;
  long runs = 0;
  long agents = 100;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--dir") == 0) dir = argv[i + 1];
    else if (std::strcmp(argv[i], "--runs") == 0) runs = std::atol(argv[i + 1]);
    else if (std::strcmp(argv[i], "--agents") == 0) agents = std::atol(argv[i + 1]);
  }
  if (dir.empty() || runs < 1 || agents < 1) {
    std::fprintf(stderr, "usage: seed_runs --dir DIR --runs N [--agents A]\n");
    return 2;
  }
  auto t0 = std::chrono::steady_clock::now();
  auto store = car::runs::make_jsonl_run_store(dir);
  // Started an hour ago, one millisecond apart, so list pages have a stable newest-first order.
  const auto base = std::chrono::system_clock::now() - std::chrono::hours(1);
  for (long i = 0; i < runs; ++i) {
    std::string run_id = "seed-" + std::to_string(i);
    std::string agent_id = "agent-" + std::to_string(i % agents);
    std::string at = car::runs::format_timestamp(base + std::chrono::milliseconds(i));
    std::vector<std::string> records{
        car::runs::make_started_record({run_id, agent_id, "seed", "seeded run", std::nullopt, at}),
        R"({"record":"turn","index":0,"prompt":"p","tool":"seed","verifier_verdict":"not_run"})",
        car::runs::make_ended_record(R"({"status":"ok"})", at)};
    if (auto error = store->append(agent_id, run_id, records)) {
      std::fprintf(stderr, "seed_runs: append failed: %s\n", error->c_str());
      return 1;
    }
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("{\"scenario\":\"seed\",\"runs\":%ld,\"agents\":%ld,\"seed_seconds\":%.3f}\n", runs,
              agents, seconds);
  return 0;
}
