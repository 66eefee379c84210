// The high-risk approval gate (PROTOCOL.md §5.1) on a live in-process server with a fake clock:
// approve, deny, timeout, other requests served meanwhile, waits of a closed connection, the
// params preview.
#include <thread>

#include "host_test_support.hpp"

using namespace car;
using namespace car::host;
using namespace car::test;
using namespace std::chrono_literals;

namespace {

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    auto b = static_cast<unsigned char>(s[i]);
    std::size_t len = b < 0x80           ? 1
                      : (b >> 5) == 0x6  ? 2
                      : (b >> 4) == 0xE  ? 3
                      : (b >> 3) == 0x1E ? 4
                                         : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (std::size_t k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

HostConfig gated(std::vector<std::string> methods, std::chrono::milliseconds timeout = 60000ms) {
  HostConfig config;
  config.gate.methods = std::move(methods);
  config.gate.timeout = timeout;
  return config;
}

void add_danger(Server& server, int* runs) {
  server.methods().add("danger.op", {}, [runs](const Request&, Reply reply) {
    ++*runs;
    reply.ok(R"({"done":true})");
  });
}

void resolve(HostFixture& f, Peer& by, const std::string& id, bool approved) {
  f.call(by, "host.resolve_approval",
         R"({"approval_id":")" + id + R"(","approved":)" + (approved ? "true" : "false") + "}");
}

std::string approval_id_of(const json::Document& event) {
  return str(event["params"]["payload"]["id"]);
}

}  // namespace

TEST_SUITE("approval_gate") {
  TEST_CASE("configuration: defaults, replacement, disabled") {
    auto defaults = default_gated_methods();
    CHECK(defaults.size() == 6);
    ManualExecutor ex;
    auto state = std::make_shared<HostState>();
    ApprovalGate gate(state, ex, GateConfig{});
    for (const char* m : {"automation.run_applescript", "automation.shortcuts.run",
                          "automation.run_powershell", "messages.send", "mail.send",
                          "vision.ocr"}) {
      CAPTURE(m);
      CHECK(gate.gates(m));
    }
    CHECK_FALSE(gate.gates("tools.invoke"));
    CHECK(gate.config().timeout == 60000ms);
    GateConfig custom;
    custom.methods = {"tools.invoke"};
    CHECK(ApprovalGate(state, ex, custom).gates("tools.invoke"));
    CHECK_FALSE(ApprovalGate(state, ex, custom).gates("mail.send"));
    custom.enabled = false;
    CHECK_FALSE(ApprovalGate(state, ex, custom).gates("tools.invoke"));
    // Disabled: install_host_services installs no gate at all.
    ManualExecutor ex2;
    Server server(ex2, Fixture::disabled_auth());
    HostConfig off;
    off.gate.enabled = false;
    install_host_services(server, off);
    CHECK(server.method_gate() == nullptr);
  }

  TEST_CASE("params_preview: short kept, long cut on a UTF-8 boundary to at most 512 bytes") {
    CHECK(params_preview("{}") == "{}");
    std::string exact(512, 'a');
    CHECK(params_preview(exact) == exact);
    std::string ascii(600, 'a');
    auto cut = params_preview(ascii);
    CHECK(cut.size() == 512);
    CHECK(cut.substr(0, 509) == std::string(509, 'a'));
    CHECK(cut.substr(509) == "\xE2\x80\xA6");
    // 508 ASCII bytes, then 3-byte characters: byte 509 would split the first one.
    std::string wide(508, 'b');
    for (int i = 0; i < 20; ++i) wide += "\xE2\x82\xAC";  // €
    auto w = params_preview(wide);
    CHECK(w.size() == 508 + 3);
    CHECK(w.substr(0, 508) == std::string(508, 'b'));
    CHECK(valid_utf8(w));
    // 507 ASCII + 4-byte characters: the first ends at 511 > 509, so it is dropped.
    std::string emoji(507, 'c');
    for (int i = 0; i < 10; ++i) emoji += "\xF0\x9F\x98\x80";
    auto e = params_preview(emoji);
    CHECK(e == std::string(507, 'c') + "\xE2\x80\xA6");
    // 506 ASCII + a 3-byte character fits exactly at 509.
    std::string fits(506, 'd');
    fits += "\xE2\x82\xAC";
    fits += std::string(100, 'd');
    auto f = params_preview(fits);
    CHECK(f.size() == 512);
    CHECK(valid_utf8(f));
  }

  TEST_CASE("approve: the request waits without blocking, then runs") {
    HostFixture f(gated({"danger.op"}));
    int runs = 0;
    add_danger(f.server, &runs);
    Peer& a = f.peer();
    Peer& b = f.peer();
    Peer& h = f.peer();
    f.call(h, "host.subscribe");

    long long id = f.send(a, "danger.op", R"({"target":"prod","n":1})");
    CHECK_FALSE(f.response(a, id).has_value());
    CHECK(runs == 0);
    CHECK(a.client.connection->inflight() == 1);
    auto requested = f.events(h, "approval.requested");
    REQUIRE(requested.size() == 1);
    const auto& row = requested[0]["params"]["payload"];
    CHECK(str(row["action"]) == "ws.method:danger.op");
    CHECK(str(row["status"]) == "pending");
    CHECK_FALSE(row.HasMember("client_id"));  // system-level
    CHECK(str(row["details"]["method"]) == "danger.op");
    CHECK(str(row["details"]["client_id"]) == a.id());
    CHECK(str(row["details"]["params_preview"]) == R"({"target":"prod","n":1})");

    // The connection keeps serving while the request waits.
    auto agents = f.call(a, "host.agents");
    CHECK(agents["result"].IsArray());

    auto resolved = f.call(b, "host.resolve_approval",
                           R"({"approval_id":")" + approval_id_of(requested[0]) +
                               R"(","approved":true})");
    CHECK(str(resolved["result"]["status"]) == "approved");
    CHECK(str(resolved["result"]["resolved_by"]) == b.id());
    auto reply = f.response(a, id);
    REQUIRE(reply.has_value());
    CHECK((*reply)["result"]["done"].GetBool());
    CHECK(runs == 1);
    CHECK(a.client.connection->inflight() == 0);
    // Nothing fires later.
    f.executor.advance(120000ms);
    f.pump();
    CHECK(a.inbox.empty());
  }

  TEST_CASE("deny answers -32003 approval denied and never runs the handler") {
    HostFixture f(gated({"danger.op"}));
    int runs = 0;
    add_danger(f.server, &runs);
    Peer& a = f.peer();
    Peer& b = f.peer();
    long long id = f.send(a, "danger.op");
    f.pump();
    auto rows = f.service->state().approvals();
    REQUIRE(rows.size() == 1);
    CHECK(str(parse_json(rows[0].details_json)["params_preview"]) == "{}");
    f.call(b, "host.resolve_approval",
           R"({"approval_id":")" + rows[0].id + R"(","resolution":"deny"})");
    auto reply = f.response(a, id);
    REQUIRE(reply.has_value());
    CHECK(error_code(*reply) == -32003);
    CHECK(error_message(*reply) == "approval denied");
    CHECK(runs == 0);
  }

  TEST_CASE("timeout answers -32003 approval timed out; the row stays pending") {
    HostFixture f(gated({"danger.op"}, 1000ms));
    int runs = 0;
    add_danger(f.server, &runs);
    Peer& a = f.peer();
    Peer& b = f.peer();
    long long id = f.send(a, "danger.op");
    f.executor.advance(999ms);
    CHECK_FALSE(f.response(a, id).has_value());
    f.executor.advance(2ms);
    auto reply = f.response(a, id);
    REQUIRE(reply.has_value());
    CHECK(error_code(*reply) == -32003);
    CHECK(error_message(*reply) == "approval timed out");
    auto rows = f.service->state().approvals();
    REQUIRE(rows.size() == 1);
    CHECK(rows[0].pending());
    CHECK(a.client.connection->inflight() == 0);
    CHECK_FALSE(a.client.connection->closed());
    CHECK(f.call(a, "host.agents")["result"].IsArray());
    // Resolving it later answers nobody twice and runs nothing.
    resolve(f, b, rows[0].id, true);
    f.pump();
    CHECK(a.inbox.empty());
    CHECK(runs == 0);
  }

  TEST_CASE("a connection that closes while waiting releases its waits; the rows stay pending") {
    HostFixture f(gated({"danger.op"}));
    int runs = 0;
    add_danger(f.server, &runs);
    Peer& a = f.peer();
    Peer& b = f.peer();
    Peer& c = f.peer();
    f.send(a, "danger.op", R"({"n":1})");
    f.send(a, "danger.op", R"({"n":2})");
    long long other = f.send(c, "danger.op", R"({"n":3})");
    f.pump();
    auto gate = f.service->gate();
    REQUIRE(gate != nullptr);
    CHECK(gate->waiting() == 3);
    std::size_t timers = f.executor.pending_timers();
    f.disconnect(a);
    f.pump();
    CHECK(gate->waiting() == 1);                         // only c's request still waits
    CHECK(f.executor.pending_timers() == timers - 2);    // a's gate timers are gone
    auto rows = f.service->state().approvals();
    REQUIRE(rows.size() == 3);
    for (const auto& row : rows) CHECK(row.pending());
    // Approving a's rows later runs nothing; c's request is unaffected.
    resolve(f, b, rows[0].id, true);
    resolve(f, b, rows[1].id, true);
    CHECK(runs == 0);
    resolve(f, b, rows[2].id, true);
    auto reply = f.response(c, other);
    REQUIRE(reply.has_value());
    CHECK(runs == 1);
    CHECK(gate->waiting() == 0);
  }

  TEST_CASE("an admit that races past the connection's teardown is abandoned at once") {
    // Stands in for receive() on another thread passing its closed() check just before end():
    // the wait is registered after the gate_waits teardown phase already scanned.
    HostFixture f(gated({"danger.op"}));
    Peer& a = f.peer();
    auto gate = f.service->gate();
    REQUIRE(gate != nullptr);
    auto conn = a.client.connection;
    f.disconnect(a);
    REQUIRE(conn->closed());
    bool decided = false;
    json::Document params;
    params.SetObject();
    gate->admit(*conn, "danger.op", params, [&](std::optional<Error>) { decided = true; });
    f.pump();
    CHECK(decided);
    CHECK(gate->waiting() == 0);
    CHECK(f.executor.pending_timers() == 0);
    auto rows = f.service->state().approvals();
    REQUIRE(rows.size() == 1);
    CHECK(rows[0].pending());
  }

  TEST_CASE("two gated requests on one connection complete independently, in either order") {
    HostFixture f(gated({"danger.op"}));
    int runs = 0;
    add_danger(f.server, &runs);
    Peer& a = f.peer();
    Peer& b = f.peer();
    long long first = f.send(a, "danger.op", R"({"n":1})");
    long long second = f.send(a, "danger.op", R"({"n":2})");
    f.pump();
    auto rows = f.service->state().approvals();
    REQUIRE(rows.size() == 2);
    CHECK(a.client.connection->inflight() == 2);
    // Resolve the second first.
    resolve(f, b, rows[1].id, true);
    CHECK(f.response(a, second).has_value());
    CHECK_FALSE(f.response(a, first).has_value());
    resolve(f, b, rows[0].id, false);
    auto r1 = f.response(a, first);
    REQUIRE(r1.has_value());
    CHECK(error_code(*r1) == -32003);
    CHECK(runs == 1);
  }

  TEST_CASE("an approved unknown method still answers -32601") {
    HostFixture f(gated({"no.such.method"}));
    Peer& a = f.peer();
    long long id = f.send(a, "no.such.method");
    f.pump();
    auto rows = f.service->state().approvals();
    REQUIRE(rows.size() == 1);
    f.service->approvals();  // reachable
    auto r = f.service->state().resolve_approval(rows[0].id, Decision::approve, "someone");
    REQUIRE(r.ok());
    auto reply = f.response(a, id);
    REQUIRE(reply.has_value());
    CHECK(error_code(*reply) == -32601);
  }

  TEST_CASE("a bound session's gated approval names its agent") {
    HostFixture f(gated({"danger.op"}));
    int runs = 0;
    add_danger(f.server, &runs);
    Peer& a = f.peer();
    f.call(a, "session.auth", R"({"token":"x","agent_id":"bot-1"})");
    f.send(a, "danger.op");
    f.pump();
    auto rows = f.service->state().approvals();
    REQUIRE(rows.size() == 1);
    CHECK(rows[0].agent_id == "bot-1");
  }

  TEST_CASE("approvals resolved on another thread while the loop keeps serving") {
    HostFixture f(gated({"danger.op"}));
    int runs = 0;
    add_danger(f.server, &runs);
    Peer& a = f.peer();
    std::vector<long long> ids;
    for (int i = 0; i < 16; ++i) ids.push_back(f.send(a, "danger.op"));
    f.pump();
    auto rows = f.service->state().approvals();
    REQUIRE(rows.size() == 16);
    std::thread resolver([&] {
      for (std::size_t i = 0; i < rows.size(); ++i) {
        f.service->state().resolve_approval(rows[i].id,
                                            i % 2 ? Decision::deny : Decision::approve, "bg");
      }
    });
    std::size_t answered = 0;
    for (int spin = 0; spin < 100000 && answered < ids.size(); ++spin) {
      f.pump();
      answered = a.inbox.size();
      std::this_thread::yield();
    }
    resolver.join();
    f.pump();
    int ok = 0, denied = 0;
    for (long long id : ids) {
      auto r = f.response(a, id);
      REQUIRE(r.has_value());
      if (r->HasMember("result")) ++ok;
      if (r->HasMember("error") && error_code(*r) == -32003) ++denied;
    }
    CHECK(ok == 8);
    CHECK(denied == 8);
    CHECK(runs == 8);
  }
}
