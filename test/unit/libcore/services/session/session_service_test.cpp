// SessionService (session_service.cpp): session.auth, server.handshake, the auth gate (-32001 then
// close) and agent bindings (PROTOCOL.md §3).
#include "../../../test_support.hpp"

using namespace car;
using namespace car::test;
using namespace car::session;

namespace {

ServerConfig enabled_auth() { return Fixture::enabled_auth(); }

void add_ping(Server& server) {
  server.methods().add("ping", {}, [](const Request&, Reply reply) { reply.ok(R"("pong")"); });
}

}  // namespace

TEST_SUITE("session_service") {
  TEST_CASE("unauthenticated call gets -32001 and the connection closes") {
    Fixture f(enabled_auth());
    add_ping(f.server);
    auto r = f.call(R"({"jsonrpc":"2.0","id":1,"method":"ping"})");
    CHECK(error_code(r) == -32001);
    CHECK(error_message(r) == "auth required: call session.auth first");
    REQUIRE(f.client().sink->transport_end().has_value());
    CHECK(f.client().sink->transport_end()->code == 1008);
    CHECK(f.client().connection->closed());
    // Nothing more is read.
    CHECK(f.exchange(R"({"jsonrpc":"2.0","id":2,"method":"session.auth","params":{"token":"secret"}})")
              .empty());
  }

  TEST_CASE("an unauthenticated notification gets no reply but still closes") {
    Fixture f(enabled_auth());
    add_ping(f.server);
    CHECK(f.exchange(R"({"jsonrpc":"2.0","method":"ping"})").empty());
    CHECK(f.client().connection->closed());
  }

  TEST_CASE("wrong token: -32603 token mismatch, session stays unauthenticated") {
    Fixture f(enabled_auth());
    add_ping(f.server);
    auto r = f.call(R"({"jsonrpc":"2.0","id":1,"method":"session.auth","params":{"token":"nope"}})");
    CHECK(error_code(r) == -32603);
    CHECK(error_message(r) == "auth failed: token mismatch");
    CHECK_FALSE(f.client().connection->closed());
    auto next = f.call(R"({"jsonrpc":"2.0","id":2,"method":"ping"})");
    CHECK(error_code(next) == -32001);
    CHECK(f.client().connection->closed());
  }

  TEST_CASE("correct token, host token, both tokens") {
    Fixture f(enabled_auth());
    add_ping(f.server);
    auto both = f.call(
        R"({"jsonrpc":"2.0","id":1,"method":"session.auth","params":{"token":"secret","host_token":"host-secret"}})");
    CHECK(error_code(both) == -32602);
    CHECK(error_message(both) == "invalid params: give token or host_token, not both");
    auto ok = f.call(R"({"jsonrpc":"2.0","id":2,"method":"session.auth","params":{"token":"secret"}})");
    CHECK(ok["result"]["ok"].GetBool());
    CHECK(ok["result"]["auth_enabled"].GetBool());
    CHECK_FALSE(ok["result"].HasMember("agent_id"));
    CHECK_FALSE(ok["result"].HasMember("role"));
    CHECK(f.call(R"({"jsonrpc":"2.0","id":3,"method":"ping"})")["result"] == "pong");
    auto host = f.call(
        R"({"jsonrpc":"2.0","id":4,"method":"session.auth","params":{"host_token":"host-secret"}})");
    CHECK(std::string(host["result"]["role"].GetString()) == "host");
    CHECK(session::is_host(f.client().connection->session()));
    // A failed re-auth changes nothing.
    auto bad = f.call(R"({"jsonrpc":"2.0","id":5,"method":"session.auth","params":{"host_token":"x"}})");
    CHECK(error_code(bad) == -32603);
    CHECK(session::is_host(f.client().connection->session()));
    CHECK(f.client().connection->session().authenticated());
  }

  TEST_CASE("auth disabled: any params succeed and methods work without auth") {
    Fixture f;  // disabled
    add_ping(f.server);
    CHECK(f.call(R"({"jsonrpc":"2.0","id":1,"method":"ping"})")["result"] == "pong");
    auto r = f.call(R"({"jsonrpc":"2.0","id":2,"method":"session.auth","params":{"token":"x"}})");
    CHECK(r["result"]["ok"].GetBool());
    CHECK_FALSE(r["result"]["auth_enabled"].GetBool());
    auto bound = f.call(
        R"({"jsonrpc":"2.0","id":3,"method":"session.auth","params":{"agent_id":"a7"}})");
    CHECK(std::string(bound["result"]["agent_id"].GetString()) == "a7");
  }

  TEST_CASE("per-agent tokens") {
    Fixture f(enabled_auth());
    auto wrong = f.call(
        R"({"jsonrpc":"2.0","id":1,"method":"session.auth","params":{"token":"secret","agent_id":"special"}})");
    CHECK(error_message(wrong) == "auth failed: token mismatch");
    auto right = f.call(
        R"({"jsonrpc":"2.0","id":2,"method":"session.auth","params":{"token":"special-token","agent_id":"special"}})");
    CHECK(std::string(right["result"]["agent_id"].GetString()) == "special");
  }

  TEST_CASE("one live connection per agent id") {
    ManualExecutor ex;
    Server server(ex, enabled_auth());
    auto sessions = session::install_session_service(server, test_credentials());
    Client a(server, ex), b(server, ex);
    const std::string auth =
        R"({"jsonrpc":"2.0","id":1,"method":"session.auth","params":{"token":"secret","agent_id":"a1"}})";
    a.send(auth);
    ex.run_until_idle();
    CHECK(parse_json(a.sink->take_written()[0])["result"]["ok"].GetBool());
    b.send(auth);
    ex.run_until_idle();
    auto refused = parse_json(b.sink->take_written()[0]);
    CHECK(error_message(refused) == "agent 'a1' is already attached on another connection");
    CHECK_FALSE(session::agent_id(b.connection->session()).has_value());
    a.sink->simulate_peer_closed();
    ex.run_until_idle();
    CHECK(server.connection_count() == 1);
    b.send(auth);
    ex.run_until_idle();
    CHECK(parse_json(b.sink->take_written()[0])["result"]["ok"].GetBool());
    CHECK(*sessions->agent_bindings().holder("a1") == b.connection->client_id());
  }

  TEST_CASE("batch members see the auth state from arrival; -32001 closes after the batch") {
    Fixture f(enabled_auth());
    add_ping(f.server);
    auto r = f.call(
        R"([{"jsonrpc":"2.0","id":1,"method":"session.auth","params":{"token":"secret"}},)"
        R"({"jsonrpc":"2.0","id":2,"method":"ping"}])");
    REQUIRE(r.IsArray());
    REQUIRE(r.Size() == 2);
    CHECK(f.client().connection->closed());
  }

  TEST_CASE("server.handshake") {
    Fixture f(enabled_auth());
    auto ok = f.call(
        R"({"jsonrpc":"2.0","id":1,"method":"server.handshake","params":{"protocol_version":2}})");
    CHECK(ok["result"]["protocol_version"].GetInt() == 2);
    CHECK(ok["result"]["client_protocol_version"].GetInt() == 2);
    CHECK(std::string(ok["result"]["server_version"].GetString()) == version_string);
    auto bad = f.call(
        R"({"jsonrpc":"2.0","id":2,"method":"server.handshake","params":{"protocol_version":3}})");
    CHECK(error_code(bad) == -32006);
    CHECK(error_message(bad) == "unsupported protocol version");
    CHECK_FALSE(f.client().connection->closed());  // allowed before auth
  }

  TEST_CASE("require_handshake gates marked methods with -32005") {
    ServerConfig config = Fixture::disabled_auth();
    config.require_handshake = true;
    Fixture f(config);
    MethodOptions options;
    options.requires_handshake = true;
    f.server.methods().add("gated.sub", {}, [](const Request&, Reply r) { r.ok("1"); }, options);
    CHECK(error_code(f.call(R"({"jsonrpc":"2.0","id":1,"method":"gated.sub"})")) == -32005);
    f.call(R"({"jsonrpc":"2.0","id":2,"method":"server.handshake","params":{"protocol_version":2}})");
    CHECK(f.call(R"({"jsonrpc":"2.0","id":3,"method":"gated.sub"})")["result"].GetInt() == 1);
  }
}
