#pragma once

#include <nats/nats.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "car/fleet/fleet_trace.hpp"
#include "car/result.hpp"

// Private to the fleet layer: the gateway's reads of the exporter's stream through libnats
// (docs/FLEET.md "Gateway"). One NATS connection; every consumer is an ephemeral *ordered*
// consumer, which libnats keeps gap-free across reconnects and cluster fail-overs by recreating
// it from the last stream sequence it delivered.
//
// Threads: consume() callbacks run on libnats' delivery threads (the global delivery pool, so a
// subscription does not cost a thread), one message at a time per subscription, in stream
// order. fetch_run() and close() block on the network: call them only from the gateway's own
// worker thread, never on the loop or the pool. Lifetime: owned by the gateway; close() ends every
// subscription and the connection.
namespace car::fleet::detail {

// One run message as read: its ids (from the subject), offset (header Car-Offset), stream
// sequence, store time and payload.
struct StreamMessage {
  std::string host_id;
  std::string agent_id;
  std::string run_id;
  std::uint64_t offset = 0;
  std::uint64_t sequence = 0;
  std::int64_t stored_at_ns = 0;
  std::string json;
};

struct JetStreamOptions {
  std::vector<std::string> servers;  // nats://host:port, tried in order, reconnected forever
  std::string stream = "CAR";
  std::string prefix = "car";
  std::chrono::milliseconds request_timeout{5000};
  std::chrono::milliseconds heartbeat{1000};  // of every ordered consumer: fail-over detection
};

// An async subscription; destroying it (or calling stop) unsubscribes. stop() blocks on a
// round trip to the server: worker thread only.
class Consumer {
 public:
  using OnMessage = std::function<void(StreamMessage)>;
  Consumer() = default;
  Consumer(const Consumer&) = delete;
  Consumer& operator=(const Consumer&) = delete;
  ~Consumer();
  void stop();

 private:
  friend class JetStreamReader;
  natsSubscription* sub_ = nullptr;
};

class JetStreamReader {
 public:
  // Connects (the first server that answers); -32603 with libnats' text when none does.
  static Result<std::unique_ptr<JetStreamReader>> connect(JetStreamOptions options);
  JetStreamReader(const JetStreamReader&) = delete;
  JetStreamReader& operator=(const JetStreamReader&) = delete;
  ~JetStreamReader();

  // Every run message on `filter` from stream sequence `start` (0: the beginning), delivered to
  // `on_message` in stream order. Messages outside the subject layout are skipped. libnats
  // buffers at most `max_pending_bytes` (and 65536 messages) for the callback; past it it drops,
  // and the ordered consumer notices the gap and recreates itself from the last delivered
  // sequence: a bound on memory, never a loss.
  Result<std::unique_ptr<Consumer>> consume(const std::string& filter, std::uint64_t start,
                                            Consumer::OnMessage on_message,
                                            int max_pending_bytes = 256 * 1024 * 1024);
  // Every record of run `run_id` (on `host_id`, else on any host) stored so far, read through a
  // short-lived ordered consumer. Several hosts holding that run id: -32602 naming them.
  // nullopt: the stream holds no such run. Worker thread only.
  Result<std::optional<StoredTrace>> fetch_run(const std::string& run_id,
                                               const std::optional<std::string>& host_id);

  // The subject filter of every run of the stream, and of one run.
  std::string all_runs_filter() const;
  std::string run_filter(const std::string& run_id, const std::optional<std::string>& host_id) const;
  const JetStreamOptions& options() const { return options_; }
  bool connected() const;
  // The URL of the server the connection uses now; "" when disconnected.
  std::string connected_url() const;

 private:
  explicit JetStreamReader(JetStreamOptions options) : options_(std::move(options)) {}
  std::optional<StreamMessage> decode(natsMsg* msg) const;

  JetStreamOptions options_;
  natsOptions* nats_options_ = nullptr;
  natsConnection* connection_ = nullptr;
  jsCtx* js_ = nullptr;
};

}  // namespace car::fleet::detail
