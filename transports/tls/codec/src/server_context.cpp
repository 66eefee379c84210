#include "car/tls/server_context.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>

#include <fmt/format.h>

#include "openssl_errors.hpp"
#include "server_context_impl.hpp"

namespace car::tls {
namespace {

// A certificate chain or a key is a few KiB; anything this large is not one (and must not make
// the daemon read a whole disk at start-up).
constexpr std::size_t max_pem_bytes = 1024 * 1024;

// TLS 1.2 suites: ephemeral ECDH only (forward secrecy) with an AEAD cipher. TLS 1.3's suites
// all qualify and keep OpenSSL's default order.
constexpr const char* tls12_ciphers = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL";

Error context_error(std::string message) { return Error::internal(std::move(message)); }

// OpenSSL calls this when a PEM block is encrypted. There is no one to ask for a passphrase (a
// prompt on the terminal would block start-up), so decryption fails and the caller says why.
int refuse_passphrase(char*, int, int, void* asked) {
  *static_cast<bool*>(asked) = true;
  return -1;
}

Result<std::string> read_pem_file(const std::string& path, const char* what) {
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return context_error(fmt::format("cannot read the TLS {} {}: {}", what, path,
                                     errno != 0 ? std::strerror(errno) : "cannot open"));
  }
  std::string text;
  char buffer[8192];
  while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
    text.append(buffer, static_cast<std::size_t>(in.gcount()));
    if (text.size() > max_pem_bytes) {
      return context_error(fmt::format("the TLS {} {} is larger than {} bytes: not a PEM file",
                                       what, path, max_pem_bytes));
    }
  }
  if (in.bad()) {
    return context_error(fmt::format("cannot read the TLS {} {}: read error", what, path));
  }
  return text;
}

struct BioDeleter {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;

BioPtr memory_bio(std::string_view text) {
  if (text.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) return nullptr;
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

std::string subject_line(X509* certificate) {
  char buffer[512] = {};
  X509_NAME_oneline(X509_get_subject_name(certificate), buffer, sizeof buffer);
  return buffer;
}

// Loads the chain: the leaf first, every further certificate in the text as an intermediate.
// `origin` names where the text came from in errors.
std::optional<std::string> use_chain(SSL_CTX* ctx, std::string_view pem, std::string_view origin,
                                     std::string& subject) {
  BioPtr bio = memory_bio(pem);
  if (!bio) return fmt::format("cannot read {}: too large", origin);
  bool asked = false;
  X509* leaf = PEM_read_bio_X509_AUX(bio.get(), nullptr, &refuse_passphrase, &asked);
  if (leaf == nullptr) {
    return fmt::format("no PEM certificate in {}: {}", origin,
                       detail::take_openssl_errors("no certificate found"));
  }
  subject = subject_line(leaf);
  int used = SSL_CTX_use_certificate(ctx, leaf);
  X509_free(leaf);  // the context holds its own reference
  if (used != 1) {
    return fmt::format("the certificate in {} cannot be used: {}", origin,
                       detail::take_openssl_errors("refused"));
  }
  while (X509* intermediate = PEM_read_bio_X509(bio.get(), nullptr, &refuse_passphrase, &asked)) {
    // add0 takes the reference on success only.
    if (SSL_CTX_add0_chain_cert(ctx, intermediate) != 1) {
      X509_free(intermediate);
      return fmt::format("an intermediate certificate in {} cannot be used: {}", origin,
                         detail::take_openssl_errors("refused"));
    }
  }
  // The loop ends at the end of the text, which OpenSSL reports as "no start line"; anything
  // else means a block that is there but broken.
  unsigned long last = ERR_peek_last_error();
  if (last != 0 && !(ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE)) {
    return fmt::format("a broken certificate in {}: {}", origin,
                       detail::take_openssl_errors("unreadable"));
  }
  detail::clear_openssl_errors();
  return std::nullopt;
}

std::optional<std::string> use_key(SSL_CTX* ctx, std::string_view pem, std::string_view origin) {
  BioPtr bio = memory_bio(pem);
  if (!bio) return fmt::format("cannot read {}: too large", origin);
  bool asked = false;
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio.get(), nullptr, &refuse_passphrase, &asked);
  if (key == nullptr) {
    if (asked) {
      detail::clear_openssl_errors();
      return fmt::format("the private key in {} is encrypted; give an unencrypted key (protect it "
                         "with file permissions)", origin);
    }
    return fmt::format("no PEM private key in {}: {}", origin,
                       detail::take_openssl_errors("no key found"));
  }
  // Checked here, by name, rather than left to SSL_CTX_use_PrivateKey's "key values mismatch".
  X509* leaf = SSL_CTX_get0_certificate(ctx);
  if (leaf != nullptr && X509_check_private_key(leaf, key) != 1) {
    EVP_PKEY_free(key);
    detail::clear_openssl_errors();
    return fmt::format("the private key in {} does not match the certificate", origin);
  }
  int used = SSL_CTX_use_PrivateKey(ctx, key);
  EVP_PKEY_free(key);
  if (used != 1) {
    return fmt::format("the private key in {} cannot be used: {}", origin,
                       detail::take_openssl_errors("refused"));
  }
  return std::nullopt;
}

}  // namespace

ServerContext::ServerContext(std::unique_ptr<Impl> impl, std::string subject)
    : impl_(std::move(impl)), subject_(std::move(subject)) {}

ServerContext::~ServerContext() = default;

Result<std::shared_ptr<const ServerContext>> ServerContext::from_files(
    const std::string& cert_chain_file, const std::string& key_file) {
  auto cert = read_pem_file(cert_chain_file, "certificate");
  if (!cert) return cert.error();
  auto key = read_pem_file(key_file, "key");
  if (!key) return key.error();
  return build(cert.value(), cert_chain_file, key.value(), key_file);
}

Result<std::shared_ptr<const ServerContext>> ServerContext::from_pem(std::string_view cert_chain_pem,
                                                                      std::string_view key_pem) {
  return build(cert_chain_pem, "the certificate text", key_pem, "the key text");
}

Result<std::shared_ptr<const ServerContext>> ServerContext::build(std::string_view cert_pem,
                                                                  std::string_view cert_origin,
                                                                  std::string_view key_pem,
                                                                  std::string_view key_origin) {
  detail::clear_openssl_errors();
  auto impl = std::make_unique<Impl>();
  impl->ctx = SSL_CTX_new(TLS_server_method());
  if (impl->ctx == nullptr) {
    return context_error("cannot create a TLS context: " +
                         detail::take_openssl_errors("out of memory"));
  }
  SSL_CTX* ctx = impl->ctx;
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
      SSL_CTX_set_cipher_list(ctx, tls12_ciphers) != 1) {
    return context_error("cannot set the TLS policy: " + detail::take_openssl_errors("refused"));
  }
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  // Idle connections give their record buffers back (~34 KiB each): a daemon holds many.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  // No server-side session table (it would grow with clients); tickets still resume sessions.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);

  std::string subject;
  if (auto problem = use_chain(ctx, cert_pem, cert_origin, subject)) {
    return context_error(std::move(*problem));
  }
  if (auto problem = use_key(ctx, key_pem, key_origin)) return context_error(std::move(*problem));
  if (SSL_CTX_check_private_key(ctx) != 1) {
    detail::clear_openssl_errors();
    return context_error(fmt::format("the private key in {} does not match the certificate in {}",
                                     key_origin, cert_origin));
  }
  detail::clear_openssl_errors();
  return std::shared_ptr<const ServerContext>(
      new ServerContext(std::move(impl), std::move(subject)));
}

}  // namespace car::tls
