#pragma once

#include <uv.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "car/export.hpp"
#include "car/log.hpp"
#include "car/queued_frame_sink.hpp"
#include "car/uv/stream.hpp"

// The FrameSink of a libuv Stream: QueuedFrameSink's bounds, deadlines, threading and coalescing,
// written with one write in flight. Each batch of frames becomes one iovec array — for every
// frame its prefix, its bytes and its suffix, as the transport's FrameFraming says (a WebSocket
// frame header; a Content-Length header; an NDJSON newline) — tried with uv_try_write first and
// finished with one uv_write (or uv_fs_write for files, continuing after partial writes). Frames
// are not copied: the iovecs point into the shared frames, which the batch keeps alive until the
// write callback, and the sink keeps itself alive as long as a request is in flight.
//
// A filtered Stream (TLS, stream_filter.hpp): each batch is encoded as it is submitted into one
// buffer kept until the write callback. Bounds, deadlines and watermarks count plaintext frame
// bytes; the encoded copy is the batch plus the filter's overhead.
//
// Backpressure toward the reader: throttle_reading() pauses a Stream's reading while more than
// `high` bytes wait in the sink and resumes it at `low`.
//
// Lifetime: owned by shared_ptrs (the transport's and the Connection's). It writes to a Stream it
// does not own; the owner calls detach() before that Stream's on_closed returns (usually when it
// closes it), after which batches complete as SinkError::closed and the sink never touches the
// Stream again.
// Threading: the FrameSink members are callable from any thread (see QueuedFrameSink); the
// constructor, throttle_reading(), transport_gone() and detach() are loop-thread only, and the
// shut-down callback runs on the loop thread.
namespace car::uv {

// How a transport frames each outbound frame. Plain data, copied into the sink.
struct CAR_API FrameFraming {
  // Room `prefix` may use per frame, in bytes (0 when there is no prefix).
  std::size_t max_prefix = 0;
  // Writes the bytes that go before `payload` into `out` (room for max_prefix bytes) and returns
  // how many it wrote. Null: frames have no prefix. Must not throw.
  std::size_t (*prefix)(std::string_view payload, char* out) = nullptr;
  // Bytes written after every frame (e.g. "\n"); must stay valid as long as the sink (a literal).
  std::string_view suffix;
};

struct CAR_API StreamSinkOptions {
  SinkLimits limits;
  FrameFraming framing;
  // Names the sink in log lines; must stay valid as long as the sink (a literal).
  std::string_view name = "stream";
  // The level a failed write is logged at (cancelled writes, after a close, are not logged).
  LogLevel write_error_level = LogLevel::debug;
};

class CAR_API StreamSink final : public QueuedFrameSink {
 public:
  // Runs once, on the loop thread, when the sink ends (QueuedFrameSink::shut_down_transport): after
  // a graceful close every accepted frame has been written; after a failure it runs at once (a
  // write still in flight then finishes as cancelled once the Stream closes). The owner says
  // goodbye (or not) and closes its Stream. Not called after detach().
  using ShutDown = std::function<void(const SinkEnd& end)>;

  // `stream` must be open. Loop thread.
  StreamSink(Executor& executor, Stream& stream, StreamSinkOptions options, ShutDown on_shut_down);
  ~StreamSink() override;

  // Ties `reader`'s reading to this sink's queue: paused while more than `high` bytes wait,
  // resumed at `low` or below. Zero means half / a quarter of limits.max_bytes (4 MiB / 2 MiB by
  // default). `reader` is usually the written Stream itself (stdio reads another one); detach()
  // unties it. Loop thread.
  void throttle_reading(Stream& reader, std::size_t high = 0, std::size_t low = 0);

  // The transport learnt that the peer is gone (EOF, reset) or closed on its own: ends the sink
  // now, pending frames complete with SinkError::closed (or `why`), and the shut-down callback
  // runs. A no-op once the sink ended. Loop thread.
  void transport_gone(SinkError why, std::string reason);

  // Forgets the Stream (and the reader of throttle_reading) and the shut-down callback. Loop
  // thread; idempotent.
  void detach();

 private:
  void start_write(const Batch& batch) override;
  void shut_down_transport(const SinkEnd& end) override;
  void write_stream(uv_stream_t* stream);
  void write_file_from(std::size_t first_buf);
  void file_written(ssize_t result);
  void finished(int status);

  Stream* stream_;
  Stream* reader_ = nullptr;
  const StreamSinkOptions options_;
  ShutDown on_shut_down_;
  uv_write_t write_req_{};
  // Only for file output: a uv_fs_t is 440 bytes, which every socket connection would carry.
  std::unique_ptr<uv_fs_t> fs_req_;
  uv_loop_t* file_loop_ = nullptr;
  int file_fd_ = -1;
  std::size_t file_first_buf_ = 0;
  std::vector<uv_buf_t> bufs_;     // the iovecs of the batch in flight
  std::vector<char> prefixes_;     // max_prefix bytes per frame of that batch
  std::string encoded_;            // that batch encoded by the Stream's filter (TLS), if any
  std::shared_ptr<QueuedFrameSink> in_flight_;  // keeps the sink alive while a request is out
};

}  // namespace car::uv
