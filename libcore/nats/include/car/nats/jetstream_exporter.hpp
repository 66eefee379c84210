#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "car/export.hpp"
#include "car/result.hpp"
#include "car/runs/record_exporter.hpp"

// The NATS JetStream record exporter behind car-daemon --nats (docs/FLEET.md "Export"): every
// record the run store accepted is published to `<prefix>.runs.<host>.<agent>.<run>`, every host
// event to `<prefix>.host.<host>.events` (car/nats/subjects.hpp), on a stream created if missing.
//
// Exactly once, in order: each message carries a JetStream message id naming the record
// (record_message_id), so a publish retried after a timeout, a reconnect or a restart is stored
// once (within the stream's duplicate window); per run, a record is published only once every
// earlier one is acknowledged or in flight on the same connection.
//
// The run store is the backlog. A per-run cursor file under `cursor_dir` holds the next offset to
// publish: created with the first record of the run the exporter sees, advanced after
// acknowledgements, removed once the run's `ended` record is acknowledged. A run whose records
// could not all be acknowledged (broker down, timeout) is *dirty*: its live records are not held
// in memory but read back from the store (RecordReplay) from its cursor, on the delivery thread's
// idle calls, once the broker answers again. So while the broker is down deliver() returns at
// once, the service's queue keeps draining, memory stays bounded (one cursor per open run) and
// producers are not slowed; after a restart start() marks every run with a cursor dirty. Host
// events have no store: up to 1024 unacknowledged ones are kept and retried in order, the rest
// counted as lost (status().last_error says so).
//
// Threads: the RecordExporter members run on the service's delivery thread; stop() and status()
// may be called from any thread.
namespace car::nats {

struct CAR_API JetStreamConfig {
  std::vector<std::string> servers;  // nats://host:port URLs; the client fails over among them
  std::string host_id;               // this daemon's name in subjects and message ids
  std::string stream = "CAR";
  std::string prefix = "car";
  int replicas = 1;  // stream replicas when the exporter creates it (1..5)
  // Limits of a stream the exporter creates (retention: limits; -1 means unlimited).
  std::int64_t max_bytes = -1;
  std::int64_t max_messages = -1;
  std::chrono::seconds max_age{0};  // 0: unlimited
  // JetStream drops a message whose id it saw within this window. It must cover the longest
  // outage after which a message may be republished without its cursor having advanced (a
  // publish acknowledged just before a crash): 2 minutes, JetStream's own default.
  std::chrono::seconds duplicate_window{120};
  std::string cursor_dir;  // created if missing; one small file per run not fully exported
  // How long one round of publishes waits for its acknowledgements before it counts as failed.
  std::chrono::milliseconds publish_timeout{5000};
  // Retry and reconnect backoff: doubles from min to max.
  std::chrono::milliseconds backoff_min{100};
  std::chrono::milliseconds backoff_max{5000};
};

class CAR_API JetStreamExporter : public runs::RecordExporter {
 public:
  // Makes a blocked start/deliver return promptly and every later one return at once; call it
  // before the service is destroyed (its destruction waits for the call in progress). Idempotent.
  virtual void stop() = 0;
};

// The exporter (not connected yet: start() connects, retrying until the broker answers).
// Errors: -32602 for an invalid configuration, -32603 when the cursor directory cannot be made.
CAR_API Result<std::shared_ptr<JetStreamExporter>> make_jetstream_exporter(JetStreamConfig config);

}  // namespace car::nats
