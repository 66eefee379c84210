#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "car/export.hpp"
#include "car/tls/server_context.hpp"

// The server side of one TLS connection, without I/O: ciphertext read from the socket goes in,
// plaintext for the protocol above comes out, together with the TLS records the session needs
// sent back (its handshake flights, alerts, session tickets); plaintext to send goes in and
// records come out. The caller owns the socket and writes every record it is handed, in the
// order it was handed them. Built on OpenSSL memory BIOs (nothing here blocks or touches a
// descriptor).
//
// Bounds: receive() decrypts everything its input completes — the plaintext it appends is never
// larger than the ciphertext given so far — and keeps at most one incomplete record (≤ 16 KiB
// plus overhead) between calls. send() appends the plaintext's size plus at most ~30 bytes per
// 16 KiB record. Nothing is queued inside the session between calls.
//
// Errors are values: the first failure (a malformed record, a handshake the policy refuses,
// plaintext HTTP sent to a TLS port) moves the session to `failed` for good and is returned, as
// OpenSSL's reason, by that call and every later one.
//
// Threading: one thread at a time (it is the connection's). OpenSSL's per-thread error queue is
// cleared before and after each call, so sessions on one thread do not see each other's errors.
namespace car::tls {

enum class SessionState : std::uint8_t {
  handshaking,  // no application data yet
  established,  // handshake done: data flows both ways
  peer_closed,  // the peer sent close_notify: no more input; we may still send, then close()
  failed,       // a fatal error (see error()); nothing more goes in or out
};

CAR_API std::string_view to_string(SessionState state);

class CAR_API ServerSession {
 public:
  // A session waiting for the client's hello. If OpenSSL cannot make one (out of memory), the
  // session starts `failed` and receive() says so.
  explicit ServerSession(std::shared_ptr<const ServerContext> context);
  ~ServerSession();
  ServerSession(const ServerSession&) = delete;
  ServerSession& operator=(const ServerSession&) = delete;

  // Bytes read from the peer. Appends the application data they complete to `plaintext` and the
  // records to send back to `to_peer` (send them before anything encrypted after this call).
  // Returns the error once the session failed; `to_peer` may then hold an alert worth a
  // best-effort send before closing. Input after the peer's close_notify is ignored.
  std::optional<std::string> receive(std::string_view ciphertext, std::string& plaintext,
                                     std::string& to_peer);

  // Encrypts `plaintext` (any size) and appends its records to `to_peer`. Only while
  // established or peer_closed; an error before the handshake finished, after close() or after a
  // failure. An empty `plaintext` appends nothing.
  std::optional<std::string> send(std::string_view plaintext, std::string& to_peer);

  // Ends our direction gracefully: appends close_notify to `to_peer`. After it send() fails.
  // A no-op unless established or peer_closed, and after the first call.
  void close(std::string& to_peer);

  SessionState state() const { return state_; }
  // The error that failed the session; empty while it has not failed.
  const std::string& error() const { return error_; }
  // "TLSv1.3", "TLSv1.2"; empty before the handshake finished and after a failure.
  std::string_view protocol_version() const;

 private:
  struct Ssl;  // the SSL object and its two memory BIOs
  std::optional<std::string> fail(std::string why);
  void drain_output(std::string& to_peer);

  std::shared_ptr<const ServerContext> context_;
  std::unique_ptr<Ssl> ssl_;
  SessionState state_ = SessionState::handshaking;
  bool closed_ = false;  // close() sent close_notify
  std::string error_;
};

}  // namespace car::tls
