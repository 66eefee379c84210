#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "car/export.hpp"
#include "car/uv/stream_filter.hpp"

// One byte stream on libuv, embedded in the object that owns it: an accepted TCP or Unix-socket
// connection (see Listener::Incoming::accept) or a descriptor the process was given (a TTY, a
// pipe or socket pair, or a regular file, which libuv can only reach through pool requests).
// Stream does the libuv chores every transport needs: reading into one buffer per loop thread
// with a backpressure pause (driven by StreamSink::throttle_reading), writes outside any sink
// (handshakes, control frames), half-close and an exactly-once close callback. Framing, protocol
// and FrameSink semantics stay with the transport (StreamSink writes its frames).
//
// Lifetime: constructed unopened; open_fd() or accept() opens it (loop thread). From that call on
// the owner receives exactly one StreamHandler::on_closed, after close() or after a failed open;
// only then may the Stream (and the object embedding it) be destroyed. Destroying an opened
// Stream before its on_closed is a bug (libuv still owns the handle's memory).
// Threading: every member is loop-thread only. Handler upcalls run on the loop thread from libuv
// callbacks, never from inside a Stream member (one exception: a file read that cannot even be
// submitted reports on_read_end from inside start_reading). An upcall that throws is caught at the
// libuv trampoline, logged, and the stream is closed (on_closed follows).
// Filtering (TLS): with a StreamFilter set (set_filter), every byte read is decoded before
// on_read and every byte written is encoded; see stream_filter.hpp for why the seam is here.
namespace car::uv {

class Stream;

// What a Stream reports to its owner. Every upcall runs on the loop thread.
class CAR_API StreamHandler {
 public:
  virtual ~StreamHandler() = default;

  // Bytes read. The view is valid only during the call (it points into a buffer shared by every
  // stream of this thread); copy what you keep. Only while reading is wanted and not paused.
  virtual void on_read(Stream& stream, std::string_view bytes) = 0;

  // The input ended: `status` is UV_EOF or a libuv read error. Reading has stopped for good; the
  // stream stays open (writes may go on, e.g. to flush replies). At most once per stream.
  virtual void on_read_end(Stream& stream, int status) = 0;

  // The stream is closed: its handle's memory is free and no request of the Stream is pending.
  // Exactly once per open_fd()/accept(); the owner may destroy the Stream from inside this call.
  // No upcall follows it, and none follows close() except this one.
  virtual void on_closed(Stream& stream) = 0;

 protected:
  StreamHandler() = default;
  StreamHandler(const StreamHandler&) = default;
  StreamHandler& operator=(const StreamHandler&) = default;
};

class CAR_API Stream {
 public:
  // `handler` must outlive the Stream's on_closed (it is usually the owner embedding the Stream).
  explicit Stream(StreamHandler& handler);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // ---- opening (once per Stream, loop thread) ----

  // Adopts descriptor `fd` as libuv finds it: a TTY (uv_tty_t), a pipe or Unix socket (uv_pipe_t;
  // libuv closes the descriptor with the handle) or a regular file or device (read and written
  // through pool requests; the descriptor is left open). Returns 0, or a libuv error (UV_EBADF
  // for a descriptor libuv cannot identify, UV_ENOTSUP for TCP/UDP sockets, or uv_tty_init's or
  // uv_pipe_open's error). After an error the Stream is already closing: on_closed follows.
  int open_fd(uv_loop_t* loop, int fd);

  // Accepts the pending connection of listening stream `server` (TCP or pipe; a TCP stream gets
  // TCP_NODELAY). Call only from `server`'s connection callback; Listener does it for you. Returns
  // 0 or a libuv error; after an error the Stream is already closing: on_closed follows.
  int accept(uv_stream_t* server);

  // Routes every byte of this stream through `filter` (TLS) from now on: call right after
  // opening, before reading or writing. `filter` must outlive on_closed (the owner usually
  // embeds both). While filtered: on_read gets decoded bytes; the filter's own replies (TLS
  // handshake records) are written as they arise, before anything the owner writes after that
  // read; a clean end of the filtered input (close_notify) is on_read_end(UV_EOF), a filter
  // failure on_read_end(UV_EPROTO) (the reason is the filter's error()); shutdown() first writes
  // the filter's goodbye. Returns 0, or UV_ENOTSUP for files, UV_EALREADY once filtered.
  int set_filter(StreamFilter* filter);
  // The filter in effect; null when bytes go through as they are. StreamSink encodes its
  // batches with it.
  StreamFilter* filter() const { return filter_; }

