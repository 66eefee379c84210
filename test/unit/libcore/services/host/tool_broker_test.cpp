// The tool broker (PROTOCOL.md §6) with in-process connections: registration (both forms, per
// connection, bounded), tools.list, tools.unregister, tools.execute with cb-N ids, relaying
// results and errors, choosing among several holders, timeouts and the grace, host and invoker
// disconnects; acceptance cases 5, 12–15, 22, 23 and 47.
#include <thread>

#include "host_test_support.hpp"

using namespace car;
using namespace car::host;
using namespace car::test;
using namespace std::chrono_literals;

namespace {

// B answers a server→client request.
void answer(HostFixture& f, Peer& host, const std::string& id, const std::string& body) {
  host.client.send(R"({"jsonrpc":"2.0","id":")" + id + R"(",)" + body + "}");
  f.pump();
}

// The names in a tools.list result, in order.
std::vector<std::string> listed_names(const json::Value& reply) {
  std::vector<std::string> out;
  for (const auto& tool : reply["result"]["tools"].GetArray()) out.push_back(str(tool["name"]));
  return out;
}

// A config whose broker answers -32004 exactly at the advertised deadline.
HostConfig no_grace() {
  HostConfig config;
  config.tool_grace = 0ms;
  return config;
}

}  // namespace

