#pragma once

#include "car/export.hpp"
#include "car/frame.hpp"

// The receiving end of a broadcast (PROTOCOL.md §10 "EventSubscriber"): HostState offers every
// recorded host event to each subscriber as one shared, already serialized notification frame.
namespace car {

// Threading: send_text is called from whichever thread is broadcasting at the moment, one call
// at a time per broadcaster, in order, and never with the broadcaster's lock held — so an
// implementation may call back into it (e.g. unsubscribe) if it must. It must not block: queue
// and return. StreamSubscriber (car/event_stream.hpp) is the implementation over a FrameSink:
// bounded, paused until the subscribe reply is out, and disconnecting a peer that cannot keep up.
class CAR_API EventSubscriber {
 public:
  EventSubscriber() = default;
  EventSubscriber(const EventSubscriber&) = delete;
  EventSubscriber& operator=(const EventSubscriber&) = delete;
  virtual ~EventSubscriber() = default;

  // Best effort: never reports an error back. The frame is shared with every other subscriber;
  // keep the pointer (no copy) for as long as the write needs it.
  virtual void send_text(Frame frame) = 0;

  // The broadcaster dropped this subscriber (unsubscribed, or a re-subscribe replaced it) and
  // offers it nothing more. Called once, like send_text never with the broadcaster's lock held.
  // StreamSubscriber stops: events still queued for the old subscription are not delivered.
  virtual void ended() {}
};

}  // namespace car
