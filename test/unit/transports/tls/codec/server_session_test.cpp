// The sans-I/O TLS server session (server_session.cpp) against OpenSSL's own client, both on
// memory BIOs pumped by the test: the handshake (TLS 1.3 and 1.2; older versions refused), data
// both ways including 1 MiB and one byte at a time, the bound on what one receive() yields,
// garbage and plaintext HTTP failing as values, and close_notify in both directions.
#include <string>

#include "car/tls/server_session.hpp"
#include "tls_test_support.hpp"

using namespace car;
using namespace car::test;

namespace {

std::shared_ptr<const tls::ServerContext> test_context(const TestCertificate& cert) {
  auto made = tls::ServerContext::from_pem(cert.cert_pem, cert.key_pem);
  REQUIRE_MESSAGE(made.ok(), (made.ok() ? "" : made.error().message));
  return made.value();
}

// Moves bytes between the two until neither has anything to say; `plaintext` collects what the
// server decrypted. Bounded: a handshake is a few round trips.
void pump(MemoryTlsClient& client, tls::ServerSession& server, std::string& plaintext) {
  for (int round = 0; round < 16; ++round) {
    client.handshake();
    std::string to_server = client.take_output();
    std::string to_client;
    auto error = server.receive(to_server, plaintext, to_client);
    REQUIRE_MESSAGE(!error, *error);
    client.give_input(to_client);
    if (to_server.empty() && to_client.empty()) return;
  }
  FAIL("the handshake did not settle in 16 rounds");
}

struct Pair {
  TestCertificate cert = make_test_certificate();
  MemoryTlsClient client{cert.cert_pem};
  tls::ServerSession server{test_context(cert)};
  std::string plaintext;

  void connect() {
    pump(client, server, plaintext);
    REQUIRE(client.handshake());
    REQUIRE(server.state() == tls::SessionState::established);
  }
};

}  // namespace