TEST_SUITE("tool_broker") {
  TEST_CASE("register (alias form): names folded, per connection, freed on disconnect") {
    HostFixture f;
    Peer& a = f.peer();
    Peer& b = f.peer();
    auto r = f.call(b, "tools.register", R"({"tools":["echo","grep","echo"]})");
    REQUIRE(r["result"]["registered"].Size() == 2);
    CHECK(str(r["result"]["registered"][0]) == "echo");
    CHECK(str(r["result"]["registered"][1]) == "grep");
    CHECK(f.call(b, "tools.register", R"({"tools":["echo"]})")["result"]["registered"].Size() ==
          1);
    // Another connection may hold the same names: tools belong to their connection (case 47).
    auto shared = f.call(a, "tools.register", R"({"tools":["fresh","grep"]})");
    REQUIRE(shared["result"]["registered"].Size() == 2);
    CHECK(f.service->tools().hosts_of("grep").size() == 2);
    CHECK(f.service->tools().hosts_of("fresh") == std::vector<std::string>{a.id()});
    // The alias takes ToolDefinitions too, and keeps answering {registered:[...]}.
    auto defs = f.call(a, "tools.register",
                       R"({"tools":[{"name":"d","description":"x"},"e"]})");
    REQUIRE(defs["result"]["registered"].Size() == 2);
    CHECK(str(defs["result"]["registered"][0]) == "d");
    CHECK(f.call(a, "tools.register", R"({"tools":[]})")["result"]["registered"].Size() == 0);
    auto not_string = f.call(a, "tools.register", R"({"tools":[1]})");
    CHECK(error_code(not_string) == -32602);
    CHECK(error_message(not_string) ==
          "invalid params: tools[0] must be a string or a ToolDefinition object");
    auto empty = f.call(a, "tools.register", R"({"tools":["ok",""]})");
    CHECK(error_message(empty) == "invalid params: tools[1] must be a non-empty string");
    CHECK(f.service->tools().hosts_of("ok").empty());  // nothing registered
    CHECK(error_message(f.call(a, "tools.register", "{}")) == "invalid params: tools is required");
    CHECK(error_message(f.call(a, "tools.register", R"({"tools":null})")) ==
          "invalid params: tools is required");  // null reads as absent
    CHECK(error_message(f.call(a, "tools.register", R"({"tools":"x"})")) ==
          "invalid params: tools must be an array");
    // B's disconnect frees B's tools only.
    f.disconnect(b);
    CHECK(f.service->tools().hosts_of("echo").empty());
    CHECK(f.service->tools().hosts_of("grep") == std::vector<std::string>{a.id()});
  }

  TEST_CASE("case 47: array form, tools.list, tools.unregister, several holders and client_id") {
    HostFixture f;
    Peer& a = f.peer();
    Peer& b = f.peer();
    auto r = f.call(b, "tools.register",
                    R"([{"name":"echo","description":"d","parameters":{"type":"object"}},"ping"])");
    REQUIRE(r["result"].IsInt());
    CHECK(r["result"].GetInt() == 2);
    auto list = f.call(b, "tools.list");
    CHECK(list["result"]["count"].GetInt() == 2);
    CHECK(listed_names(list) == std::vector<std::string>{"echo", "ping"});
    const auto& echo = list["result"]["tools"][0];
    CHECK(str(echo["description"]) == "d");
    CHECK(str(echo["parameters"]["type"]) == "object");
    CHECK(echo["idempotent"].IsFalse());
    const auto& ping = list["result"]["tools"][1];
    CHECK(str(ping["description"]).empty());
    CHECK(ping["parameters"].IsObject());
    CHECK(ping["parameters"].ObjectEmpty());
    CHECK(ping["idempotent"].IsFalse());

    auto removed = f.call(b, "tools.unregister", R"({"name":"ping"})");
    CHECK(str(removed["result"]["unregistered"]) == "ping");
    CHECK(removed["result"]["removed"].GetInt() == 1);
    auto again = f.call(b, "tools.unregister", R"({"name":"ping"})");
    CHECK(str(again["result"]["unregistered"]) == "ping");
    CHECK(again["result"]["removed"].GetInt() == 0);
    CHECK(listed_names(f.call(b, "tools.list")) == std::vector<std::string>{"echo"});

    // A second connection registers echo too: accepted.
    Peer& c = f.peer();
    CHECK(f.call(c, "tools.register", R"(["echo"])")["result"].GetInt() == 1);
    auto several = f.call(a, "tools.invoke", R"({"tool":"echo"})");
    CHECK(error_code(several) == -32602);
    CHECK(error_message(several) ==
          "tool 'echo' is registered by several sessions; pass client_id");
    CHECK(f.take(b, "tools.execute").empty());
    CHECK(f.take(c, "tools.execute").empty());

    // client_id picks the holder.
    long long to_c = f.send(a, "tools.invoke", R"({"tool":"echo","client_id":")" + c.id() + "\"}");
    auto execs = f.take(c, "tools.execute");
    REQUIRE(execs.size() == 1);
    CHECK(f.take(b, "tools.execute").empty());
    answer(f, c, str(execs[0]["id"]), R"("result":"from c")");
    auto reply = f.response(a, to_c);
    REQUIRE(reply.has_value());
    CHECK(str((*reply)["result"]) == "from c");
    long long to_b = f.send(a, "tools.invoke", R"({"tool":"echo","client_id":")" + b.id() + "\"}");
    auto execs_b = f.take(b, "tools.execute");
    REQUIRE(execs_b.size() == 1);
    answer(f, b, str(execs_b[0]["id"]), R"("result":"from b")");
    auto reply_b = f.response(a, to_b);
    REQUIRE(reply_b.has_value());
    CHECK(str((*reply_b)["result"]) == "from b");

    // A client_id that does not hold the tool is refused, as is an unknown tool.
    auto not_holder =
        f.call(a, "tools.invoke", R"({"tool":"echo","client_id":")" + a.id() + "\"}");
    CHECK(error_code(not_holder) == -32602);
    CHECK(error_message(not_holder) ==
          "tool 'echo' is not registered by session '" + a.id() + "'");
    auto unknown = f.call(a, "tools.invoke", R"({"tool":"nope","client_id":")" + b.id() + "\"}");
    CHECK(error_message(unknown) == "unknown tool 'nope'");
    CHECK(error_message(f.call(a, "tools.invoke", R"({"tool":"echo","client_id":""})")) ==
          "invalid params: client_id must be a non-empty string");

    // Once only one holder is left, the name needs no client_id again.
    f.disconnect(c);
    long long single = f.send(a, "tools.invoke", R"({"tool":"echo"})");
    auto execs_single = f.take(b, "tools.execute");
    REQUIRE(execs_single.size() == 1);
    answer(f, b, str(execs_single[0]["id"]), R"("result":1)");
    REQUIRE(f.response(a, single).has_value());
  }

  TEST_CASE("register: re-registering on the same connection replaces the definition") {
    HostFixture f;
    Peer& b = f.peer();
    CHECK(f.call(b, "tools.register", R"([{"name":"t","description":"old","parameters":{"a":1}}])")
              ["result"].GetInt() == 1);
    // Repeated in one call: the last definition wins and the name counts once.
    CHECK(f.call(b, "tools.register",
                 R"([{"name":"t","description":"mid"},{"name":"t","description":"new"}])")
              ["result"].GetInt() == 1);
    auto list = f.call(b, "tools.list", "{}");
    REQUIRE(list["result"]["count"].GetInt() == 1);
    CHECK(str(list["result"]["tools"][0]["description"]) == "new");
    CHECK(list["result"]["tools"][0]["parameters"].ObjectEmpty());  // not merged with the old
    // A bare name replaces a definition with an empty one; null members count as absent.
    CHECK(f.call(b, "tools.register", R"([{"name":"t","description":null,"parameters":null}])")
              ["result"].GetInt() == 1);
    auto bare = f.call(b, "tools.list");
    CHECK(str(bare["result"]["tools"][0]["description"]).empty());
    CHECK(f.service->tools().hosts_of("t") == std::vector<std::string>{b.id()});
  }

  TEST_CASE("register: a bad entry is -32602 naming it, and nothing is registered") {
    HostFixture f;
    Peer& b = f.peer();
    struct Case {
      const char* params;
      const char* message;
    };
    for (const auto& c : {
             Case{R"(["ok",1])",
                  "invalid params: params[1] must be a string or a ToolDefinition object"},
             Case{R"(["ok",""])", "invalid params: params[1] must be a non-empty string"},
             Case{R"(["ok",{}])", "invalid params: params[1].name is required"},
             Case{R"(["ok",{"name":null}])", "invalid params: params[1].name is required"},
             Case{R"([{"name":""}])", "invalid params: params[0].name must be a non-empty string"},
             Case{R"([{"name":7}])", "invalid params: params[0].name must be a non-empty string"},
             Case{R"([{"name":"x","description":1}])",
                  "invalid params: params[0].description must be a string"},
             Case{R"([{"name":"x","parameters":[]}])",
                  "invalid params: params[0].parameters must be an object"},
             Case{R"({"tools":[{"name":"x","parameters":"s"}]})",
                  "invalid params: tools[0].parameters must be an object"},
         }) {
      auto r = f.call(b, "tools.register", c.params);
      CHECK_MESSAGE(error_code(r) == -32602, c.params);
      CHECK_MESSAGE(error_message(r) == c.message, c.params);
    }
    CHECK(f.call(b, "tools.list")["result"]["count"].GetInt() == 0);
    CHECK(f.service->tools().hosts_of("ok").empty());
    // An empty array registers nothing and says so.
    CHECK(f.call(b, "tools.register", "[]")["result"].GetInt() == 0);
  }

  TEST_CASE("tools.list and tools.unregister see only the caller's tools") {
    HostFixture f;
    Peer& a = f.peer();
    Peer& b = f.peer();
    f.call(b, "tools.register", R"(["zeta","alpha","mid"])");
    f.call(a, "tools.register", R"(["alpha"])");
    CHECK(listed_names(f.call(b, "tools.list")) ==
          std::vector<std::string>{"alpha", "mid", "zeta"});
    CHECK(listed_names(f.call(a, "tools.list")) == std::vector<std::string>{"alpha"});
    // No params at all is the same as {}.
    b.client.send(R"({"jsonrpc":"2.0","id":900,"method":"tools.list"})");
    auto bare = f.response(b, 900);
    REQUIRE(bare.has_value());
    CHECK((*bare)["result"]["count"].GetInt() == 3);
    // Only tools.register takes array params.
    auto array = f.call(b, "tools.list", "[]");
    CHECK(error_message(array) == "invalid params: params must be an object");
    // B's unregister of its alpha leaves A's alone; A's tool never was B's to remove.
    CHECK(f.call(b, "tools.unregister", R"({"name":"alpha"})")["result"]["removed"].GetInt() == 1);
    CHECK(f.service->tools().hosts_of("alpha") == std::vector<std::string>{a.id()});
    CHECK(f.call(b, "tools.unregister", R"({"name":"alpha"})")["result"]["removed"].GetInt() == 0);
    CHECK(f.call(a, "tools.unregister", R"({"name":"zeta"})")["result"]["removed"].GetInt() == 0);
    CHECK(f.service->tools().hosts_of("zeta") == std::vector<std::string>{b.id()});
    auto missing = f.call(b, "tools.unregister", "{}");
    CHECK(error_code(missing) == -32602);
    CHECK(error_message(missing) == "invalid params: name is required");
    CHECK(error_code(f.call(b, "tools.unregister", R"({"name":3})")) == -32602);
    // Unregistering every tool leaves an empty list (and the name unknown to invokers).
    f.call(b, "tools.unregister", R"({"name":"mid"})");
    f.call(b, "tools.unregister", R"({"name":"zeta"})");
    CHECK(f.call(b, "tools.list")["result"]["count"].GetInt() == 0);
    CHECK(error_message(f.call(a, "tools.invoke", R"({"tool":"mid"})")) == "unknown tool 'mid'");
  }

  TEST_CASE("unregistering a tool does not disturb a call already sent to its host") {
    HostFixture f;
    Peer& a = f.peer();
    Peer& b = f.peer();
    f.call(b, "tools.register", R"(["echo"])");
    long long inv = f.send(a, "tools.invoke", R"({"tool":"echo"})");
    auto execs = f.take(b, "tools.execute");
    REQUIRE(execs.size() == 1);
    CHECK(f.call(b, "tools.unregister", R"({"name":"echo"})")["result"]["removed"].GetInt() == 1);
    answer(f, b, "cb-1", R"("result":"still")");
    auto reply = f.response(a, inv);
    REQUIRE(reply.has_value());
    CHECK(str((*reply)["result"]) == "still");
  }

  TEST_CASE("a connection's tool table is bounded; a registration past it is refused whole") {
    HostFixture f;
    Peer& b = f.peer();
    constexpr std::size_t max = ToolBroker::max_tools_per_connection;
    std::string all = "[";
    for (std::size_t i = 0; i < max; ++i) all += (i ? ",\"t" : "\"t") + std::to_string(i) + "\"";
    all += "]";
    CHECK(f.call(b, "tools.register", all)["result"].GetInt() == static_cast<int>(max));
    auto full = f.call(b, "tools.register", R"(["extra","t0"])");
    CHECK(error_code(full) == -32602);
    CHECK(error_message(full) == "too many tools: a connection may hold at most 1024");
    CHECK(f.service->tools().hosts_of("extra").empty());
    // Replacing a tool it holds still works when full; so does making room first.
    CHECK(f.call(b, "tools.register", R"([{"name":"t0","description":"new"}])")["result"]
              .GetInt() == 1);
    f.call(b, "tools.unregister", R"({"name":"t1"})");
    CHECK(f.call(b, "tools.register", R"(["extra"])")["result"].GetInt() == 1);
    CHECK(f.call(b, "tools.list")["result"]["count"].GetInt() == static_cast<int>(max));
    // Another connection has a table of its own.
    Peer& c = f.peer();
    CHECK(f.call(c, "tools.register", R"(["extra"])")["result"].GetInt() == 1);
  }

  TEST_CASE("a connection's tool definitions are bounded in bytes") {
    HostFixture f;
    Peer& b = f.peer();
    const std::size_t max = ToolBroker::max_definition_bytes_per_connection;
    std::string half(max / 2, 'x');
    CHECK(f.call(b, "tools.register", R"([{"name":"a","description":")" + half + R"("}])")
              ["result"].GetInt() == 1);
    auto big = f.call(b, "tools.register", R"([{"name":"b","description":")" + half + R"("}])");
    CHECK(error_code(big) == -32602);
    CHECK(error_message(big) ==
          "tool definitions too large: a connection may hold at most 4194304 bytes");
    CHECK(f.service->tools().hosts_of("b").empty());
    // Replacing `a` frees its bytes first, so a same-sized replacement fits.
    CHECK(f.call(b, "tools.register", R"([{"name":"a","description":")" + half + R"("}])")
              ["result"].GetInt() == 1);
    f.call(b, "tools.unregister", R"({"name":"a"})");
    CHECK(f.call(b, "tools.register", R"([{"name":"b","description":")" + half + R"("}])")
              ["result"].GetInt() == 1);
  }

  TEST_CASE("a registration that lands after its connection's teardown is undone") {
    HostFixture f;
    Peer& b = f.peer();
    auto connection = b.client.connection;
    f.disconnect(b);  // its tool_registrations step has run
    REQUIRE(connection->closed());
    auto names = f.service->tools().register_tools(*connection, {ToolDefinition{"late", "", "{}"}});
    REQUIRE(names.ok());
    CHECK(names.value() == std::vector<std::string>{"late"});
    CHECK(f.service->tools().hosts_of("late").empty());
    CHECK(f.service->tools().tools_of(connection->client_id()).empty());
  }

  TEST_CASE("case 12: tools.execute with cb-1 then cb-2, results relayed, unknown ids ignored") {
    HostFixture f;
    Peer& a = f.peer();
    Peer& b = f.peer();
    f.call(b, "tools.register", R"({"tools":["echo"]})");
    long long inv = f.send(a, "tools.invoke", R"({"tool":"echo","parameters":{"text":"hi"}})");
    auto execs = f.take(b, "tools.execute");
    REQUIRE(execs.size() == 1);
    const auto& e = execs[0];
    CHECK(str(e["id"]) == "cb-1");
    const auto& p = e["params"];
    CHECK(str(p["request_id"]) == "cb-1");
    CHECK(str(p["tool"]) == "echo");
    CHECK(str(p["parameters"]["text"]) == "hi");
    CHECK(p["attempt"].GetInt() == 1);
    CHECK(p["timeout_ms"].GetInt64() == 300000);
    CHECK(str(p["action_id"]).size() == 36);
    CHECK(f.service->tools().running() == 1);

    answer(f, b, "cb-77", R"("result":{"bogus":true})");  // unknown id: ignored
    CHECK_FALSE(f.response(a, inv).has_value());
    answer(f, b, "cb-1", R"("result":{"echo":"hi"})");
    auto reply = f.response(a, inv);
    REQUIRE(reply.has_value());
    CHECK(str((*reply)["result"]["echo"]) == "hi");
    CHECK(f.service->tools().running() == 0);

    // The next call is cb-2; its error comes back with code, message and data kept.
    long long inv2 = f.send(a, "tools.invoke", R"({"tool":"echo"})");
    auto execs2 = f.take(b, "tools.execute");
    REQUIRE(execs2.size() == 1);
    CHECK(str(execs2[0]["id"]) == "cb-2");
    CHECK(execs2[0]["params"]["parameters"].IsObject());
    answer(f, b, "cb-2", R"("error":{"code":-32050,"message":"tool broke","data":{"x":1}})");
    auto err = f.response(a, inv2);
    REQUIRE(err.has_value());
    CHECK(error_code(*err) == -32050);
    CHECK(error_message(*err) == "tool broke");
    CHECK((*err)["error"]["data"]["x"].GetInt() == 1);
    // A late duplicate is ignored.
    answer(f, b, "cb-2", R"("result":1)");
    CHECK(a.inbox.empty());
  }

  TEST_CASE("unknown tool is -32602") {
    HostFixture f;
    Peer& a = f.peer();
    auto r = f.call(a, "tools.invoke", R"({"tool":"nope"})");
    CHECK(error_code(r) == -32602);
    CHECK(error_message(r) == "unknown tool 'nope'");
  }

  TEST_CASE("case 13: no answer ⇒ -32004 after the deadline plus the 5 s grace; tools.cancel") {
    HostFixture f;  // the default grace
    Peer& a = f.peer();
    Peer& b = f.peer();
    f.call(b, "tools.register", R"({"tools":["slow"]})");
    long long inv = f.send(a, "tools.invoke", R"({"tool":"slow","timeout_ms":200})");
    auto execs = f.take(b, "tools.execute");
    REQUIRE(execs.size() == 1);
    CHECK(execs[0]["params"]["timeout_ms"].GetInt() == 200);  // the grace is not advertised
    std::string action = str(execs[0]["params"]["action_id"]);
    f.executor.advance(201ms);
    CHECK_FALSE(f.response(a, inv).has_value());  // the advertised deadline alone is not enough
    CHECK(f.take(b, "tools.cancel").empty());
    f.executor.advance(4998ms);  // 5199 ms
    CHECK_FALSE(f.response(a, inv).has_value());
    f.executor.advance(2ms);
    auto reply = f.response(a, inv);
    REQUIRE(reply.has_value());
    CHECK(error_code(*reply) == -32004);
    CHECK(error_message(*reply) == "tool call timed out");
    auto cancels = f.take(b, "tools.cancel");
    REQUIRE(cancels.size() == 1);
    CHECK_FALSE(cancels[0].HasMember("id"));  // a notification
    CHECK(str(cancels[0]["params"]["request_id"]) == "cb-1");
    CHECK(str(cancels[0]["params"]["action_id"]) == action);
    CHECK(str(cancels[0]["params"]["reason"]) == "timeout");
    // A late reply is ignored; nothing else fires.
    answer(f, b, "cb-1", R"("result":1)");
    f.executor.advance(10000ms);
    f.pump();
    CHECK(a.inbox.empty());
    CHECK(b.inbox.empty());
  }

  TEST_CASE("case 13: a host that stops itself at timeout_ms is heard within the grace") {
    HostConfig config;
    config.tool_grace = 300ms;
    HostFixture f(config);
    CHECK(f.service->tools().grace() == 300ms);
    Peer& a = f.peer();
    Peer& b = f.peer();
    f.call(b, "tools.register", R"(["slow"])");
    long long inv = f.send(a, "tools.invoke", R"({"tool":"slow","timeout_ms":200})");
    REQUIRE(f.take(b, "tools.execute").size() == 1);
    f.executor.advance(250ms);  // past timeout_ms, inside the grace: the host's own answer wins
    answer(f, b, "cb-1", R"("error":{"code":-32050,"message":"gave up after 200 ms"})");
    auto reply = f.response(a, inv);
    REQUIRE(reply.has_value());
    CHECK(error_code(*reply) == -32050);
    CHECK(error_message(*reply) == "gave up after 200 ms");
    f.executor.advance(1000ms);
    f.pump();
    CHECK(b.inbox.empty());  // no tools.cancel: nobody timed out
    CHECK(f.service->tools().running() == 0);
    // Without an answer the small grace ends the call at 200 + 300 ms.
    long long silent = f.send(a, "tools.invoke", R"({"tool":"slow","timeout_ms":200})");
    REQUIRE(f.take(b, "tools.execute").size() == 1);
    f.executor.advance(499ms);
    CHECK_FALSE(f.response(a, silent).has_value());
    f.executor.advance(2ms);
    auto timed_out = f.response(a, silent);
    REQUIRE(timed_out.has_value());
    CHECK(error_code(*timed_out) == -32004);
    CHECK(f.take(b, "tools.cancel").size() == 1);
  }

  TEST_CASE("a zero grace answers -32004 at the advertised deadline") {
    HostFixture f(no_grace());
    Peer& a = f.peer();
    Peer& b = f.peer();
    f.call(b, "tools.register", R"(["slow"])");
    long long inv = f.send(a, "tools.invoke", R"({"tool":"slow","timeout_ms":200})");
    REQUIRE(f.take(b, "tools.execute").size() == 1);
    f.executor.advance(199ms);
    CHECK_FALSE(f.response(a, inv).has_value());
    f.executor.advance(2ms);
    auto reply = f.response(a, inv);
    REQUIRE(reply.has_value());
    CHECK(error_code(*reply) == -32004);
    CHECK(str(f.take(b, "tools.cancel").at(0)["params"]["reason"]) == "timeout");
  }

  TEST_CASE("the default tool timeout comes from the config") {
    HostConfig config;
    config.tool_timeout = 1500ms;
    config.tool_grace = 100ms;
    HostFixture f(config);
    Peer& a = f.peer();
    Peer& b = f.peer();
    f.call(b, "tools.register", R"({"tools":["t"]})");
    long long inv = f.send(a, "tools.invoke", R"({"tool":"t"})");
    CHECK(f.take(b, "tools.execute")[0]["params"]["timeout_ms"].GetInt() == 1500);
    f.executor.advance(1599ms);
    CHECK_FALSE(f.response(a, inv).has_value());
    f.executor.advance(2ms);
    auto reply = f.response(a, inv);
    REQUIRE(reply.has_value());
    CHECK(error_code(*reply) == -32004);
  }

  TEST_CASE("case 14: the host disconnects ⇒ -32603 tool host disconnected") {
    HostFixture f;
    Peer& a = f.peer();
    Peer& b = f.peer();
    f.call(b, "tools.register", R"({"tools":["echo"]})");
    long long i1 = f.send(a, "tools.invoke", R"({"tool":"echo"})");
    long long i2 = f.send(a, "tools.invoke", R"({"tool":"echo"})");
    f.pump();
    f.disconnect(b);
    for (long long id : {i1, i2}) {
      auto reply = f.response(a, id);
      REQUIRE(reply.has_value());
      CHECK(error_code(*reply) == -32603);
      CHECK(error_message(*reply) == "tool host disconnected");
    }
    CHECK(f.service->tools().running() == 0);
    // Its tools are gone with it.
    CHECK(error_message(f.call(a, "tools.invoke", R"({"tool":"echo"})")) == "unknown tool 'echo'");
    // Nothing fires at the old deadline.
    f.executor.advance(400000ms);
    f.pump();
    CHECK(a.inbox.empty());
  }

  TEST_CASE("case 15: the invoker disconnects ⇒ tools.cancel (caller_disconnected)") {
    HostFixture f;
    Peer& a = f.peer();
    Peer& b = f.peer();
    f.call(b, "tools.register", R"({"tools":["echo"]})");
    f.send(a, "tools.invoke", R"({"tool":"echo"})");
    auto execs = f.take(b, "tools.execute");
    REQUIRE(execs.size() == 1);
    f.disconnect(a);
    auto cancels = f.take(b, "tools.cancel");
    REQUIRE(cancels.size() == 1);
    CHECK(str(cancels[0]["params"]["reason"]) == "caller_disconnected");
    CHECK(str(cancels[0]["params"]["request_id"]) == "cb-1");
    CHECK(str(cancels[0]["params"]["action_id"]) == str(execs[0]["params"]["action_id"]));
    CHECK(f.service->tools().running() == 0);
    // B's late answer and the old deadline change nothing; B is still fine.
    answer(f, b, "cb-1", R"("result":1)");
    f.executor.advance(400000ms);
    f.pump();
    CHECK(b.inbox.empty());
    CHECK_FALSE(b.client.connection->closed());
  }

  TEST_CASE("a connection may invoke its own tool; closing it cancels cleanly") {
    HostFixture f;
    Peer& a = f.peer();
    f.call(a, "tools.register", R"({"tools":["self"]})");
    long long inv = f.send(a, "tools.invoke", R"({"tool":"self"})");
    auto execs = f.take(a, "tools.execute");
    REQUIRE(execs.size() == 1);
    answer(f, a, "cb-1", R"("result":"me")");
    auto reply = f.response(a, inv);
    REQUIRE(reply.has_value());
    CHECK(str((*reply)["result"]) == "me");
    f.send(a, "tools.invoke", R"({"tool":"self"})");
    f.pump();
    f.disconnect(a);
    CHECK(f.service->tools().running() == 0);
  }

  TEST_CASE("case 22: a gated tools.invoke waits for approval; approve runs, deny refuses") {
    HostConfig config;
    config.gate.methods = {"tools.invoke"};
    config.gate.timeout = 1000ms;
    HostFixture f(config);
    Peer& a = f.peer();
    Peer& b = f.peer();
    Peer& h = f.peer();
    f.call(h, "host.subscribe");
    f.call(b, "tools.register", R"({"tools":["echo"]})");

    long long inv = f.send(a, "tools.invoke", R"({"tool":"echo"})");
    auto requested = f.events(h, "approval.requested");
    REQUIRE(requested.size() == 1);
    CHECK(str(requested[0]["params"]["payload"]["action"]) == "ws.method:tools.invoke");
    CHECK(f.take(b, "tools.execute").empty());
    std::string approval = str(requested[0]["params"]["payload"]["id"]);
    f.call(b, "host.resolve_approval", R"({"approval_id":")" + approval + R"(","approved":true})");
    auto execs = f.take(b, "tools.execute");
    REQUIRE(execs.size() == 1);
    answer(f, b, str(execs[0]["id"]), R"("result":"ran")");
    auto reply = f.response(a, inv);
    REQUIRE(reply.has_value());
    CHECK(str((*reply)["result"]) == "ran");

    long long denied = f.send(a, "tools.invoke", R"({"tool":"echo"})");
    auto req2 = f.events(h, "approval.requested");
    REQUIRE(req2.size() == 1);
    f.call(b, "host.resolve_approval",
           R"({"approval_id":")" + str(req2[0]["params"]["payload"]["id"]) +
               R"(","resolution":"deny"})");
    auto refused = f.response(a, denied);
    REQUIRE(refused.has_value());
    CHECK(error_code(*refused) == -32003);
    CHECK(error_message(*refused) == "approval denied");

    long long late = f.send(a, "tools.invoke", R"({"tool":"echo"})");
    f.pump();
    CHECK(f.call(a, "host.agents")["result"].IsArray());  // still serving meanwhile
    f.executor.advance(1001ms);
    auto timed_out = f.response(a, late);
    REQUIRE(timed_out.has_value());
    CHECK(error_message(*timed_out) == "approval timed out");
    auto listed = f.call(h, "host.approvals");
    REQUIRE(listed["result"]["approvals"].Size() == 3);
    CHECK(str(listed["result"]["approvals"][2]["status"]) == "pending");
    CHECK_FALSE(a.client.connection->closed());
    CHECK(f.take(b, "tools.execute").empty());
  }

  TEST_CASE("case 23: with approvals disabled the same call runs at once") {
    HostConfig config;
    config.gate.enabled = false;
    config.gate.methods = {"tools.invoke"};
    HostFixture f(config);
    Peer& a = f.peer();
    Peer& b = f.peer();
    f.call(b, "tools.register", R"({"tools":["echo"]})");
    long long inv = f.send(a, "tools.invoke", R"({"tool":"echo"})");
    auto execs = f.take(b, "tools.execute");
    REQUIRE(execs.size() == 1);
    answer(f, b, "cb-1", R"("result":null)");
    auto reply = f.response(a, inv);
    REQUIRE(reply.has_value());
    CHECK((*reply)["result"].IsNull());
    CHECK(f.service->state().approvals().empty());
  }

  TEST_CASE("case 5: two tool invocations on one connection complete independently") {
    HostFixture f;
    Peer& a = f.peer();
    Peer& b = f.peer();
    f.call(b, "tools.register", R"({"tools":["echo"]})");
    long long i1 = f.send(a, "tools.invoke", R"({"tool":"echo","parameters":{"n":1}})");
    long long i2 = f.send(a, "tools.invoke", R"({"tool":"echo","parameters":{"n":2}})");
    auto execs = f.take(b, "tools.execute");
    REQUIRE(execs.size() == 2);
    answer(f, b, "cb-2", R"("result":2)");
    auto r2 = f.response(a, i2);
    REQUIRE(r2.has_value());
    CHECK((*r2)["result"].GetInt() == 2);
    CHECK_FALSE(f.response(a, i1).has_value());
    answer(f, b, "cb-1", R"("result":1)");
    auto r1 = f.response(a, i1);
    REQUIRE(r1.has_value());
    CHECK((*r1)["result"].GetInt() == 1);
  }

  TEST_CASE("a tool host answering from another thread while deadlines run on the loop") {
    HostFixture f(no_grace());  // the deadlines fire while the answers arrive
    Peer& a = f.peer();
    Peer& b = f.peer();
    f.call(b, "tools.register", R"({"tools":["echo"]})");
    std::vector<long long> ids;
    for (int i = 0; i < 32; ++i) {
      ids.push_back(f.send(a, "tools.invoke", R"({"tool":"echo","timeout_ms":50})"));
    }
    auto execs = f.take(b, "tools.execute");
    REQUIRE(execs.size() == 32);
    std::vector<std::string> call_ids;
    for (auto& e : execs) call_ids.push_back(str(e["id"]));
    std::atomic<bool> started{false};
    std::thread host([&] {
      started = true;
      for (const auto& id : call_ids) {
        b.client.send(R"({"jsonrpc":"2.0","id":")" + id + R"(","result":"ok"})");
      }
    });
    while (!started) std::this_thread::yield();
    // Meanwhile the loop fires deadlines: every call ends exactly once, one way or the other.
    for (int i = 0; i < 60; ++i) f.executor.advance(1ms);
    host.join();
    f.pump();
    int results = 0, timeouts = 0;
    for (long long id : ids) {
      auto r = f.response(a, id);
      REQUIRE(r.has_value());
      if (r->HasMember("result")) ++results;
      if (r->HasMember("error") && error_code(*r) == -32004) ++timeouts;
    }
    CHECK(results + timeouts == 32);
    CHECK(a.inbox.empty());
    CHECK(f.service->tools().running() == 0);
    // Every timed-out call, and only those, told the host to cancel.
    CHECK(f.take(b, "tools.cancel").size() == static_cast<std::size_t>(timeouts));
  }
}
