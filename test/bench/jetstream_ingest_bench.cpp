// What one JetStream broker (or cluster) takes in, for the fleet capacity plan (docs/FLEET.md):
// messages shaped like exported run records — a Nats-Msg-Id per message (so the broker pays for
// de-duplication, as with the exporter), spread over many run subjects — published
//   1. asynchronously with at most `window` unacknowledged (throughput: records/s and MB/s), then
//   2. one at a time, waiting for each acknowledgement (the round trip a record pays: p50/p99).
// The stream is created for the run and deleted after it. Prints one JSON line.
//
//   jetstream_ingest_bench URLS [--replicas N] [--count N] [--size BYTES] [--subjects N]
//                          [--window N] [--latency-count N] [--keep 1]
// --keep 1 leaves the stream in place (the driver samples the broker's memory, then deletes it).
#include <nats/nats.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Args {
  std::string urls;
  int replicas = 1;
  long count = 100000;
  int size = 400;
  int subjects = 1000;
  int window = 4096;
  int latency_count = 1000;
  bool keep = false;
};

bool parse(int argc, char** argv, Args& args) {
  if (argc < 2) return false;
  args.urls = argv[1];
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    long value = std::strtol(argv[i + 1], nullptr, 10);
    if (value <= 0) return false;
    if (flag == "--replicas") {
      args.replicas = static_cast<int>(value);
    } else if (flag == "--count") {
      args.count = value;
    } else if (flag == "--size") {
      args.size = static_cast<int>(value);
    } else if (flag == "--subjects") {
      args.subjects = static_cast<int>(value);
    } else if (flag == "--window") {
      args.window = static_cast<int>(value);
    } else if (flag == "--latency-count") {
      args.latency_count = static_cast<int>(value);
    } else if (flag == "--keep") {
      args.keep = true;
    } else {
      return false;
    }
  }
  return (argc % 2) == 0;
}

int fail(const char* what, natsStatus status) {
  std::fprintf(stderr, "jetstream_ingest_bench: %s: %s\n", what, natsStatus_GetText(status));
  return 1;
}

// One record-shaped message: its subject, msg id and payload (a JSON-looking body of `size` bytes).
natsStatus make_message(natsMsg** msg, const Args& args, long i, const std::string& body) {
  char subject[96];
  char id[96];
  std::snprintf(subject, sizeof subject, "carbench.runs.host.agent.run-%ld", i % args.subjects);
  std::snprintf(id, sizeof id, "host/run-%ld/%ld", i % args.subjects, i / args.subjects);
  natsStatus s = natsMsg_Create(msg, subject, nullptr, body.data(), static_cast<int>(body.size()));
  if (s == NATS_OK) s = natsMsgHeader_Set(*msg, "Nats-Msg-Id", id);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  if (!parse(argc, argv, args)) {
    std::fprintf(stderr,
                 "usage: jetstream_ingest_bench URLS [--replicas N] [--count N] [--size BYTES] "
                 "[--subjects N] [--window N] [--latency-count N] [--keep 1]\n");
    return 2;
  }
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  natsStatus s = natsConnection_ConnectTo(&nc, args.urls.c_str());
  if (s != NATS_OK) return fail("connect", s);
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = 30000;
  jo.PublishAsync.MaxPending = args.window;
  jo.PublishAsync.StallWait = 30000;
  if ((s = natsConnection_JetStream(&js, nc, &jo)) != NATS_OK) return fail("jetstream", s);

  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  const char* subjects[] = {"carbench.>"};
  cfg.Name = "CARBENCH";
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Storage = js_FileStorage;
  cfg.Replicas = args.replicas;
  cfg.Duplicates = 120LL * 1000 * 1000 * 1000;  // 2 min, as the exporter's stream
  jsErrCode jerr = static_cast<jsErrCode>(0);
  js_DeleteStream(js, "CARBENCH", nullptr, &jerr);  // a leftover of an interrupted run
  if ((s = js_AddStream(nullptr, js, &cfg, nullptr, &jerr)) != NATS_OK) return fail("add stream", s);

  std::string body = "{\"record\":\"turn\",\"turn\":{\"role\":\"assistant\",\"content\":\"";
  body.resize(static_cast<std::size_t>(std::max(args.size - 3, static_cast<int>(body.size()))), 'x');
  body += "\"}}";

  using clock = std::chrono::steady_clock;
  auto started = clock::now();
  for (long i = 0; i < args.count; ++i) {
    natsMsg* msg = nullptr;
    if ((s = make_message(&msg, args, i, body)) != NATS_OK) return fail("message", s);
    s = js_PublishMsgAsync(js, &msg, nullptr);
    natsMsg_Destroy(msg);  // null once the library took it
    if (s != NATS_OK) return fail("publish async", s);
  }
  jsPubOptions wait_all;
  jsPubOptions_Init(&wait_all);
  wait_all.MaxWait = 120000;
  if ((s = js_PublishAsyncComplete(js, &wait_all)) != NATS_OK) return fail("publish complete", s);
  double seconds = std::chrono::duration<double>(clock::now() - started).count();

  std::vector<double> latencies_us;
  latencies_us.reserve(static_cast<std::size_t>(args.latency_count));
  for (int i = 0; i < args.latency_count; ++i) {
    natsMsg* msg = nullptr;
    if ((s = make_message(&msg, args, args.count + i, body)) != NATS_OK) return fail("message", s);
    jsPubAck* ack = nullptr;
    auto sent = clock::now();
    s = js_PublishMsg(&ack, js, msg, nullptr, &jerr);
    latencies_us.push_back(std::chrono::duration<double, std::micro>(clock::now() - sent).count());
    natsMsg_Destroy(msg);
    jsPubAck_Destroy(ack);
    if (s != NATS_OK) return fail("publish", s);
  }
  std::sort(latencies_us.begin(), latencies_us.end());
  auto at = [&](double q) {
    return latencies_us[static_cast<std::size_t>(q * static_cast<double>(latencies_us.size() - 1))];
  };

  std::printf(
      "{\"replicas\":%d,\"count\":%ld,\"size\":%d,\"subjects\":%d,\"window\":%d,"
      "\"records_per_s\":%.0f,\"mb_per_s\":%.2f,\"ack_p50_us\":%.0f,\"ack_p99_us\":%.0f}\n",
      args.replicas, args.count, args.size, args.subjects, args.window,
      static_cast<double>(args.count) / seconds,
      static_cast<double>(args.count) * args.size / seconds / 1e6, at(0.50), at(0.99));

  if (!args.keep) js_DeleteStream(js, "CARBENCH", nullptr, &jerr);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  nats_Close();
  return 0;
}
