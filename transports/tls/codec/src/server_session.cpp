#include "car/tls/server_session.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <limits>

#include "openssl_errors.hpp"
#include "server_context_impl.hpp"

namespace car::tls {
namespace {

// SSL_read hands out at most one record's plaintext per call; a buffer of one record's size
// needs no more calls than there are records.
constexpr std::size_t record_size = 16 * 1024;

// The error queue is per thread and shared with every other OpenSSL user on it: each entry point
// starts and ends with it empty.
struct ErrorQueueScope {
  ErrorQueueScope() { detail::clear_openssl_errors(); }
  ~ErrorQueueScope() { detail::clear_openssl_errors(); }
  ErrorQueueScope(const ErrorQueueScope&) = delete;
  ErrorQueueScope& operator=(const ErrorQueueScope&) = delete;
};

}  // namespace

std::string_view to_string(SessionState state) {
  switch (state) {
    case SessionState::handshaking: return "handshaking";
    case SessionState::established: return "established";
    case SessionState::peer_closed: return "peer_closed";
    case SessionState::failed: return "failed";
  }
  return "unknown";
}

// The SSL object reads ciphertext from `in` (we write what the socket gave us into it) and
// writes records to `out` (we drain it into the caller's buffer after every call). SSL_set_bio
// hands both BIOs to the SSL object, which frees them.
struct ServerSession::Ssl {
  SSL* ssl = nullptr;
  BIO* in = nullptr;
  BIO* out = nullptr;
  Ssl() = default;
  Ssl(const Ssl&) = delete;
  Ssl& operator=(const Ssl&) = delete;
  ~Ssl() { SSL_free(ssl); }
};

ServerSession::ServerSession(std::shared_ptr<const ServerContext> context)
    : context_(std::move(context)) {
  ErrorQueueScope errors;
  auto ssl = std::make_unique<Ssl>();
  ssl->ssl = context_ ? SSL_new(context_->impl().ctx) : nullptr;
  BIO* in = ssl->ssl != nullptr ? BIO_new(BIO_s_mem()) : nullptr;
  BIO* out = in != nullptr ? BIO_new(BIO_s_mem()) : nullptr;
  if (out == nullptr) {
    BIO_free(in);
    state_ = SessionState::failed;
    error_ = context_ ? "cannot create a TLS session: " + detail::take_openssl_errors("out of memory")
                      : "no TLS context";
    return;
  }
  // An empty input BIO means "no bytes yet", not end of stream: SSL_read then wants to read.
  BIO_set_mem_eof_return(in, -1);
  BIO_set_mem_eof_return(out, -1);
  SSL_set_bio(ssl->ssl, in, out);
  SSL_set_accept_state(ssl->ssl);
  ssl->in = in;
  ssl->out = out;
  ssl_ = std::move(ssl);
}

ServerSession::~ServerSession() = default;

std::optional<std::string> ServerSession::fail(std::string why) {
  state_ = SessionState::failed;
  error_ = std::move(why);
  return error_;
}

void ServerSession::drain_output(std::string& to_peer) {
  char* data = nullptr;
  long pending = BIO_get_mem_data(ssl_->out, &data);
  if (pending <= 0) return;
  to_peer.append(data, static_cast<std::size_t>(pending));
  static_cast<void>(BIO_reset(ssl_->out));
}

std::optional<std::string> ServerSession::receive(std::string_view ciphertext,
                                                  std::string& plaintext, std::string& to_peer) {
  if (state_ == SessionState::failed) return error_;
  if (state_ == SessionState::peer_closed) return std::nullopt;
  ErrorQueueScope errors;
  // A memory BIO takes everything (it grows); the loop below then consumes all complete records.
  while (!ciphertext.empty()) {
    const std::size_t chunk =
        std::min(ciphertext.size(), static_cast<std::size_t>(std::numeric_limits<int>::max()));
    int written = BIO_write(ssl_->in, ciphertext.data(), static_cast<int>(chunk));
    if (written <= 0) {
      return fail("cannot buffer TLS input: " + detail::take_openssl_errors("out of memory"));
    }
    ciphertext.remove_prefix(static_cast<std::size_t>(written));
  }
  std::optional<std::string> failure;
  for (;;) {
    // SSL_read drives the handshake first (we are in accept state), then decrypts records.
    const std::size_t before = plaintext.size();
    plaintext.resize(before + record_size);
    std::size_t got = 0;
    int rc = SSL_read_ex(ssl_->ssl, plaintext.data() + before, record_size, &got);
    plaintext.resize(before + (rc == 1 ? got : 0));
    if (state_ == SessionState::handshaking && SSL_is_init_finished(ssl_->ssl)) {
      state_ = SessionState::established;
    }
    if (rc == 1) continue;
    int reason = SSL_get_error(ssl_->ssl, rc);
    if (reason == SSL_ERROR_WANT_READ) break;  // the rest of a record has not arrived yet
    if (reason == SSL_ERROR_ZERO_RETURN) {
      state_ = SessionState::peer_closed;  // close_notify: a clean end of the peer's data
      break;
    }
    if (reason == SSL_ERROR_SSL) {
      failure = fail(detail::take_openssl_errors("TLS protocol error"));
    } else {
      // WANT_WRITE cannot happen on a memory BIO, nor can SYSCALL without a socket: treat
      // anything else as fatal rather than loop on it.
      failure = fail(detail::take_openssl_errors("unexpected TLS state"));
    }
    break;
  }
  drain_output(to_peer);  // handshake flights, tickets, or the alert that explains a failure
  return failure;
}

std::optional<std::string> ServerSession::send(std::string_view plaintext, std::string& to_peer) {
  if (state_ == SessionState::failed) return error_;
  if (state_ == SessionState::handshaking) return std::string("TLS handshake not finished");
  if (closed_) return std::string("TLS session closed");
  if (plaintext.empty()) return std::nullopt;
  ErrorQueueScope errors;
  while (!plaintext.empty()) {
    // Without SSL_MODE_ENABLE_PARTIAL_WRITE a call writes all it was given (a memory BIO never
    // pushes back), as records of up to 16 KiB.
    std::size_t written = 0;
    int rc = SSL_write_ex(ssl_->ssl, plaintext.data(), plaintext.size(), &written);
    if (rc != 1) {
      auto failure = fail(detail::take_openssl_errors("TLS write failed"));
      drain_output(to_peer);
      return failure;
    }
    plaintext.remove_prefix(written);
  }
  drain_output(to_peer);
  return std::nullopt;
}

void ServerSession::close(std::string& to_peer) {
  if (closed_ || (state_ != SessionState::established && state_ != SessionState::peer_closed)) {
    return;
  }
  ErrorQueueScope errors;
  closed_ = true;
  // One call queues our close_notify; we do not wait for the peer's (the socket closes next).
  static_cast<void>(SSL_shutdown(ssl_->ssl));
  drain_output(to_peer);
}

std::string_view ServerSession::protocol_version() const {
  if (state_ != SessionState::established && state_ != SessionState::peer_closed) return {};
  return SSL_get_version(ssl_->ssl);
}

}  // namespace car::tls
