// The tool broker (PROTOCOL.md §6) with in-process connections: registration, tools.execute with cb-N
// ids, relaying results and errors, timeouts, host and invoker disconnects; acceptance cases
// 12–15, 22 and 23.
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

}  // namespace

TEST_SUITE("tool_broker") {
  TEST_CASE("register: all or nothing, own re-registration is a no-op, freed on disconnect") {
    HostFixture f;
    Peer& a = f.peer();
    Peer& b = f.peer();
    auto r = f.call(b, "tools.register", R"({"tools":["echo","grep","echo"]})");
    REQUIRE(r["result"]["registered"].Size() == 2);
    CHECK(str(r["result"]["registered"][0]) == "echo");
    CHECK(f.call(b, "tools.register", R"({"tools":["echo"]})")["result"]["registered"].Size() ==
          1);
    auto refused = f.call(a, "tools.register", R"({"tools":["fresh","grep"]})");
    CHECK(error_code(refused) == -32602);
    CHECK(error_message(refused) == "tool 'grep' is registered by another session");
    CHECK_FALSE(f.service->tools().host_of("fresh").has_value());  // nothing registered
    CHECK(error_code(f.call(a, "tools.register", R"({"tools":[1]})")) == -32602);
    CHECK(error_code(f.call(a, "tools.register", R"({"tools":[""]})")) == -32602);
    CHECK(error_code(f.call(a, "tools.register", "{}")) == -32602);
    f.disconnect(b);
    CHECK_FALSE(f.service->tools().host_of("echo").has_value());
    CHECK(f.call(a, "tools.register", R"({"tools":["grep"]})").HasMember("result"));
    CHECK(*f.service->tools().host_of("grep") == a.id());
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

  TEST_CASE("case 13: no answer ⇒ -32004 for the invoker, tools.cancel (timeout) for the host") {
    HostFixture f;
    Peer& a = f.peer();
    Peer& b = f.peer();
    f.call(b, "tools.register", R"({"tools":["slow"]})");
    long long inv = f.send(a, "tools.invoke", R"({"tool":"slow","timeout_ms":200})");
    auto execs = f.take(b, "tools.execute");
    REQUIRE(execs.size() == 1);
    CHECK(execs[0]["params"]["timeout_ms"].GetInt() == 200);
    std::string action = str(execs[0]["params"]["action_id"]);
    f.executor.advance(199ms);
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
    f.executor.advance(5000ms);
    f.pump();
    CHECK(a.inbox.empty());
    CHECK(b.inbox.empty());
  }

  TEST_CASE("the default tool timeout comes from the config") {
    HostConfig config;
    config.tool_timeout = 1500ms;
    HostFixture f(config);
    Peer& a = f.peer();
    Peer& b = f.peer();
    f.call(b, "tools.register", R"({"tools":["t"]})");
    long long inv = f.send(a, "tools.invoke", R"({"tool":"t"})");
    CHECK(f.take(b, "tools.execute")[0]["params"]["timeout_ms"].GetInt() == 1500);
    f.executor.advance(1499ms);
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
    HostFixture f;
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
