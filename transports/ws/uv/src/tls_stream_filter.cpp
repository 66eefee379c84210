#include "tls_stream_filter.hpp"

namespace car::ws {
namespace {

// A TLS record carries at most 16 KiB: pieces smaller than that are gathered up to one record
// before encryption, so a batch of small frames costs a record per 16 KiB, not per iovec.
constexpr std::size_t record_payload = 16 * 1024;

// The gathering buffer is the thread's (encode never re-enters), as Stream's read buffer is: an
// idle connection holds none of it.
thread_local std::string t_gathered;

}  // namespace

TlsStreamFilter::TlsStreamFilter(std::shared_ptr<const tls::ServerContext> context)
    : session_(std::move(context)) {}

uv::StreamFilter::Input TlsStreamFilter::decode(std::string_view wire, std::string& plain,
                                                std::string& reply) {
  if (session_.receive(wire, plain, reply)) return Input::failed;
  return session_.state() == tls::SessionState::peer_closed ? Input::ended : Input::more;
}

bool TlsStreamFilter::encode(std::span<const uv_buf_t> plain, std::string& wire) {
  std::string& gathered = t_gathered;
  gathered.clear();
  auto flush = [&] {
    if (gathered.empty()) return true;
    bool ok = !session_.send(gathered, wire);
    gathered.clear();
    return ok;
  };
  for (const uv_buf_t& piece : plain) {
    std::string_view bytes(piece.base, piece.len);
    if (gathered.size() + bytes.size() <= record_payload) {
      gathered.append(bytes);
      continue;
    }
    if (!flush()) return false;
    if (bytes.size() >= record_payload) {
      // A large payload is encrypted in place (the session cuts it into records).
      if (session_.send(bytes, wire)) return false;
    } else {
      gathered.append(bytes);
    }
  }
  return flush();
}

void TlsStreamFilter::finish(std::string& wire) { session_.close(wire); }

}  // namespace car::ws
