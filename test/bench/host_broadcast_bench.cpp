// host.event broadcast cost (issue 5's benchmark): with S subscribers, the CPU a host.notify
// spends per delivered event, compared with serializing one host.event frame. The frame is
// serialized once and shared, so the per-subscriber cost must stay within 0.1× of one
// serialization. Subscribers are real Connections (host.subscribe) over sinks that accept and
// drop frames, so the measurement is the core's fan-out, not a transport.
//
//   host_broadcast_bench [notifies-per-point]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <string>
#include <vector>

#include "car/carcore.hpp"
#include "car/host/host_service.hpp"
#include "car/testing/manual_executor.hpp"
#include "null_sink.hpp"

namespace {

using car::bench::NullSink;
using car::bench::thread_cpu_ns;

const std::string kNotify =
    R"({"jsonrpc":"2.0","method":"host.notify","params":{"message":"build finished","payload":{"job":"nightly","ok":true}}})";

// CPU per host.notify with `subscribers` subscribed connections.
double notify_ns(int subscribers, int notifies) {
  car::testing::ManualExecutor executor;
  car::ServerConfig config;
  config.require_auth = false;
  car::Server server(executor, config);
  auto host = car::host::install_host_services(server, {});
  std::vector<std::shared_ptr<car::Connection>> subs;
  for (int i = 0; i < subscribers; ++i) {
    auto c = server.open_connection("sub", std::make_shared<NullSink>());
    c->receive(R"({"jsonrpc":"2.0","id":1,"method":"host.subscribe","params":{}})");
    subs.push_back(std::move(c));
  }
  executor.run_until_idle();
  auto producer = server.open_connection("producer", std::make_shared<NullSink>());
  for (int i = 0; i < notifies / 10; ++i) producer->receive(kNotify);  // warm-up
  executor.run_until_idle();
  double start = thread_cpu_ns();
  for (int i = 0; i < notifies; ++i) {
    producer->receive(kNotify);
    executor.run_until_idle();
  }
  return (thread_cpu_ns() - start) / notifies;
}

// CPU to serialize one host.event notification frame of the same shape.
double serialize_ns(int iterations) {
  std::size_t guard = 0;
  double start = thread_cpu_ns();
  for (int i = 0; i < iterations; ++i) {
    car::json::Builder b;
    b.begin_object().key("jsonrpc").str("2.0").key("method").str("host.event").key("params");
    b.begin_object()
        .key("id").str("event-0b7c1e39-5a57-4b8e-9f0e-1f5bd3c6a0aa")
        .key("sequence").integer(i)
        .key("timestamp").str("2026-11-25T17:00:00.123Z")
        .key("kind").str("host.notification")
        .key("message").str("build finished")
        .key("payload").begin_object().key("job").str("nightly").key("ok").boolean(true).end_object()
        .end_object()
        .end_object();
    auto frame = car::make_frame(b.take());
    guard += frame->size();
  }
  double ns = (thread_cpu_ns() - start) / iterations;
  return guard == 0 ? -1 : ns;
}

}  // namespace

int main(int argc, char** argv) {
  car::set_log_level(car::LogLevel::warn);
  int notifies = argc > 1 ? std::atoi(argv[1]) : 2000;
  double serialize = serialize_ns(notifies * 10);
  double base = notify_ns(0, notifies);
  double worst = 0;
  for (int subscribers : {1, 10, 100, 1000}) {
    double total = notify_ns(subscribers, notifies);
    double per_delivery = (total - base) / subscribers;
    double ratio = per_delivery / serialize;
    worst = std::max(worst, subscribers >= 10 ? ratio : 0.0);
    std::printf(R"({"bench":"host_broadcast","subscribers":%d,"notify_ns":%.0f,"notify_ns_no_subscribers":%.0f,"per_delivery_ns":%.1f,"serialize_once_ns":%.1f,"ratio":%.3f,"target":0.1})"
                "\n", subscribers, total, base, per_delivery, serialize, ratio);
  }
  std::printf(R"({"bench":"host_broadcast","summary":true,"worst_ratio_10_plus":%.3f,"target":0.1})" "\n", worst);
  return 0;
}
