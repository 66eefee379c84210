// The upcall interface shared by the stdio framers.
//
// The framers are sans-I/O: the caller reads stdin however it likes, hands the bytes to a framer,
// and the framer reports what it found through a FrameEvents object supplied with each call. The
// interface is deliberately tiny so that the transport, the unit tests and the fuzz targets can all
// implement it.
//
// Rules for implementations (they apply to every framer in car::stdio):
// - Upcalls happen only from inside feed() or finish(), on the caller's thread, in stream order.
// - A view passed to an upcall is valid only until that upcall returns; it may point into the
//   caller's input buffer or into the framer's own buffer. Copy what you keep.
// - An upcall must not call feed() or finish() on the framer that is calling it, and must not
//   destroy that framer (defer the close, as the connection layer does for every upcall).
// - An upcall should not throw. If one does, the exception propagates out of feed()/finish(); the
//   framer is still in a consistent state, but the bytes of that chunk after the reported event
//   have not been consumed, so the caller should treat the stream as broken.
#pragma once

#include <string_view>
#include "car/export.hpp"

namespace car::stdio {

class CAR_API FrameEvents {
 public:
  virtual ~FrameEvents() = default;

  // One complete inbound message, without its framing (no line terminator, no headers). The text
  // is not validated in any way: it may be empty (Content-Length: 0) or not JSON at all; judging it
  // is the JSON-RPC engine's job.
  virtual void on_message(std::string_view text) = 0;

  // The stream broke the framing rules (oversized message, bad header block, truncated input). The
  // core answers with a -32700 reply, id null, carrying `detail` (a short English sentence fragment
  // such as "line exceeds the maximum message size of 16777216 bytes"). The framer has already
  // decided how to recover (documented per framer); the connection stays usable.
  virtual void on_framing_error(std::string_view detail) = 0;
};

}  // namespace car::stdio
