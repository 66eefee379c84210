#include "car/host/event_subscriber.hpp"

#include "car/connection.hpp"
#include "car/log.hpp"

namespace car::host {

void handle_event_send_result(FrameSink& sink, SinkError result) {
  switch (result) {
    case SinkError::none:
    case SinkError::closed:  // already going away; teardown will unsubscribe it
      return;
    case SinkError::full:
    case SinkError::deadline_exceeded:
    case SinkError::io_error:
    case SinkError::aborted:
      break;
  }
  // A subscriber that cannot take the stream is cut off rather than left with a hole in it.
  log_info("host event subscriber failed ({}); disconnecting it", to_string(result));
  sink.abort(result, "host event stream overflow");
}

void SinkSubscriber::send_text(Frame frame) {
  handle_event_send_result(*sink_, sink_->send(std::move(frame), {}, deadline_));
}

void SinkSubscriber::overflowed() { sink_->abort(SinkError::full, "host event stream overflow"); }

void ConnectionSubscriber::send_text(Frame frame) {
  auto connection = connection_.lock();
  if (!connection) return;
  handle_event_send_result(connection->sink(), connection->send(std::move(frame), {}, deadline_));
}

void ConnectionSubscriber::overflowed() {
  if (auto connection = connection_.lock()) {
    connection->sink().abort(SinkError::full, "host event stream overflow");
  }
}

}  // namespace car::host
