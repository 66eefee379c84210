#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "car/export.hpp"
#include "car/frame.hpp"

// FrameSink is the seam between the core and every transport (PROTOCOL.md §10). The core only ever
// writes through it; it never learns whether the peer is a WebSocket, a Unix socket, stdio or an
// embedder's own connection.
namespace car {

// Why a send did not happen, or why the sink ended.
enum class SinkError : std::uint8_t {
  none = 0,           // success
  full,               // the send would pass the frame or byte bound: refused at once
  closed,             // the sink is closing or closed (graceful close, or the peer went away)
  deadline_exceeded,  // a queued frame was not written within its deadline; the sink is failed
  io_error,           // the transport reported a write error; the sink is failed
  aborted,            // the owner aborted the sink (e.g. a reply that did not fit)
};

CAR_API std::string_view to_string(SinkError error);

struct CAR_API SinkLimits {
  // Bounds on what may wait in the sink (PROTOCOL.md §8: 4096 frames / 8 MiB). A send that would pass
  // either bound fails with SinkError::full and queues nothing. Exception: a single frame larger
  // than max_bytes is accepted when nothing else is queued (else it could never be sent). Replies
  // (send_reply) are never refused for size: see there.
  std::size_t max_frames = 4096;
  std::size_t max_bytes = 8 * 1024 * 1024;
  // Deadline of a send that does not name its own: a frame not written by then fails the sink.
  std::chrono::milliseconds write_deadline{30000};
  // How long a graceful close waits for queued frames before it aborts (spec: 2 s flush).
  std::chrono::milliseconds close_flush{2000};
};

// Called exactly once per accepted send, on the sink's loop thread: SinkError::none when the frame
// was handed to the OS, otherwise the reason it never will be.
using SendCompletion = std::function<void(SinkError)>;

// How a sink ended. `code` is a WebSocket close code (transports without close codes ignore it).
struct CAR_API SinkEnd {
  SinkError error = SinkError::none;  // none/closed: a graceful end; anything else: failure
  std::uint16_t code = 1000;
  std::string reason;
  bool failed() const { return error != SinkError::none && error != SinkError::closed; }
};
using SinkEndObserver = std::function<void(const SinkEnd&)>;

struct CAR_API SinkStats {
  std::size_t queued_frames = 0;  // accepted and not yet completed (including the write in flight)
  std::size_t queued_bytes = 0;
};

// Thread-safety: every member may be called from any thread. Completions and end observers run on
// the sink's own loop thread, never inside the call that caused them.
class CAR_API FrameSink {
 public:
  FrameSink() = default;
  FrameSink(const FrameSink&) = delete;
  FrameSink& operator=(const FrameSink&) = delete;
  virtual ~FrameSink() = default;

  // Queues `frame` for writing and returns at once; never blocks and never grows past the bounds.
  // Returns SinkError::none when accepted (then `done`, if given, runs exactly once later), or the
  // reason it was refused (then `done` never runs). `deadline` of zero means the sink's default.
  virtual SinkError send(Frame frame, SendCompletion done = {},
                         std::chrono::milliseconds deadline = std::chrono::milliseconds{0}) = 0;

  // Like send(), for the reply to a request: accepted whatever the frame and byte bounds, refused
  // only when the sink is no longer open. Every request within the limits must be answered, and
  // what a reply adds is bounded anyway: by the request that caused it (the message size) and the
  // number of requests in flight, while the sink pauses reading above its watermarks. A sink
  // without that distinction may keep this default, which treats a reply like any frame.
  virtual SinkError send_reply(Frame frame, SendCompletion done = {}) {
    return send(std::move(frame), std::move(done));
  }

  // Graceful close: frames already accepted are written first (for at most the close flush time),
  // then the transport closes with `code`/`reason`. Later sends fail with SinkError::closed.
  virtual void close(std::uint16_t code, std::string reason) = 0;

  // Abortive end: pending frames complete with `why`, the transport is torn down at once.
  virtual void abort(SinkError why, std::string reason) = 0;

  // Registers an observer of the end (graceful or failed). It runs once; if the sink has already
  // ended it runs soon (posted), never synchronously inside this call.
  virtual void on_end(SinkEndObserver observer) = 0;

  // False once the sink is closing, failed or ended.
  virtual bool is_open() const = 0;

  virtual SinkStats stats() const = 0;
};

}  // namespace car
