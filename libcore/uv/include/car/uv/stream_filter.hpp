#pragma once

#include <uv.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "car/export.hpp"

// A byte transform between a Stream's socket and everything above it — TLS in carcore
// (transports/ws/uv's TlsStreamFilter over car::tls::ServerSession). Installed with
// Stream::set_filter, it sees every byte: what is read is decoded before StreamHandler::on_read
// sees it, and what is written — Stream::write, try_write, the shutdown's goodbye and the
// batches of a StreamSink on that Stream — is encoded at the moment it is submitted, so the
// wire carries the encoded bytes in submission order.
//
// Why a filter inside Stream rather than a TLS stream wrapping it: every writer of a connection
// (the transport's own handshake and control writes, and the StreamSink whose bounds, deadlines,
// batching and read-pausing stay as they are) already goes through one Stream; putting the
// transform there covers all of them with one hook, and the owner and the sink keep counting
// plaintext (the encoded overhead is the filter's to bound).
//
// Contract for implementations: sans-I/O, no blocking, no exceptions (a throw is treated like a
// throwing handler: the stream closes). Loop thread only, as the Stream.
namespace car::uv {

class CAR_API StreamFilter {
 public:
  virtual ~StreamFilter() = default;

  enum class Input : std::uint8_t {
    more,    // decoded what it could; the stream goes on
    ended,   // the peer ended the filtered stream cleanly (TLS close_notify): the input is over
    failed,  // a fatal error (error() says which): the input is over, the stream is unusable
  };

  // Bytes read from the socket. Appends what they decode to for the owner to `plain` (never more
  // than the input so far) and bytes the filter must write back on its own (TLS handshake
  // flights; with `failed`, an alert worth a best-effort send) to `reply`.
  virtual Input decode(std::string_view wire, std::string& plain, std::string& reply) = 0;

  // Encodes `plain`, the pieces in order as one byte string, appending to `wire`. False on
  // failure (error() says why); `wire` is then not to be sent.
  virtual bool encode(std::span<const uv_buf_t> plain, std::string& wire) = 0;

  // Appends the bytes that end our direction cleanly (TLS close_notify); possibly none.
  virtual void finish(std::string& wire) = 0;

  // Why decode or encode failed; empty before that.
  virtual std::string_view error() const = 0;

 protected:
  StreamFilter() = default;
  StreamFilter(const StreamFilter&) = default;
  StreamFilter& operator=(const StreamFilter&) = default;
};

}  // namespace car::uv
