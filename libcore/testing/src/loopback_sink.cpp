#include "car/testing/loopback_sink.hpp"

namespace car::testing {

std::shared_ptr<LoopbackSink> LoopbackSink::create(Executor& executor, SinkLimits limits) {
  return std::make_shared<LoopbackSink>(executor, limits);
}

std::vector<std::string> LoopbackSink::written() const {
  std::lock_guard lock(mutex_);
  return written_;
}

std::vector<std::string> LoopbackSink::take_written() {
  std::lock_guard lock(mutex_);
  std::vector<std::string> out(written_.begin() + static_cast<std::ptrdiff_t>(taken_),
                               written_.end());
  taken_ = written_.size();
  return out;
}

std::size_t LoopbackSink::write_calls() const {
  std::lock_guard lock(mutex_);
  return write_calls_;
}

void LoopbackSink::start_write(const Batch& batch) {
  bool fail = false;
  bool hold = false;
  {
    std::lock_guard lock(mutex_);
    ++write_calls_;
    fail = fail_next_;
    fail_next_ = false;
    hold = stalled_ && !fail;
    if (!fail) {
      for (const auto& p : batch) written_.push_back(*p.frame);
    }
    write_held_ = hold;
  }
  if (hold) return;
  // Complete on a later loop turn, as a real transport's write callback would.
  auto self = std::static_pointer_cast<LoopbackSink>(shared_from_this());
  executor().post([self, fail] { self->write_done(fail ? SinkError::io_error : SinkError::none); });
}

void LoopbackSink::set_stalled(bool stalled) {
  bool release = false;
  {
    std::lock_guard lock(mutex_);
    stalled_ = stalled;
    release = !stalled && write_held_;
    if (release) write_held_ = false;
  }
  if (release) {
    auto self = std::static_pointer_cast<LoopbackSink>(shared_from_this());
    executor().post([self] { self->write_done(SinkError::none); });
  }
}

void LoopbackSink::fail_next_write() {
  std::lock_guard lock(mutex_);
  fail_next_ = true;
}

void LoopbackSink::simulate_peer_closed() {
  auto self = std::static_pointer_cast<LoopbackSink>(shared_from_this());
  executor().post([self] { self->transport_ended(SinkError::closed, "peer closed"); });
}

void LoopbackSink::shut_down_transport(const SinkEnd& end) {
  bool release = false;
  {
    std::lock_guard lock(mutex_);
    transport_end_ = end;
    release = write_held_;
    write_held_ = false;
  }
  // A real transport's in-flight write is cancelled when its handle closes.
  if (release) {
    auto self = std::static_pointer_cast<LoopbackSink>(shared_from_this());
    executor().post([self] { self->write_done(SinkError::closed); });
  }
}

std::optional<SinkEnd> LoopbackSink::transport_end() const {
  std::lock_guard lock(mutex_);
  return transport_end_;
}

}  // namespace car::testing
