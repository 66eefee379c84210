#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "car/export.hpp"
#include "car/result.hpp"

// What every TLS connection of a listener shares: the certificate chain and private key, and the
// protocol policy, loaded once and checked at load time (a key that does not belong to the
// certificate is an Error here, not a handshake failure later). Sessions (server_session.hpp)
// are made from it, one per connection.
//
// Policy: TLS 1.2 and 1.3 only; for TLS 1.2 only ECDHE key exchange with AES-GCM or
// ChaCha20-Poly1305 (forward secrecy, AEAD), the server's preference order; TLS 1.3 keeps
// OpenSSL's suites. No compression, no renegotiation, no client certificates, no server-side
// session cache (resumption uses stateless tickets, so nothing grows per client). One certificate
// for every server name: SNI is not consulted. Passphrase-protected keys are refused rather than
// prompted for (a daemon has no one to ask).
//
// Lifetime: shared (sessions keep it alive). Threading: immutable once made; any thread may make
// sessions from it concurrently.
namespace car::tls {

class CAR_API ServerContext {
 public:
  // Reads a PEM certificate chain (the server's certificate first, then intermediates) and a
  // PEM private key from files. Errors name the file and give OpenSSL's reason: unreadable file,
  // no certificate or key in it, an encrypted key, a key that does not match the certificate.
  // Blocking file reads: call at start-up, not on a loop thread serving connections.
  static Result<std::shared_ptr<const ServerContext>> from_files(const std::string& cert_chain_file,
                                                                  const std::string& key_file);
  // The same from PEM text in memory (tests, embedders with their own key storage).
  static Result<std::shared_ptr<const ServerContext>> from_pem(std::string_view cert_chain_pem,
                                                                std::string_view key_pem);

  ~ServerContext();
  ServerContext(const ServerContext&) = delete;
  ServerContext& operator=(const ServerContext&) = delete;

  // The leaf certificate's subject, one line (e.g. "CN=localhost"), for start-up logs.
  const std::string& subject() const { return subject_; }

  struct Impl;  // OpenSSL's SSL_CTX; private to this layer (server_session.cpp reads it)
  const Impl& impl() const { return *impl_; }

 private:
  ServerContext(std::unique_ptr<Impl> impl, std::string subject);
  // `*_origin` names where the text came from, for errors.
  static Result<std::shared_ptr<const ServerContext>> build(std::string_view cert_pem,
                                                            std::string_view cert_origin,
                                                            std::string_view key_pem,
                                                            std::string_view key_origin);

  std::unique_ptr<Impl> impl_;
  std::string subject_;
};

}  // namespace car::tls
