#pragma once

// Helpers for the TLS tests: a self-signed certificate and key made in memory with OpenSSL (no
// files, no `openssl` binary), and a TLS client on memory BIOs that the test pumps by hand
// against a car::tls::ServerSession, or over a socket (ws tests). The client is OpenSSL's own
// client state machine, not our code, so a passing test means a real client accepts the server.

#include <doctest/doctest.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <string>
#include <string_view>

namespace car::test {

struct TestCertificate {
  std::string cert_pem;
  std::string key_pem;
  std::string encrypted_key_pem;  // the same key, protected by the passphrase "secret"
};

namespace tls_detail {

inline std::string bio_text(BIO* bio) {
  char* data = nullptr;
  long size = BIO_get_mem_data(bio, &data);
  return size > 0 ? std::string(data, static_cast<std::size_t>(size)) : std::string();
}

}  // namespace tls_detail

// An ECDSA P-256 key and a certificate for `common_name` (also its DNS subjectAltName, which
// clients check), valid from now for an hour, signed by itself.
inline TestCertificate make_test_certificate(const std::string& common_name = "localhost") {
  EVP_PKEY* key = nullptr;
  EVP_PKEY_CTX* kctx = EVP_PKEY_CTX_new_id(EVP_PKEY_EC, nullptr);
  REQUIRE(kctx != nullptr);
  REQUIRE(EVP_PKEY_keygen_init(kctx) == 1);
  REQUIRE(EVP_PKEY_CTX_set_ec_paramgen_curve_nid(kctx, NID_X9_62_prime256v1) == 1);
  REQUIRE(EVP_PKEY_keygen(kctx, &key) == 1);
  EVP_PKEY_CTX_free(kctx);

  X509* cert = X509_new();
  REQUIRE(cert != nullptr);
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), -60);
  X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, cert, cert, nullptr, nullptr, 0);
  std::string san = "DNS:" + common_name + ",IP:127.0.0.1";
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, NID_subject_alt_name, san.c_str());
  REQUIRE(ext != nullptr);
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  REQUIRE(X509_sign(cert, key, EVP_sha256()) > 0);

  TestCertificate out;
  BIO* bio = BIO_new(BIO_s_mem());
  REQUIRE(PEM_write_bio_X509(bio, cert) == 1);
  out.cert_pem = tls_detail::bio_text(bio);
  BIO_free(bio);
  bio = BIO_new(BIO_s_mem());
  REQUIRE(PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr) == 1);
  out.key_pem = tls_detail::bio_text(bio);
  BIO_free(bio);
  bio = BIO_new(BIO_s_mem());
  char passphrase[] = "secret";
  REQUIRE(PEM_write_bio_PrivateKey(bio, key, EVP_aes_128_cbc(),
                                   reinterpret_cast<unsigned char*>(passphrase), 6, nullptr,
                                   nullptr) == 1);
  out.encrypted_key_pem = tls_detail::bio_text(bio);
  BIO_free(bio);
  X509_free(cert);
  EVP_PKEY_free(key);
  return out;
}

// A TLS client that trusts exactly `trusted_cert_pem` and checks the server name `host`.
// Bytes move only when the test moves them: take_output() what the client wants sent,
// give_input() what the server sent.
class MemoryTlsClient {
 public:
  explicit MemoryTlsClient(const std::string& trusted_cert_pem, const std::string& host = "localhost",
                           int max_version = 0) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    REQUIRE(ctx_ != nullptr);
    if (max_version != 0) {
      SSL_CTX_set_min_proto_version(ctx_, max_version);
      SSL_CTX_set_max_proto_version(ctx_, max_version);
      // Old protocol versions sit at security level 0 in OpenSSL 3.
      if (max_version < TLS1_2_VERSION) SSL_CTX_set_security_level(ctx_, 0);
    }
    BIO* pem = BIO_new_mem_buf(trusted_cert_pem.data(), static_cast<int>(trusted_cert_pem.size()));
    X509* trusted = PEM_read_bio_X509(pem, nullptr, nullptr, nullptr);
    BIO_free(pem);
    REQUIRE(trusted != nullptr);
    REQUIRE(X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx_), trusted) == 1);
    X509_free(trusted);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    ssl_ = SSL_new(ctx_);
    REQUIRE(ssl_ != nullptr);
    // SSL_set_tlsext_host_name, without the macro's C cast.
    SSL_ctrl(ssl_, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
             const_cast<char*>(host.c_str()));
    REQUIRE(SSL_set1_host(ssl_, host.c_str()) == 1);
    in_ = BIO_new(BIO_s_mem());
    out_ = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(in_, -1);
    BIO_set_mem_eof_return(out_, -1);
    SSL_set_bio(ssl_, in_, out_);
    SSL_set_connect_state(ssl_);
  }
  MemoryTlsClient(const MemoryTlsClient&) = delete;
  MemoryTlsClient& operator=(const MemoryTlsClient&) = delete;
  ~MemoryTlsClient() {
    SSL_free(ssl_);
    SSL_CTX_free(ctx_);
  }

  // Advances the handshake as far as the input allows; true once it is done.
  bool handshake() {
    if (SSL_is_init_finished(ssl_)) return true;
    int rc = SSL_do_handshake(ssl_);
    if (rc == 1) return true;
    int reason = SSL_get_error(ssl_, rc);
    if (reason != SSL_ERROR_WANT_READ) failed_ = true;
    ERR_clear_error();
    return false;
  }
  bool failed() const { return failed_; }
  bool verified() const { return SSL_get_verify_result(ssl_) == X509_V_OK; }
  std::string version() const { return SSL_get_version(ssl_); }

  std::string take_output() {
    std::string bytes = tls_detail::bio_text(out_);
    static_cast<void>(BIO_reset(out_));
    return bytes;
  }
  void give_input(std::string_view bytes) {
    if (!bytes.empty()) REQUIRE(BIO_write(in_, bytes.data(), static_cast<int>(bytes.size())) > 0);
  }

  void write(std::string_view plaintext) {
    std::size_t written = 0;
    REQUIRE(SSL_write_ex(ssl_, plaintext.data(), plaintext.size(), &written) == 1);
    REQUIRE(written == plaintext.size());
  }
  // Everything decrypted from the input so far; notes a close_notify in peer_closed().
  std::string read_available() {
    std::string out;
    char buffer[16384];
    for (;;) {
      std::size_t got = 0;
      int rc = SSL_read_ex(ssl_, buffer, sizeof buffer, &got);
      if (rc == 1) {
        out.append(buffer, got);
        continue;
      }
      int reason = SSL_get_error(ssl_, rc);
      if (reason == SSL_ERROR_ZERO_RETURN) peer_closed_ = true;
      else if (reason != SSL_ERROR_WANT_READ) failed_ = true;
      ERR_clear_error();
      return out;
    }
  }
  bool peer_closed() const { return peer_closed_; }
  void send_close_notify() { static_cast<void>(SSL_shutdown(ssl_)); }

 private:
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  BIO* in_ = nullptr;
  BIO* out_ = nullptr;
  bool failed_ = false;
  bool peer_closed_ = false;
};

}  // namespace car::test