  // ---- reading ----

  // Asks for input: on_read runs as bytes arrive, unless backpressure pauses it. Idempotent; a
  // no-op once the input ended or the stream is closing.
  void start_reading();
  // Stops asking for input until start_reading(). Idempotent.
  void stop_reading();
  // Backpressure from the output side: while `paused`, no input is read even if it is wanted.
  // StreamSink::throttle_reading calls this; owners rarely need to.
  void set_paused(bool paused);

  // ---- writing outside any sink ----

  // Runs once when a write() or shutdown() finishes: 0, a libuv error, or UV_ECANCELED when the
  // stream closed first. Never runs when the call itself returned an error.
  using Done = std::function<void(int status)>;

  // Writes `bytes` with a uv_write of its own: after whatever libuv already holds for this
  // stream (e.g. a StreamSink batch in flight), before anything written later. The bytes live in
  // the request until `done`. Returns 0 or a libuv error (UV_EPIPE once closing, UV_ENOTSUP for
  // files, UV_EPROTO when the filter cannot encode). Stream kinds only.
  int write(std::string bytes, Done done = {});

  // Best effort: writes what the kernel takes now, without queueing; returns the byte count or a
  // libuv error (UV_EAGAIN, or UV_EPIPE/UV_ENOTSUP as for write()). Filtered: bytes.size() when
  // every encoded byte went, else UV_EAGAIN; a partial write leaves the filtered stream broken, so
  // use it only for a last word before close() (as a partial frame would leave the framing).
  int try_write(std::string_view bytes);

  // Half-close: shuts the write side down once every queued write finished (uv_shutdown), after
  // the filter's goodbye (TLS close_notify) when filtered. Returns 0 or a libuv error; `done` as
  // for write(). Stream kinds only.
  int shutdown(Done done = {});

  // Closes the stream: reading stops, pending writes finish with UV_ECANCELED, and on_closed runs
  // later (for a file, after its read in flight landed). Idempotent; a no-op before opening.
  void close();

  // ---- state (loop thread) ----
  bool is_open() const { return state_ == State::open; }
  bool is_file() const { return file_ != nullptr; }
  // The libuv stream while open or closing; null for files and before opening.
  uv_stream_t* stream();
  // The descriptor of a file stream (-1 for other kinds) and the loop it was opened on.
  int file_descriptor() const { return file_fd_; }
  uv_loop_t* loop() const { return loop_; }
  // "IP:PORT" or "[IPv6]:PORT" of a TCP peer; empty for other kinds or when it is unknown.
  std::string peer_address();
  // The address this end of a TCP stream is bound to ("IP:PORT", IPv6 in brackets); empty
  // for other streams or on error.
  std::string local_address();

 private:
  struct File;  // file-mode state: the fs read request and its buffer (only for files)
  enum class State : std::uint8_t { unopened, open, closing, closed };
  // Files have no libuv handle; an idle handle (never started) stands in for one so that close()
  // completes from a close callback, like every other kind.
  union Handle {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
    uv_tty_t tty;
    uv_idle_t idle;
  };

  void opened(uv_loop_t* loop);
  int write_wire(std::string bytes, Done done);
  void deliver(std::string_view bytes);
  void deliver_filtered(std::string_view wire);
  void update_reading();
  void read_file();
  void finish_close();
  void fail_upcall();
  static void on_alloc(uv_handle_t* handle, std::size_t size, uv_buf_t* buf);
  static void on_read_cb(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void on_file_read(uv_fs_t* req);
  static void on_close_cb(uv_handle_t* handle);

  StreamHandler& handler_;
  Handle handle_{};
  std::unique_ptr<File> file_;
  StreamFilter* filter_ = nullptr;
  uv_loop_t* loop_ = nullptr;
  int file_fd_ = -1;
  State state_ = State::unopened;
  bool want_read_ = false;  // the owner asked for input
  bool paused_ = false;     // backpressure
  bool reading_ = false;    // uv_read_start is in effect (stream kinds)
  bool read_ended_ = false; // on_read_end was reported
};

}  // namespace car::uv
