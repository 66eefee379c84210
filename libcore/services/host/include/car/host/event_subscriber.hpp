#pragma once

#include <chrono>
#include <memory>
#include <string_view>

#include "car/export.hpp"
#include "car/frame.hpp"
#include "car/frame_sink.hpp"

// The receiving end of the host-event broadcast (PROTOCOL.md §10 "EventSubscriber").
namespace car {
class Connection;
}

namespace car::host {

// HostState offers every recorded event to each subscriber as one shared, already serialized
// `host.event` notification frame.
//
// Threading: send_text is called from whichever thread is delivering events at the moment (the
// thread that recorded an event, or one that recorded an earlier one), one call at a time per
// HostState, in sequence order, and never with a HostState lock held — so an implementation may
// call back into HostState (e.g. unsubscribe) if it must. It must not block: queue and return.
class CAR_API EventSubscriber {
 public:
  EventSubscriber() = default;
  EventSubscriber(const EventSubscriber&) = delete;
  EventSubscriber& operator=(const EventSubscriber&) = delete;
  virtual ~EventSubscriber() = default;

  // Best effort: never reports an error back. The frame is shared with every other subscriber;
  // keep the pointer (no copy) for as long as the write needs it.
  virtual void send_text(Frame frame) = 0;

  // HostState could not keep up the stream for this subscriber (its pending buffer overflowed
  // before its subscribe reply went out). Implementations disconnect the peer; default: nothing.
  virtual void overflowed() {}
};

// An EventSubscriber over a FrameSink. A send the sink refuses because its bound is reached, and
// a queued event not written within `deadline`, fail the sink (abort), which ends the connection;
// a subscriber is never silently skipped while it stays connected (PROTOCOL.md §4.1).
class CAR_API SinkSubscriber final : public EventSubscriber {
 public:
  explicit SinkSubscriber(std::shared_ptr<FrameSink> sink,
                          std::chrono::milliseconds deadline = std::chrono::milliseconds{0})
      : sink_(std::move(sink)), deadline_(deadline) {}
  void send_text(Frame frame) override;
  void overflowed() override;

 private:
  std::shared_ptr<FrameSink> sink_;
  std::chrono::milliseconds deadline_;
};

// The same over a Connection, held weakly so a subscription never keeps a dead peer alive.
class CAR_API ConnectionSubscriber final : public EventSubscriber {
 public:
  explicit ConnectionSubscriber(std::weak_ptr<Connection> connection,
                                std::chrono::milliseconds deadline = std::chrono::milliseconds{0})
      : connection_(std::move(connection)), deadline_(deadline) {}
  void send_text(Frame frame) override;
  void overflowed() override;

 private:
  std::weak_ptr<Connection> connection_;
  std::chrono::milliseconds deadline_;
};

// What a subscriber does with a sink's answer to one send: nothing on success or when the sink
// is already closing; abort the sink (the connection then ends) when it refused the frame.
CAR_API void handle_event_send_result(FrameSink& sink, SinkError result);

}  // namespace car::host
