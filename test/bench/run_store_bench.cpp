// Run-store lookup and list latency against the number of stored runs (issue 13, PROTOCOL.md
// §7.7): a find() hit, a find() miss (an unknown run_id or a fresh idempotency key) and a
// runs.list page of 100, with 10^2, 10^4 and 10^5 runs stored (100 runs per agent), each reported
// as a median and as a ratio to the smallest store. The JSONL store indexes its files, so the
// ratios should stay near 1. Not a test: it prints and never fails on a figure.
//
//   run_store_bench [--smoke] [--dir DIR]   (--smoke: 10 and 100 runs, a few samples)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "car/runs/run_record.hpp"
#include "car/runs/run_store.hpp"

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t runs_per_agent = 100;

double median_us(std::vector<double> samples) {
  std::sort(samples.begin(), samples.end());
  return samples.empty() ? 0 : samples[samples.size() / 2];
}

std::string run_id(std::size_t i) { return "run-" + std::to_string(i); }
std::string agent_id(std::size_t i) { return "agent-" + std::to_string(i / runs_per_agent); }

struct Figures {
  std::size_t runs = 0;
  double hit_us = 0;
  double miss_us = 0;
  double page_us = 0;       // cold: a fresh store loads the agent's summary log first
  double warm_page_us = 0;  // the same page again: served from the cached log
};

Figures measure(const std::filesystem::path& dir, std::size_t runs, std::size_t samples) {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  auto store = car::runs::make_jsonl_run_store(dir.string());
  const auto base = std::chrono::system_clock::now() - std::chrono::hours(1);
  for (std::size_t i = 0; i < runs; ++i) {
    std::string at = car::runs::format_timestamp(base + std::chrono::milliseconds(i));
    std::vector<std::string> records{
        car::runs::make_started_record({run_id(i), agent_id(i), "bench", "x", std::nullopt, at}),
        R"({"record":"turn","index":0,"prompt":"p","verifier_verdict":"not_run"})",
        car::runs::make_ended_record(R"({"status":"ok"})", at)};
    if (auto error = store->append(agent_id(i), run_id(i), records)) {
      std::fprintf(stderr, "append failed: %s\n", error->c_str());
      std::exit(1);
    }
  }
  // A fresh store, as after a restart: nothing of the writes above is cached.
  store = car::runs::make_jsonl_run_store(dir.string());
  std::mt19937 rng(42);
  std::uniform_int_distribution<std::size_t> pick(0, runs - 1);
  std::vector<double> hit, miss, page, warm;
  std::size_t guard = 0;
  for (std::size_t s = 0; s < samples; ++s) {
    std::size_t i = pick(rng);
    auto t0 = Clock::now();
    auto found = store->find(run_id(i));
    auto t1 = Clock::now();
    auto missing = store->find("missing-" + std::to_string(s));
    auto t2 = Clock::now();
    // A cold page: a store with nothing cached (as after a restart, or for an agent that left
    // the 64-agent cache), so every sample loads that agent's summary log. Measured on a fresh
    // store so that the row means the same at every size: with 1 or 100 agents a long-lived
    // store would serve most samples from its cache, with 1,000 agents almost none.
    auto cold = car::runs::make_jsonl_run_store(dir.string());
    t2 = Clock::now();
    auto listed = cold->list_page(agent_id(i), 100, std::nullopt);
    auto t3 = Clock::now();
    auto again = cold->list_page(agent_id(i), 100, std::nullopt);
    auto t4 = Clock::now();
    if (!found || missing || !listed || !again || again->runs.size() != listed->runs.size()) {
      std::fprintf(stderr, "wrong answer at sample %zu\n", s);
      std::exit(1);
    }
    guard += listed->runs.size();
    hit.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    miss.push_back(std::chrono::duration<double, std::micro>(t2 - t1).count());
    page.push_back(std::chrono::duration<double, std::micro>(t3 - t2).count());
    warm.push_back(std::chrono::duration<double, std::micro>(t4 - t3).count());
  }
  if (guard == 0) std::exit(1);
  return {runs, median_us(hit), median_us(miss), median_us(page), median_us(warm)};
}

}  // namespace

int main(int argc, char** argv) {
  bool smoke = false;
  std::filesystem::path dir = std::filesystem::temp_directory_path() / "carcore-run-store-bench";
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--smoke") == 0) {
      smoke = true;
    } else if (std::strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
      dir = argv[++i];
    } else {
      std::fprintf(stderr, "usage: run_store_bench [--smoke] [--dir DIR]\n");
      return 2;
    }
  }
  std::vector<std::size_t> sizes = smoke ? std::vector<std::size_t>{10, 100}
                                         : std::vector<std::size_t>{100, 10000, 100000};
  const std::size_t samples = smoke ? 20 : 2000;
  std::vector<Figures> all;
  for (std::size_t runs : sizes) {
    all.push_back(measure(dir, runs, samples));
    const Figures& f = all.back();
    const Figures& first = all.front();
    std::printf(
        "{\"runs\":%zu,\"find_hit_us\":%.1f,\"find_miss_us\":%.1f,\"list_page_us\":%.1f,"
        "\"warm_page_us\":%.1f,\"hit_ratio\":%.2f,\"miss_ratio\":%.2f,\"page_ratio\":%.2f,"
        "\"warm_page_ratio\":%.2f}\n",
        f.runs, f.hit_us, f.miss_us, f.page_us, f.warm_page_us, f.hit_us / first.hit_us,
        f.miss_us / first.miss_us, f.page_us / first.page_us, f.warm_page_us / first.warm_page_us);
    std::fflush(stdout);
  }
  std::filesystem::remove_all(dir);
  return 0;
}
