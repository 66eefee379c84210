#pragma once

#include <memory>
#include <string>

#include "car/tls/server_session.hpp"
#include "car/uv/stream_filter.hpp"

// The uv::StreamFilter of a TLS connection (wss://): car::tls::ServerSession, the sans-I/O
// codec, behind the Stream's filter seam. It adds what the seam needs and the codec does not
// know about: gathering a batch's many small iovecs (frame headers, payloads) into full records
// rather than one record per piece. Loop thread only, like its Stream.
namespace car::ws {

class TlsStreamFilter final : public uv::StreamFilter {
 public:
  explicit TlsStreamFilter(std::shared_ptr<const tls::ServerContext> context);

  Input decode(std::string_view wire, std::string& plain, std::string& reply) override;
  bool encode(std::span<const uv_buf_t> plain, std::string& wire) override;
  void finish(std::string& wire) override;
  std::string_view error() const override { return session_.error(); }

  const tls::ServerSession& session() const { return session_; }

 private:
  tls::ServerSession session_;
};

}  // namespace car::ws
