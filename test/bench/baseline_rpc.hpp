// The JSON-RPC work of car-bench's two no-limits baselines — floor-server (floor_server.cpp,
// epoll) and beast-server (beast_server.cpp, Boost.Beast) — kept in one place so that both do
// exactly the same JSON work and only their transports differ.
//
// Every request is parsed with RapidJSON into a Document and dispatched by method; every reply
// and event is written with a RapidJSON Writer. The replies are byte-for-byte the shapes
// car-daemon gives for the methods car-bench drives (server.handshake, host.agents with no
// agents, runs.start, runs.subscribe, runs.record_turns, and the runs.trace.event
// notifications). No auth, no approval gate, no persistence, no bounds: it is the cost floor of
// this work, not a daemon. runs.stats is not implemented (-32601); car-bench then prints null
// pool counters.
//
// Fan-out: runs.record_turns serializes each turn's event once into one shared EventBatch and
// hands the same batch to every subscriber, then answers the producer (car-daemon persists,
// fans out, then answers; the floor does the same minus the persisting).
//
// Threads: single-threaded; an Rpc and its peers belong to one thread.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace car_bench::baseline {

// The events of one runs.record_turns call, each serialized once. `bytes` holds, per event, an
// unmasked WebSocket text-frame header followed by the event's JSON, so a transport that frames
// itself writes `bytes` as it is; `payloads` locate each event's JSON for a transport that sends
// messages (Beast frames each message itself).
struct EventBatch {
  struct Span {
    std::size_t offset;
    std::size_t size;
  };
  std::string bytes;
  std::vector<Span> payloads;
};
using SharedBatch = std::shared_ptr<const EventBatch>;

// One connection as the JSON-RPC layer sees it.
class Peer {
 public:
  virtual ~Peer() = default;
  // One reply (JSON text, valid only during the call: the transport copies or frames it).
  virtual void send_text(std::string_view json) = 0;
  // A batch of events shared with every other subscriber of the run.
  virtual void send_batch(const SharedBatch& batch) = 0;
};

class Rpc {
 public:
  Rpc();
  ~Rpc();
  Rpc(const Rpc&) = delete;
  Rpc& operator=(const Rpc&) = delete;

  // Parses one request and answers it: replies go to `from`, events to the run's subscribers.
  void handle(Peer& from, std::string_view request);
  // The peer's connection is gone: it leaves every run it subscribed to.
  void forget(Peer& peer);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace car_bench::baseline
