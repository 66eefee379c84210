// Dispatch CPU per small request (issue 3's benchmark): parse → route → trivial handler →
// serialize the reply, with no I/O, against RapidJSON parsing and stringifying the same bytes in
// the same run. Prints one JSON line per round and a final summary line with the median ratio.
//
//   dispatch_bench [iterations-per-round] [rounds]
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include "car/carcore.hpp"
#include "car/testing/manual_executor.hpp"
#include "null_sink.hpp"

namespace {

using car::bench::NullSink;
using car::bench::thread_cpu_ns;

const std::string kRequest =
    R"({"jsonrpc":"2.0","id":17,"method":"bench.echo","params":{"value":"hello","n":42}})";

std::size_t g_sink_guard = 0;

double baseline_ns(int iterations) {
  double start = thread_cpu_ns();
  for (int i = 0; i < iterations; ++i) {
    rapidjson::Document doc;
    doc.Parse(kRequest.c_str(), kRequest.size());
    rapidjson::StringBuffer buffer;
    rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
    doc.Accept(writer);
    g_sink_guard += buffer.GetSize();
  }
  return (thread_cpu_ns() - start) / iterations;
}

// The same work with RapidJSON used as cheaply as it can be: the DOM in a stack buffer (no 64 KiB
// pool chunk per document) and a reserved output buffer. This is the stricter baseline.
double tuned_baseline_ns(int iterations) {
  double start = thread_cpu_ns();
  rapidjson::StringBuffer buffer(nullptr, 256);
  for (int i = 0; i < iterations; ++i) {
    char value_buffer[4096];
    rapidjson::MemoryPoolAllocator<> allocator(value_buffer, sizeof value_buffer);
    rapidjson::Document doc(&allocator, 256);
    doc.Parse(kRequest.c_str(), kRequest.size());
    buffer.Clear();
    rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
    doc.Accept(writer);
    g_sink_guard += buffer.GetSize();
  }
  return (thread_cpu_ns() - start) / iterations;
}

double dispatch_ns(car::Connection& connection, int iterations) {
  double start = thread_cpu_ns();
  for (int i = 0; i < iterations; ++i) connection.receive(kRequest);
  return (thread_cpu_ns() - start) / iterations;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int iterations = argc > 1 ? std::atoi(argv[1]) : 200000;
  int rounds = argc > 2 ? std::atoi(argv[2]) : 7;
  car::testing::ManualExecutor executor;
  car::ServerConfig config;
  config.require_auth = false;
  car::Server server(executor, config);
  server.methods().add("bench.echo", {car::required("value", car::ParamType::string)},
                       [](const car::Request&, car::Reply reply) { reply.ok(R"({"ok":true})"); });
  auto sink = std::make_shared<NullSink>();
  auto connection = server.open_connection("bench", sink);

  // Warm up both paths (allocator pools, caches), then alternate them so drift hits both equally.
  baseline_ns(iterations / 10);
  tuned_baseline_ns(iterations / 10);
  dispatch_ns(*connection, iterations / 10);
  std::vector<double> base, tuned, ours, ratio, tuned_ratio;
  for (int r = 0; r < rounds; ++r) {
    double b = baseline_ns(iterations);
    double t = tuned_baseline_ns(iterations);
    double d = dispatch_ns(*connection, iterations);
    base.push_back(b);
    tuned.push_back(t);
    ours.push_back(d);
    ratio.push_back(d / b);
    tuned_ratio.push_back(d / t);
    std::printf(R"({"bench":"dispatch","round":%d,"rapidjson_ns":%.1f,"rapidjson_tuned_ns":%.1f,"dispatch_ns":%.1f,"ratio":%.3f,"ratio_tuned":%.3f})"
                "\n", r, b, t, d, d / b, d / t);
  }
  if (sink->frames != static_cast<std::size_t>(iterations) * (rounds + 0) + iterations / 10) {
    std::fprintf(stderr, "unexpected reply count %zu\n", sink->frames);
    return 1;
  }
  std::printf(R"({"bench":"dispatch","summary":true,"median_rapidjson_ns":%.1f,"median_rapidjson_tuned_ns":%.1f,"median_dispatch_ns":%.1f,"median_ratio":%.3f,"median_ratio_tuned":%.3f,"target":2.0})"
              "\n", median(base), median(tuned), median(ours), median(ratio), median(tuned_ratio));
  return g_sink_guard == 0 ? 1 : 0;
}