TEST_SUITE("tls_server_session") {
  TEST_CASE("a full handshake: the client verifies the certificate, TLS 1.3 is chosen") {
    Pair p;
    CHECK(p.server.state() == tls::SessionState::handshaking);
    CHECK(p.server.protocol_version().empty());
    p.connect();
    CHECK(p.client.verified());
    CHECK(p.client.version() == "TLSv1.3");
    CHECK(p.server.protocol_version() == "TLSv1.3");
    CHECK(p.server.error().empty());
  }

  TEST_CASE("TLS 1.2 is accepted, TLS 1.1 is refused with an error value") {
    TestCertificate cert = make_test_certificate();
    {
      MemoryTlsClient client(cert.cert_pem, "localhost", TLS1_2_VERSION);
      tls::ServerSession server(test_context(cert));
      std::string plaintext;
      pump(client, server, plaintext);
      REQUIRE(client.handshake());
      CHECK(server.protocol_version() == "TLSv1.2");
    }
    MemoryTlsClient old(cert.cert_pem, "localhost", TLS1_1_VERSION);
    tls::ServerSession server(test_context(cert));
    old.handshake();
    std::string plaintext;
    std::string to_client;
    auto error = server.receive(old.take_output(), plaintext, to_client);
    REQUIRE(error.has_value());
    CHECK(server.state() == tls::SessionState::failed);
    CHECK(*error == server.error());
    CHECK(!to_client.empty());  // the alert that tells the client why
    old.give_input(to_client);
    CHECK(!old.handshake());
    CHECK(old.failed());
  }

  TEST_CASE("data flows both ways after the handshake") {
    Pair p;
    p.connect();
    p.client.write("GET / HTTP/1.1\r\n\r\n");
    std::string to_client;
    REQUIRE(!p.server.receive(p.client.take_output(), p.plaintext, to_client));
    CHECK(p.plaintext == "GET / HTTP/1.1\r\n\r\n");
    p.client.give_input(to_client);

    std::string records;
    REQUIRE(!p.server.send("HTTP/1.1 101 Switching Protocols\r\n\r\n", records));
    REQUIRE(!p.server.send("", records));  // nothing to encrypt: nothing appended
    p.client.give_input(records);
    CHECK(p.client.read_available() == "HTTP/1.1 101 Switching Protocols\r\n\r\n");
  }

  TEST_CASE("1 MiB each way, and receive() never yields more plaintext than ciphertext") {
    Pair p;
    p.connect();
    std::string big(1024 * 1024, '\0');
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);

    p.client.write(big);
    std::string wire = p.client.take_output();
    CHECK(wire.size() > big.size());
    // Fed in uneven slices that cut records apart.
    std::string got;
    std::size_t fed = 0;
    for (std::size_t offset = 0; offset < wire.size();) {
      std::size_t n = std::min<std::size_t>(7777, wire.size() - offset);
      std::string to_client;
      REQUIRE(!p.server.receive(std::string_view(wire).substr(offset, n), got, to_client));
      offset += n;
      fed += n;
      CHECK(got.size() <= fed);
    }
    CHECK(got == big);

    std::string records;
    REQUIRE(!p.server.send(big, records));
    // The overhead is per 16 KiB record: well under 1 %.
    CHECK(records.size() > big.size());
    CHECK(records.size() < big.size() + big.size() / 100);
    p.client.give_input(records);
    CHECK(p.client.read_available() == big);
  }

  TEST_CASE("the handshake and data survive input one byte at a time") {
    Pair p;
    std::string plaintext;
    for (int round = 0; round < 16 && !(p.client.handshake() &&
                                        p.server.state() == tls::SessionState::established);
         ++round) {
      std::string to_server = p.client.take_output();
      std::string to_client;
      for (char byte : to_server) {
        REQUIRE(!p.server.receive(std::string_view(&byte, 1), plaintext, to_client));
      }
      p.client.give_input(to_client);
    }
    REQUIRE(p.server.state() == tls::SessionState::established);
    p.client.write("hello");
    std::string wire = p.client.take_output();
    std::string to_client;
    for (char byte : wire) REQUIRE(!p.server.receive(std::string_view(&byte, 1), plaintext, to_client));
    CHECK(plaintext == "hello");
  }

  TEST_CASE("garbage is an error value, the same one for every later call") {
    TestCertificate cert = make_test_certificate();
    tls::ServerSession server(test_context(cert));
    std::string plaintext;
    std::string to_peer;
    auto error = server.receive(std::string(64, '\x17'), plaintext, to_peer);
    REQUIRE(error.has_value());
    CHECK(!error->empty());
    CHECK(server.state() == tls::SessionState::failed);
    CHECK(plaintext.empty());
    auto again = server.receive("more", plaintext, to_peer);
    REQUIRE(again.has_value());
    CHECK(*again == *error);
    std::string records;
    CHECK(server.send("x", records).has_value());
    CHECK(records.empty());
  }

  TEST_CASE("plaintext HTTP to a TLS session fails with OpenSSL's reason") {
    TestCertificate cert = make_test_certificate();
    tls::ServerSession server(test_context(cert));
    std::string plaintext;
    std::string to_peer;
    auto error = server.receive("GET / HTTP/1.1\r\nHost: x\r\n\r\n", plaintext, to_peer);
    REQUIRE(error.has_value());
    INFO(*error);
    CHECK(error->find("http request") != std::string::npos);
    CHECK(plaintext.empty());
  }

  TEST_CASE("send before the handshake finished is refused") {
    TestCertificate cert = make_test_certificate();
    tls::ServerSession server(test_context(cert));
    std::string records;
    auto error = server.send("early", records);
    REQUIRE(error.has_value());
    CHECK(records.empty());
    CHECK(server.state() == tls::SessionState::handshaking);  // not a failure of the session
  }

  TEST_CASE("close_notify from the client: peer_closed; ours reaches the client") {
    Pair p;
    p.connect();
    p.client.write("last words");
    p.client.send_close_notify();
    std::string to_client;
    REQUIRE(!p.server.receive(p.client.take_output(), p.plaintext, to_client));
    CHECK(p.plaintext == "last words");
    CHECK(p.server.state() == tls::SessionState::peer_closed);
    // Input after close_notify is ignored, not an error.
    REQUIRE(!p.server.receive("ignored", p.plaintext, to_client));
    CHECK(p.plaintext == "last words");

    // We may still answer, then close our side.
    std::string records;
    REQUIRE(!p.server.send("bye", records));
    p.server.close(records);
    CHECK(p.server.send("too late", records).has_value());
    std::string before = records;
    p.server.close(records);  // only once
    CHECK(records == before);
    p.client.give_input(records);
    CHECK(p.client.read_available() == "bye");
    CHECK(p.client.peer_closed());
  }

  TEST_CASE("close() before the handshake finished sends nothing") {
    TestCertificate cert = make_test_certificate();
    tls::ServerSession server(test_context(cert));
    std::string records;
    server.close(records);
    CHECK(records.empty());
  }

  TEST_CASE("a session without a context starts failed") {
    tls::ServerSession server(nullptr);
    CHECK(server.state() == tls::SessionState::failed);
    std::string plaintext;
    std::string to_peer;
    CHECK(server.receive("x", plaintext, to_peer).has_value());
    CHECK(to_string(server.state()) == "failed");
  }
}
