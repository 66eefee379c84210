#include "car/uv/stream_sink.hpp"

#include "car/uv/guarded.hpp"

namespace car::uv {
namespace {

// The encoding buffer of a filtered sink (see write_stream) keeps its capacity up to this, so a
// steady connection does not allocate per batch and an idle one holds little.
constexpr std::size_t max_kept_encoding = 64 * 1024;

}  // namespace

StreamSink::StreamSink(Executor& executor, Stream& stream, StreamSinkOptions options,
                       ShutDown on_shut_down)
    : QueuedFrameSink(executor, options.limits),
      stream_(&stream),
      options_(options),
      on_shut_down_(std::move(on_shut_down)) {
  write_req_.data = this;
  if (stream.is_file()) {
    fs_req_ = std::make_unique<uv_fs_t>();
    fs_req_->data = this;
    file_loop_ = stream.loop();
    file_fd_ = stream.file_descriptor();
  }
}

StreamSink::~StreamSink() = default;

void StreamSink::throttle_reading(Stream& reader, std::size_t high, std::size_t low) {
  reader_ = &reader;
  if (high == 0) high = limits().max_bytes / 2;
  if (low == 0) low = limits().max_bytes / 4;
  // Only the sink itself runs this callback (on the loop thread), so `self` is alive; reader_ is
  // null once detached.
  StreamSink* self = this;
  set_watermarks(high, low, [self](bool above) {
    if (self->reader_ != nullptr) self->reader_->set_paused(above);
  });
}

void StreamSink::transport_gone(SinkError why, std::string reason) {
  transport_ended(why, std::move(reason));
}

void StreamSink::detach() {
  stream_ = nullptr;
  reader_ = nullptr;
  on_shut_down_ = nullptr;
}

void StreamSink::shut_down_transport(const SinkEnd& end) {
  if (!on_shut_down_) return;
  auto fn = std::move(on_shut_down_);
  on_shut_down_ = nullptr;
  fn(end);
}

void StreamSink::start_write(const Batch& batch) {
  if (stream_ == nullptr) {
    // The transport is gone: the batch completes as closed, never inside this call.
    auto self = shared_from_this();
    executor().post([self] { static_cast<StreamSink*>(self.get())->write_done(SinkError::closed); });
    return;
  }
  if (!stream_->is_open()) {
    write_done(SinkError::closed);  // the Stream is closing: nothing can be written any more
    return;
  }
  // One iovec per prefix, payload and suffix. The vectors keep their capacity, so a steady
  // connection allocates nothing per batch.
  const FrameFraming& framing = options_.framing;
  const bool has_prefix = framing.prefix != nullptr && framing.max_prefix != 0;
  const bool has_suffix = !framing.suffix.empty();
  bufs_.clear();
  bufs_.reserve(batch.size() * (1 + (has_prefix ? 1 : 0) + (has_suffix ? 1 : 0)));
  if (has_prefix && prefixes_.size() < batch.size() * framing.max_prefix) {
    prefixes_.resize(batch.size() * framing.max_prefix);
  }
  char* prefix = prefixes_.data();
  char* suffix = const_cast<char*>(framing.suffix.data());
  for (const auto& pending : batch) {
    const std::string& payload = *pending.frame;
    if (pending.encoded) {
      // The transport framed it itself (a pong): its bytes go out exactly as they are.
      bufs_.push_back(uv_buf_init(const_cast<char*>(payload.data()), static_cast<unsigned>(payload.size())));
      continue;
    }
    if (has_prefix) {
      std::size_t n = framing.prefix(payload, prefix);
      bufs_.push_back(uv_buf_init(prefix, static_cast<unsigned>(n)));
      prefix += framing.max_prefix;
    }
    bufs_.push_back(uv_buf_init(const_cast<char*>(payload.data()), static_cast<unsigned>(payload.size())));
    if (has_suffix) bufs_.push_back(uv_buf_init(suffix, static_cast<unsigned>(framing.suffix.size())));
  }
  if (file_fd_ >= 0) {
    write_file_from(0);
  } else {
    write_stream(stream_->stream());
  }
}

void StreamSink::write_stream(uv_stream_t* stream) {
  // One uv_write per batch and no uv_try_write before it. libuv writes at once when the socket
  // has room, but completes the request on the next loop iteration; frames produced meanwhile
  // (the rest of this iteration's replies) wait in the queue and go out together as the next
  // batch. Completing inline after a uv_try_write would start a new write for every few frames:
  // measured, that cost ~20 % of the 50-connection throughput (docs/PERFORMANCE.md).
  const std::size_t first = 0;
  const uv_buf_t* bufs = bufs_.data() + first;
  auto count = static_cast<unsigned>(bufs_.size() - first);
  uv_buf_t encoded_buf;
  if (StreamFilter* filter = stream_->filter()) {
    // Filtered (TLS): the batch is encoded now, in submission order with the Stream's own
    // writes, into one buffer that lives until the write callback. The queue's bounds counted
    // the plaintext; this copy is the batch plus the filter's overhead (TLS: under 1 %).
    encoded_.clear();
    if (!filter->encode({bufs, count}, encoded_)) {
      car::log(options_.write_error_level, "{}: cannot encode a batch: {}", options_.name,
               filter->error());
      write_done(SinkError::io_error);
      return;
    }
    encoded_buf = uv_buf_init(encoded_.data(), static_cast<unsigned>(encoded_.size()));
    bufs = &encoded_buf;
    count = 1;
  }
  // The rest goes out as one uv_write; libuv copies the iovec array, the frames (or their
  // encoding) stay alive until the callback.
  in_flight_ = shared_from_this();
  int rc = uv_write(&write_req_, stream, bufs, count, [](uv_write_t* req, int status) {
    auto* self = static_cast<StreamSink*>(req->data);
    auto keep = std::move(self->in_flight_);
    guarded("stream sink write callback", [&] { self->finished(status); });
  });
  if (rc != 0) {
    auto keep = std::move(in_flight_);
    finished(rc);
  }
}

// Files may take a partial write: continue from the first unwritten byte.
void StreamSink::write_file_from(std::size_t first_buf) {
  file_first_buf_ = first_buf;
  in_flight_ = shared_from_this();  // the fs request lives in this object
  int rc = uv_fs_write(file_loop_, fs_req_.get(), file_fd_, bufs_.data() + first_buf,
                       static_cast<unsigned>(bufs_.size() - first_buf), -1, [](uv_fs_t* req) {
                         auto* self = static_cast<StreamSink*>(req->data);
                         auto keep = std::move(self->in_flight_);
                         auto result = req->result;
                         uv_fs_req_cleanup(req);
                         guarded("stream sink file write callback",
                                         [&] { self->file_written(result); });
                       });
  if (rc != 0) {
    auto keep = std::move(in_flight_);
    uv_fs_req_cleanup(fs_req_.get());
    finished(rc);
  }
}

void StreamSink::file_written(ssize_t result) {
  if (result < 0) {
    finished(static_cast<int>(result));
    return;
  }
  auto left = static_cast<std::size_t>(result);
  std::size_t i = file_first_buf_;
  while (i < bufs_.size() && left >= bufs_[i].len) left -= bufs_[i++].len;
  if (i == bufs_.size()) {
    finished(0);
    return;
  }
  if (stream_ == nullptr) {
    finished(UV_ECANCELED);  // detached meanwhile: the rest is abandoned
    return;
  }
  bufs_[i].base += left;
  bufs_[i].len -= static_cast<unsigned>(left);
  write_file_from(i);
}

void StreamSink::finished(int status) {
  // A large batch's encoding is not kept for the connection's idle life.
  if (encoded_.capacity() > max_kept_encoding) std::string().swap(encoded_);
  if (status != 0 && status != UV_ECANCELED) {
    car::log(options_.write_error_level, "{}: write failed: {}", options_.name, uv_strerror(status));
  }
  write_done(status == 0 ? SinkError::none : SinkError::io_error);
}

}  // namespace car::uv
