#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "car/export.hpp"
#include "car/queued_frame_sink.hpp"

// An in-memory FrameSink for tests and examples: "writes" append to a list the test can read.
// It can stall (hold the write in flight, like a peer that stopped reading), fail the next write,
// or simulate the peer going away. Every member is thread-safe.
namespace car::testing {

class CAR_API LoopbackSink final : public QueuedFrameSink {
 public:
  static std::shared_ptr<LoopbackSink> create(Executor& executor, SinkLimits limits = {});
  LoopbackSink(Executor& executor, SinkLimits limits) : QueuedFrameSink(executor, limits) {}

  // Every frame written so far, in order.
  std::vector<std::string> written() const;
  // The frames written since the last take, in order.
  std::vector<std::string> take_written();
  // How many batches the sink was asked to write (shows coalescing).
  std::size_t write_calls() const;

  // While stalled, a started write does not complete; un-stalling completes it (on the loop).
  void set_stalled(bool stalled);
  // The next write reports an I/O error.
  void fail_next_write();
  // The peer went away (like EOF on a socket).
  void simulate_peer_closed();

  // Set once the transport was shut down.
  std::optional<SinkEnd> transport_end() const;

 private:
  void start_write(const Batch& batch) override;
  void shut_down_transport(const SinkEnd& end) override;

  mutable std::mutex mutex_;
  std::vector<std::string> written_;
  std::size_t taken_ = 0;
  std::size_t write_calls_ = 0;
  bool stalled_ = false;
  bool write_held_ = false;
  bool fail_next_ = false;
  std::optional<SinkEnd> transport_end_;
};

}  // namespace car::testing
