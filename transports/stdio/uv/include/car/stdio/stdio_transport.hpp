#pragma once

#include <uv.h>

#include <functional>
#include <memory>

#include "car/export.hpp"
#include "car/frame_sink.hpp"

// The stdio transport (PROTOCOL.md §1): one connection whose inbound messages come from a file
// descriptor (stdin) split by the NDJSON or Content-Length framer, and whose outbound frames are
// written to another (stdout) only through a FrameSink. Logs never touch stdout.
//
// At EOF on the input, in-flight requests are answered, their replies flushed, and `on_finished`
// runs; it also runs when the connection ends for any other reason (auth failure closes it after
// the -32001 reply; a write error on stdout). Loop thread only.
namespace car {
class Server;
}

namespace car::stdio {

enum class Framing { ndjson, content_length };

struct CAR_API StdioOptions {
  Framing framing = Framing::ndjson;
  SinkLimits limits;
  int input_fd = 0;
  int output_fd = 1;
};

class CAR_API StdioTransport {
 public:
  virtual ~StdioTransport() = default;
  // Graceful stop (shutdown signal): stop reading, flush what is queued, close.
  virtual void stop() = 0;
  // True once the connection's sink failed (a write error on the output, a write deadline, an
  // abort): frames were lost, so the owner must not report success. The transport logs why.
  virtual bool failed() const = 0;
};

// Starts serving. `on_finished` runs once on the loop thread after everything is flushed and the
// transport's handles are closed. Returns nothing and logs when the descriptors cannot be used.
CAR_API std::shared_ptr<StdioTransport> start_stdio(uv_loop_t* loop, Server& server, StdioOptions options,
                                            std::function<void()> on_finished);

}  // namespace car::stdio
