// libFuzzer target for car::tls::ServerSession, the sans-I/O TLS codec: what a client can send
// before any authentication (its hello, or anything else) goes into receive(), whole and split
// at a data-derived point. Each call must keep the header's promises: never more plaintext than
// the input so far, a failure reported as a value that the session then keeps (state failed, the
// same error from every later call, send() refused without output), and nothing sent back once
// it failed except in the failing call itself (the alert).
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "car/tls/server_session.hpp"

namespace {

using namespace car::tls;

void check(bool ok) {
  if (!ok) std::abort();
}

std::string pem_of(BIO* bio) {
  char* data = nullptr;
  long size = BIO_get_mem_data(bio, &data);
  std::string text(data, static_cast<std::size_t>(size));
  BIO_free(bio);
  return text;
}

// One self-signed P-256 certificate for the whole run (made once: key generation is slow).
std::shared_ptr<const ServerContext> make_context() {
  EVP_PKEY* key = nullptr;
  EVP_PKEY_CTX* kctx = EVP_PKEY_CTX_new_id(EVP_PKEY_EC, nullptr);
  check(kctx != nullptr && EVP_PKEY_keygen_init(kctx) == 1 &&
        EVP_PKEY_CTX_set_ec_paramgen_curve_nid(kctx, NID_X9_62_prime256v1) == 1 &&
        EVP_PKEY_keygen(kctx, &key) == 1);
  EVP_PKEY_CTX_free(kctx);
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
  X509_set_pubkey(cert, key);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("fuzz"), -1, -1, 0);
  X509_set_issuer_name(cert, X509_get_subject_name(cert));
  check(X509_sign(cert, key, EVP_sha256()) > 0);
  BIO* cert_bio = BIO_new(BIO_s_mem());
  BIO* key_bio = BIO_new(BIO_s_mem());
  check(PEM_write_bio_X509(cert_bio, cert) == 1 &&
        PEM_write_bio_PrivateKey(key_bio, key, nullptr, nullptr, 0, nullptr, nullptr) == 1);
  X509_free(cert);
  EVP_PKEY_free(key);
  auto made = ServerContext::from_pem(pem_of(cert_bio), pem_of(key_bio));
  check(made.ok());
  return made.value();
}

void feed(const std::shared_ptr<const ServerContext>& context, std::string_view input,
          std::size_t split) {
  ServerSession session(context);
  std::string plaintext;
  std::string to_peer;
  std::size_t fed = 0;
  for (std::string_view part : {input.substr(0, split), input.substr(split)}) {
    const bool failed_before = session.state() == SessionState::failed;
    const std::size_t sent_before = to_peer.size();
    auto error = session.receive(part, plaintext, to_peer);
    fed += part.size();
    check(plaintext.size() <= fed);
    check(error.has_value() == (session.state() == SessionState::failed));
    if (error) {
      check(!error->empty() && *error == session.error());
    }
    if (failed_before) check(to_peer.size() == sent_before);
  }
  if (session.state() == SessionState::failed) {
    std::string records;
    check(session.send("x", records).has_value() && records.empty());
    std::string more;
    check(session.receive("more", plaintext, more) == session.error());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::shared_ptr<const ServerContext> context = make_context();
  std::string_view input(reinterpret_cast<const char*>(data), size);
  feed(context, input, input.size());
  if (size > 1) feed(context, input, data[0] % size);
  return 0;
}
