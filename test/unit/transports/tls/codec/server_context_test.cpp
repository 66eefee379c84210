// The TLS server context (server_context.cpp): PEM from memory and from files, and every load
// error as a value that names what is wrong — unreadable files, no certificate, no key, an
// encrypted key, a key of another certificate.
#include <filesystem>
#include <fstream>
#include <string>

#include "../../../uv_test_support.hpp"
#include "car/tls/server_context.hpp"
#include "tls_test_support.hpp"

using namespace car;
using namespace car::test;

namespace {

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  REQUIRE(out.good());
}

bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_SUITE("tls_server_context") {
  TEST_CASE("a matching certificate and key load from memory; the subject is reported") {
    TestCertificate cert = make_test_certificate("car.test");
    auto made = tls::ServerContext::from_pem(cert.cert_pem, cert.key_pem);
    REQUIRE_MESSAGE(made.ok(), (made.ok() ? "" : made.error().message));
    CHECK(contains(made.value()->subject(), "CN=car.test"));
  }

  TEST_CASE("files: loaded, or an error naming the file that cannot be read") {
    PrivateTempDir dir;
    TestCertificate cert = make_test_certificate();
    write_file(dir / "cert.pem", cert.cert_pem);
    write_file(dir / "key.pem", cert.key_pem);
    auto made = tls::ServerContext::from_files(dir / "cert.pem", dir / "key.pem");
    REQUIRE_MESSAGE(made.ok(), (made.ok() ? "" : made.error().message));

    auto no_cert = tls::ServerContext::from_files(dir / "missing.pem", dir / "key.pem");
    REQUIRE(!no_cert.ok());
    CHECK(contains(no_cert.error().message, dir / "missing.pem"));
    CHECK(contains(no_cert.error().message, "No such file"));
    auto no_key = tls::ServerContext::from_files(dir / "cert.pem", dir / "missing-key.pem");
    REQUIRE(!no_key.ok());
    CHECK(contains(no_key.error().message, "key"));
    CHECK(contains(no_key.error().message, dir / "missing-key.pem"));
  }

  TEST_CASE("a key of another certificate is refused at load time") {
    TestCertificate one = make_test_certificate();
    TestCertificate other = make_test_certificate();
    auto made = tls::ServerContext::from_pem(one.cert_pem, other.key_pem);
    REQUIRE(!made.ok());
    CHECK(contains(made.error().message, "does not match"));
  }

  TEST_CASE("text without a certificate or without a key is refused") {
    TestCertificate cert = make_test_certificate();
    auto no_cert = tls::ServerContext::from_pem("not a certificate", cert.key_pem);
    REQUIRE(!no_cert.ok());
    CHECK(contains(no_cert.error().message, "no PEM certificate"));
    // A key where the certificate should be is not a certificate either.
    auto swapped = tls::ServerContext::from_pem(cert.key_pem, cert.cert_pem);
    REQUIRE(!swapped.ok());
    auto no_key = tls::ServerContext::from_pem(cert.cert_pem, "");
    REQUIRE(!no_key.ok());
    CHECK(contains(no_key.error().message, "no PEM private key"));
  }

  TEST_CASE("an encrypted key is refused, not prompted for") {
    TestCertificate cert = make_test_certificate();
    auto made = tls::ServerContext::from_pem(cert.cert_pem, cert.encrypted_key_pem);
    REQUIRE(!made.ok());
    CHECK(contains(made.error().message, "encrypted"));
  }

  TEST_CASE("a chain: the leaf, then an intermediate, loads") {
    TestCertificate leaf = make_test_certificate();
    TestCertificate intermediate = make_test_certificate("intermediate");
    auto made = tls::ServerContext::from_pem(leaf.cert_pem + intermediate.cert_pem, leaf.key_pem);
    REQUIRE_MESSAGE(made.ok(), (made.ok() ? "" : made.error().message));
    // A chain whose second block is broken is refused, not silently cut short.
    std::string broken = leaf.cert_pem + "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    auto refused = tls::ServerContext::from_pem(broken, leaf.key_pem);
    CHECK(!refused.ok());
  }
}
