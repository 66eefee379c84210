// SessionService (session_service.cpp): session.auth, server.handshake, the auth gate (-32001 then
// close) and agent bindings (PROTOCOL.md §3).
#include <fmt/format.h>

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

  TEST_CASE("the fifth wrong token is answered, then the connection closes with 1008") {
    Fixture f(enabled_auth());
    for (int i = 1; i <= 4; ++i) {
      auto r = f.call(fmt::format(
          R"({{"jsonrpc":"2.0","id":{},"method":"session.auth","params":{{"host_token":"nope"}}}})", i));
      CHECK(error_message(r) == "auth failed: token mismatch");
      CHECK_FALSE(f.client().sink->transport_end().has_value());
    }
    // The fifth arrives in a batch: its reply still goes out before the close.
    auto frames = f.exchange(
        R"([{"jsonrpc":"2.0","id":5,"method":"session.auth","params":{"token":"nope"}}])");
    REQUIRE(frames.size() == 1);
    CHECK(frames[0].find("token mismatch") != std::string::npos);
    auto end = f.client().sink->transport_end();
    REQUIRE(end.has_value());
    CHECK(end->code == 1008);
    // Nothing more is answered, not even the right token.
    CHECK(f.exchange(R"({"jsonrpc":"2.0","id":6,"method":"session.auth","params":{"token":"secret"}})")
              .empty());
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

  TEST_CASE("case 48: server.handshake before session.auth is -32001 and closes") {
    Fixture f(enabled_auth());
    auto r = f.call(
        R"({"jsonrpc":"2.0","id":1,"method":"server.handshake","params":{"protocol_version":2}})");
    CHECK(error_code(r) == -32001);
    CHECK(error_message(r) == "auth required: call session.auth first");
    REQUIRE(f.client().sink->transport_end().has_value());
    CHECK(f.client().sink->transport_end()->code == 1008);
    CHECK(f.client().connection->closed());
    CHECK_FALSE(f.client().connection->session().handshake_done());
  }

  TEST_CASE("case 48: a server.handshake notification before session.auth closes silently") {
    Fixture f(enabled_auth());
    CHECK(f.exchange(R"({"jsonrpc":"2.0","method":"server.handshake","params":{"protocol_version":2}})")
              .empty());
    CHECK(f.client().connection->closed());
    CHECK_FALSE(f.client().connection->session().handshake_done());
  }

  TEST_CASE("server.handshake after auth, and with auth disabled") {
    Fixture f(enabled_auth());
    f.call(R"({"jsonrpc":"2.0","id":1,"method":"session.auth","params":{"token":"secret"}})");
    auto ok = f.call(
        R"({"jsonrpc":"2.0","id":2,"method":"server.handshake","params":{"protocol_version":2,"client_version":"x/1"}})");
    CHECK(ok["result"]["protocol_version"].GetInt() == 2);
    CHECK(ok["result"]["client_protocol_version"].GetInt() == 2);
    CHECK(std::string(ok["result"]["server_version"].GetString()) == version_string);
    CHECK(f.client().connection->session().handshake_done());
    // A repeat with 2 is harmless.
    CHECK(f.call(R"({"jsonrpc":"2.0","id":3,"method":"server.handshake","params":{"protocol_version":2}})")
              ["result"]["protocol_version"].GetInt() == 2);

    Fixture open;  // auth disabled: callable at once
    CHECK(open.call(R"({"jsonrpc":"2.0","id":1,"method":"server.handshake","params":{"protocol_version":2}})")
              ["result"]["protocol_version"].GetInt() == 2);
  }

  TEST_CASE("case 48: -32006 for a missing, non-integer or other protocol_version") {
    Fixture f(enabled_auth());
    f.call(R"({"jsonrpc":"2.0","id":1,"method":"session.auth","params":{"token":"secret"}})");
    struct Bad {
      std::string params;
      std::string got;
    };
    const std::string long_text(200, 'v');
    const Bad cases[] = {
        {"", "none"},  // no params at all
        {R"(,"params":{})", "none"},
        {R"(,"params":{"client_version":"1"})", "none"},
        {R"(,"params":{"protocol_version":null})", "none"},
        {R"(,"params":{"protocol_version":"2"})", R"("2")"},
        {R"(,"params":{"protocol_version":3})", "3"},
        {R"(,"params":{"protocol_version":1})", "1"},
        {R"(,"params":{"protocol_version":-2})", "-2"},
        {R"(,"params":{"protocol_version":2.5})", "2.5"},
        {R"(,"params":{"protocol_version":true})", "true"},
        {R"(,"params":{"protocol_version":[2]})", "[2]"},
        {R"(,"params":{"protocol_version":{"major":2}})", R"({"major":2})"},
        {R"(,"params":{"protocol_version":18446744073709551615})", "18446744073709551615"},
        // A long value is cut to 64 bytes and marked, not echoed whole.
        {R"(,"params":{"protocol_version":")" + long_text + "\"}",
         "\"" + std::string(63, 'v') + "\xE2\x80\xA6"},
    };
    int id = 10;
    for (const auto& c : cases) {
      CAPTURE(c.params);
      auto r = f.call(R"({"jsonrpc":"2.0","id":)" + std::to_string(++id) +
                      R"(,"method":"server.handshake")" + c.params + "}");
      CHECK(error_code(r) == -32006);
      CHECK(error_message(r) == "protocol version mismatch: expected 2, got " + c.got);
      CHECK_FALSE(f.client().connection->session().handshake_done());
    }
    CHECK_FALSE(f.client().connection->closed());
    // A failure after a success leaves the connection negotiated.
    f.call(R"({"jsonrpc":"2.0","id":90,"method":"server.handshake","params":{"protocol_version":2}})");
    auto late = f.call(
        R"({"jsonrpc":"2.0","id":91,"method":"server.handshake","params":{"protocol_version":3}})");
    CHECK(error_code(late) == -32006);
    CHECK(f.client().connection->session().handshake_done());
  }

  TEST_CASE("the cut of a long version keeps UTF-8 whole") {
    Fixture f;
    // 62 ASCII bytes after the opening quote put a 2-byte character across the 64-byte cut.
    std::string value = std::string(62, 'a') + "\xC3\xA9" + "zz";
    auto r = f.call(R"({"jsonrpc":"2.0","id":1,"method":"server.handshake","params":{"protocol_version":")" +
                    value + "\"}}");
    CHECK(error_message(r) ==
          "protocol version mismatch: expected 2, got \"" + std::string(62, 'a') + "\xE2\x80\xA6");
  }

  TEST_CASE("case 48: require_handshake gates marked methods with -32005 until the handshake") {
    ServerConfig config = enabled_auth();
    config.require_handshake = true;
    Fixture f(config);
    MethodOptions options;
    options.requires_handshake = true;
    f.server.methods().add("gated.sub", {required("x", ParamType::integer)},
                           [](const Request&, Reply r) { r.ok("1"); }, options);
    f.call(R"({"jsonrpc":"2.0","id":1,"method":"session.auth","params":{"token":"secret"}})");
    auto early = f.call(R"({"jsonrpc":"2.0","id":2,"method":"gated.sub"})");
    CHECK(error_code(early) == -32005);
    CHECK(error_message(early) == "protocol handshake required: gated.sub needs server.handshake");
    // A failed handshake does not negotiate.
    f.call(R"({"jsonrpc":"2.0","id":3,"method":"server.handshake","params":{"protocol_version":"2"}})");
    CHECK(error_code(f.call(R"({"jsonrpc":"2.0","id":4,"method":"gated.sub","params":{"x":1}})")) ==
          -32005);
    f.call(R"({"jsonrpc":"2.0","id":5,"method":"server.handshake","params":{"protocol_version":2}})");
    CHECK(f.call(R"({"jsonrpc":"2.0","id":6,"method":"gated.sub","params":{"x":1}})")["result"].GetInt() ==
          1);
    // Negotiation is per connection.
    Client other(f.server, f.executor);
    other.send(R"({"jsonrpc":"2.0","id":1,"method":"session.auth","params":{"token":"secret"}})");
    other.send(R"({"jsonrpc":"2.0","id":2,"method":"gated.sub","params":{"x":1}})");
    f.executor.run_until_idle();
    auto frames = other.sink->take_written();
    REQUIRE(frames.size() == 2);
    CHECK(error_code(parse_json(frames[1])) == -32005);
  }

  TEST_CASE("a handshake earlier in a batch counts for the members after it") {
    ServerConfig config = Fixture::disabled_auth();
    config.require_handshake = true;
    Fixture f(config);
    MethodOptions options;
    options.requires_handshake = true;
    f.server.methods().add("gated.sub", {}, [](const Request&, Reply r) { r.ok("1"); }, options);
    auto r = f.call(
        R"([{"jsonrpc":"2.0","id":1,"method":"gated.sub"},)"
        R"({"jsonrpc":"2.0","id":2,"method":"server.handshake","params":{"protocol_version":2}},)"
        R"({"jsonrpc":"2.0","id":3,"method":"gated.sub"}])");
    REQUIRE(r.IsArray());
    REQUIRE(r.Size() == 3);
    std::map<int, const json::Value*> by_id;
    for (const auto& entry : r.GetArray()) by_id[entry["id"].GetInt()] = &entry;
    CHECK(error_code(*by_id[1]) == -32005);
    CHECK((*by_id[2])["result"]["protocol_version"].GetInt() == 2);
    CHECK((*by_id[3])["result"].GetInt() == 1);
  }

  TEST_CASE("memory_namespace is echoed whenever it is given") {
    SUBCASE("daemon token") {
      Fixture f(enabled_auth());
      auto r = f.call(
          R"({"jsonrpc":"2.0","id":1,"method":"session.auth","params":{"token":"secret","memory_namespace":"ns-1"}})");
      CHECK(std::string(r["result"]["memory_namespace"].GetString()) == "ns-1");
      CHECK(*session::grants(f.client().connection->session()).memory_namespace == "ns-1");
      // Not given: not echoed, and the namespace already granted stays.
      auto again = f.call(R"({"jsonrpc":"2.0","id":2,"method":"session.auth","params":{"token":"secret"}})");
      CHECK_FALSE(again["result"].HasMember("memory_namespace"));
      CHECK(*session::grants(f.client().connection->session()).memory_namespace == "ns-1");
    }
    SUBCASE("bound agent") {
      Fixture f(enabled_auth());
      auto r = f.call(
          R"({"jsonrpc":"2.0","id":1,"method":"session.auth","params":{"token":"secret","agent_id":"a1","memory_namespace":""}})");
      CHECK(std::string(r["result"]["agent_id"].GetString()) == "a1");
      CHECK(std::string(r["result"]["memory_namespace"].GetString()).empty());
    }
    SUBCASE("host token") {
      Fixture f(enabled_auth());
      auto r = f.call(
          R"({"jsonrpc":"2.0","id":1,"method":"session.auth","params":{"host_token":"host-secret","memory_namespace":"shell"}})");
      CHECK(std::string(r["result"]["role"].GetString()) == "host");
      CHECK(std::string(r["result"]["memory_namespace"].GetString()) == "shell");
    }
    SUBCASE("auth disabled") {
      Fixture f;
      auto r = f.call(
          R"({"jsonrpc":"2.0","id":1,"method":"session.auth","params":{"memory_namespace":"ns-2"}})");
      CHECK_FALSE(r["result"]["auth_enabled"].GetBool());
      CHECK(std::string(r["result"]["memory_namespace"].GetString()) == "ns-2");
    }
    SUBCASE("a failed auth echoes nothing and records nothing") {
      Fixture f(enabled_auth());
      auto r = f.call(
          R"({"jsonrpc":"2.0","id":1,"method":"session.auth","params":{"token":"nope","memory_namespace":"ns"}})");
      CHECK(error_code(r) == -32603);
      CHECK_FALSE(session::grants(f.client().connection->session()).memory_namespace.has_value());
    }
  }

  TEST_CASE("agent_tokens_only: the daemon token authenticates but binds no agent") {
    session::AuthConfig auth = test_credentials();
    auth.agent_tokens_only = true;
    Fixture f(enabled_auth(), auth);
    const std::string refused = "auth failed: agent 'a1' needs its own agent token";
    auto r = f.call(
        R"({"jsonrpc":"2.0","id":1,"method":"session.auth","params":{"token":"secret","agent_id":"a1"}})");
    CHECK(error_code(r) == -32603);
    CHECK(error_message(r) == refused);
    // A failure changes nothing: not authenticated, no binding taken.
    CHECK_FALSE(f.client().connection->session().authenticated());
    CHECK_FALSE(f.sessions->agent_bindings().holder("a1").has_value());
    // A wrong token is still a token mismatch (the rule is only told to token holders).
    auto wrong = f.call(
        R"({"jsonrpc":"2.0","id":2,"method":"session.auth","params":{"token":"nope","agent_id":"a1"}})");
    CHECK(error_message(wrong) == "auth failed: token mismatch");
    // Without agent_id the daemon token still authenticates.
    auto plain = f.call(R"({"jsonrpc":"2.0","id":3,"method":"session.auth","params":{"token":"secret"}})");
    CHECK(plain["result"]["ok"].GetBool());
    CHECK_FALSE(plain["result"].HasMember("agent_id"));
    // Re-auth of an authenticated session with the daemon token cannot add a binding either.
    auto later = f.call(
        R"({"jsonrpc":"2.0","id":4,"method":"session.auth","params":{"token":"secret","agent_id":"a1"}})");
    CHECK(error_message(later) == refused);
    CHECK_FALSE(session::agent_id(f.client().connection->session()).has_value());
    // The host token does not vouch for an agent id.
    auto host = f.call(
        R"({"jsonrpc":"2.0","id":5,"method":"session.auth","params":{"host_token":"host-secret","agent_id":"a1"}})");
    CHECK(error_message(host) == refused);
    CHECK_FALSE(session::is_host(f.client().connection->session()));
    // An agent with its own token binds.
    auto own = f.call(
        R"({"jsonrpc":"2.0","id":6,"method":"session.auth","params":{"token":"special-token","agent_id":"special"}})");
    CHECK(std::string(own["result"]["agent_id"].GetString()) == "special");
    CHECK(*f.sessions->agent_bindings().holder("special") == f.client().connection->client_id());
  }

  TEST_CASE("agent_tokens_only has no effect while auth is disabled") {
    session::AuthConfig auth = test_credentials();
    auth.agent_tokens_only = true;
    Fixture f(Fixture::disabled_auth(), auth);
    auto r = f.call(R"({"jsonrpc":"2.0","id":1,"method":"session.auth","params":{"agent_id":"a1"}})");
    CHECK(std::string(r["result"]["agent_id"].GetString()) == "a1");
  }

  TEST_CASE("without agent_tokens_only the daemon token binds any agent id") {
    Fixture f(enabled_auth());
    CHECK_FALSE(f.sessions->auth().agent_tokens_only);
    auto r = f.call(
        R"({"jsonrpc":"2.0","id":1,"method":"session.auth","params":{"token":"secret","agent_id":"a1"}})");
    CHECK(std::string(r["result"]["agent_id"].GetString()) == "a1");
  }
}
