// HostService: the host.* methods over in-process connections (PROTOCOL.md §4.2, §5.2): shapes,
// params, the ACL, subscriptions and the event stream, identity, approvals and their reaping, the tools.* wiring (§6);
// acceptance cases 16–21, 24–27 and 50.
#if defined(_WIN32)
#include <process.h>
#else
#include <unistd.h>
#endif

#include "car/version.hpp"
#include "host_test_support.hpp"

using namespace car;
using namespace car::host;
using namespace car::test;
using namespace std::chrono_literals;

namespace {

std::string register_x(HostFixture& f, Peer& p, const std::string& id = "X") {
  auto r = f.call(p, "host.register_agent",
                  R"({"id":")" + id + R"(","name":"Agent X","kind":"cli"})");
  REQUIRE_MESSAGE(r.HasMember("result"), json::stringify(r));
  return str(r["result"]["id"]);
}

}  // namespace

TEST_SUITE("host_service") {
  TEST_CASE("register_agent: shape, defaults, fresh id, params checks") {
    HostFixture f;
    Peer& a = f.peer();
    auto r = f.call(a, "host.register_agent",
                    R"({"name":"Builder","kind":"cli","capabilities":["build","test"],)"
                    R"("project":"carcore","pid":4242,"display":{"color":"blue"},)"
                    R"("metadata":{"v":1},"extra":"ignored"})");
    const auto& agent = r["result"];
    CHECK(str(agent["id"]).rfind("agent-", 0) == 0);
    CHECK(str(agent["name"]) == "Builder");
    CHECK(str(agent["kind"]) == "cli");
    CHECK(agent["capabilities"].Size() == 2);
    CHECK(str(agent["project"]) == "carcore");
    CHECK(agent["pid"].GetInt() == 4242);
    CHECK(str(agent["display"]["color"]) == "blue");
    CHECK(agent["metadata"]["v"].GetInt() == 1);
    CHECK(str(agent["status"]) == "idle");
    CHECK(str(agent["session_id"]) == a.id());
    REQUIRE(agent.HasMember("current_task"));
    CHECK(agent["current_task"].IsNull());

    auto minimal = f.call(a, "host.register_agent", R"({"name":"m","kind":"k"})");
    for (const char* absent : {"project", "display"}) {
      CAPTURE(absent);
      CHECK_FALSE(minimal["result"].HasMember(absent));
    }
    // Case 50: as upstream, unset current_task and pid are present and null.
    for (const char* null_field : {"pid", "current_task"}) {
      CAPTURE(null_field);
      REQUIRE(minimal["result"].HasMember(null_field));
      CHECK(minimal["result"][null_field].IsNull());
    }
    // A null param counts as absent (upstream clients send their nulls back).
    auto nulls = f.call(a, "host.register_agent",
                        R"({"name":"n","kind":"k","pid":null,"project":null})");
    CHECK(nulls["result"]["pid"].IsNull());
    CHECK_FALSE(nulls["result"].HasMember("project"));
    CHECK(minimal["result"]["capabilities"].Size() == 0);
    CHECK(minimal["result"]["metadata"].IsObject());

    CHECK(error_message(f.call(a, "host.register_agent", R"({"kind":"k"})")) ==
          "invalid params: name is required");
    CHECK(error_code(f.call(a, "host.register_agent",
                            R"({"name":"n","kind":"k","capabilities":[1]})")) == -32602);
    CHECK(error_code(f.call(a, "host.register_agent", R"({"name":"n","kind":"k","metadata":3})")) ==
          -32602);
    CHECK(error_code(f.call(a, "host.register_agent", R"(["n"])")) == -32602);
  }

  TEST_CASE("case 16/17: only the owner mutates its agent; others are refused") {
    HostFixture f;
    Peer& a = f.peer();
    Peer& b = f.peer();
    register_x(f, a);
    const std::string owned = "agent 'X' is owned by another session";
    auto status = f.call(b, "host.set_status", R"({"agent_id":"X","status":"running"})");
    CHECK(error_code(status) == -32603);
    CHECK(error_message(status) == owned);
    CHECK(error_message(f.call(b, "host.unregister_agent", R"({"agent_id":"X"})")) == owned);
    CHECK(error_message(f.call(b, "host.register_agent",
                               R"({"id":"X","name":"mine now","kind":"cli"})")) == owned);

    auto ok = f.call(a, "host.set_status",
                     R"({"agent_id":"X","status":"running","current_task":"build"})");
    CHECK(str(ok["result"]["status"]) == "running");
    CHECK(str(ok["result"]["current_task"]) == "build");
    auto bad = f.call(a, "host.set_status", R"({"agent_id":"X","status":"sleeping"})");
    CHECK(error_code(bad) == -32602);
    CHECK(error_message(bad).find("status") != std::string::npos);
    CHECK(error_message(f.call(a, "host.set_status", R"({"agent_id":"Q","status":"idle"})")) ==
          "unknown agent 'Q'");
    CHECK(error_message(f.call(a, "host.unregister_agent", R"({"agent_id":"Q"})")) ==
          "unknown agent 'Q'");
    CHECK(f.call(a, "host.unregister_agent", R"({"agent_id":"X"})")["result"]["ok"].GetBool());
    CHECK(f.call(a, "host.agents")["result"].Size() == 0);
  }

  TEST_CASE("items outlive their owner; registering the same id then adopts it") {
    HostFixture f;
    Peer& a = f.peer();
    Peer& b = f.peer();
    register_x(f, a);
    auto dev = f.call(a, "host.register_device", R"({"id":"D","name":"Phone","platform":"ios"})");
    REQUIRE(dev.HasMember("result"));
    f.disconnect(a);
    CHECK(f.call(b, "host.agents")["result"].Size() == 1);
    CHECK(error_message(f.call(b, "host.set_status", R"({"agent_id":"X","status":"idle"})")) ==
          "agent 'X' is owned by another session");
    auto adopted = f.call(b, "host.register_agent", R"({"id":"X","name":"Mine","kind":"cli"})");
    CHECK(str(adopted["result"]["session_id"]) == b.id());
    CHECK(f.call(b, "host.set_status", R"({"agent_id":"X","status":"paused"})")
              .HasMember("result"));
    auto dev2 = f.call(b, "host.register_device", R"({"id":"D","name":"Phone","platform":"ios"})");
    CHECK(str(dev2["result"]["session_id"]) == b.id());
  }

  TEST_CASE("the tools.* methods: installed, only tools.register takes an array, grace wired") {
    HostConfig config;
    config.tool_timeout = 1234ms;
    config.tool_grace = 77ms;
    HostFixture f(config);
    for (const char* name : {"tools.register", "tools.list", "tools.unregister", "tools.invoke"}) {
      const Method* method = f.server.methods().find(name);
      REQUIRE_MESSAGE(method != nullptr, name);
      bool array = std::string_view(name) == "tools.register";
      CHECK_MESSAGE(method->options.accepts_array_params == array, name);
    }
    CHECK(f.service->tools().default_timeout() == 1234ms);
    CHECK(f.service->tools().grace() == 77ms);
    CHECK(HostConfig{}.tool_grace == 5000ms);
    // A negative grace (an embedder's mistake) counts as none rather than ending calls early.
    HostConfig negative;
    negative.tool_grace = -5ms;
    HostFixture g(negative);
    CHECK(g.service->tools().grace() == 0ms);
    Peer& a = f.peer();
    CHECK(f.call(a, "tools.register", R"(["t"])")["result"].GetInt() == 1);
    CHECK(error_message(f.call(a, "tools.invoke", "[]")) ==
          "invalid params: params must be an object");
  }

  TEST_CASE("tools.register folds repeated names while reading; too many distinct names is refused") {
    HostFixture f;
    Peer& a = f.peer();
    // 5 000 entries of two names: two tools, the last definition of each wins.
    std::string many = "[";
    for (int i = 0; i < 5000; ++i) {
      if (i) many += ",";
      many += i % 2 ? R"("b")" : R"({"name":"a","description":"d)" + std::to_string(i) + R"("})";
    }
    many += "]";
    CHECK(f.call(a, "tools.register", many)["result"].GetInt() == 2);
    auto listed = f.call(a, "tools.list");
    REQUIRE(listed["result"]["count"].GetInt() == 2);
    CHECK(str(listed["result"]["tools"][0]["description"]) == "d4998");
    // One more distinct name than a connection may hold: refused whole, nothing registered.
    std::string distinct = "[";
    for (std::size_t i = 0; i <= ToolBroker::max_tools_per_connection; ++i) {
      if (i) distinct += ",";
      distinct += "\"t" + std::to_string(i) + "\"";
    }
    distinct += "]";
    Peer& b = f.peer();
    CHECK(error_message(f.call(b, "tools.register", distinct)) ==
          "too many tools: a connection may hold at most 1024");
    CHECK(f.call(b, "tools.list")["result"]["count"].GetInt() == 0);
  }

  TEST_CASE("devices: register, update, owner only") {
    HostFixture f;
    Peer& a = f.peer();
    Peer& b = f.peer();
    auto d = f.call(a, "host.register_device",
                    R"({"name":"Mac","platform":"macos","capabilities":["screen"]})");
    std::string id = str(d["result"]["id"]);
    CHECK(id.rfind("device-", 0) == 0);
    REQUIRE(d["result"].HasMember("status"));  // null when unset, as upstream
    CHECK(d["result"]["status"].IsNull());
    CHECK(str(d["result"]["updated_at"]).size() == 24);
    auto up = f.call(a, "host.update_device", R"({"device_id":")" + id + R"(","status":"busy"})");
    CHECK(str(up["result"]["status"]) == "busy");
    CHECK(str(up["result"]["name"]) == "Mac");
    CHECK(error_message(f.call(b, "host.update_device", R"({"device_id":")" + id + R"("})")) ==
          "device '" + id + "' is owned by another session");
    CHECK(error_message(f.call(a, "host.update_device", R"({"device_id":"nope"})")) ==
          "unknown device 'nope'");
    CHECK(error_message(f.call(b, "host.register_device",
                               R"({"id":")" + id + R"(","name":"x","platform":"y"})")) ==
          "device '" + id + "' is owned by another session");
    auto list = f.call(b, "host.devices");
    REQUIRE(list["result"].Size() == 1);
    CHECK(str(list["result"][0]["status"]) == "busy");
  }

  TEST_CASE("case 18: 501 notifies keep 500 events with consecutive sequences") {
    HostFixture f;
    Peer& a = f.peer();
    auto first = f.call(a, "host.notify", R"({"message":"n1"})");
    CHECK(str(first["result"]["kind"]) == "host.notification");
    CHECK(first["result"]["sequence"].GetInt() == 1);
    CHECK(first["result"]["payload"].IsObject());
    REQUIRE(first["result"].HasMember("agent_id"));  // null when unset, as upstream
    CHECK(first["result"]["agent_id"].IsNull());
    for (int i = 2; i <= 501; ++i) {
      a.client.send(R"({"jsonrpc":"2.0","method":"host.notify","params":{"message":"n)" +
                    std::to_string(i) + R"("}})");
    }
    f.pump();
    auto all = f.call(a, "host.events", R"({"limit":1000})");
    const auto& events = all["result"]["events"];
    REQUIRE(events.Size() == 500);
    CHECK(events[0]["sequence"].GetInt() == 2);
    CHECK(str(events[0]["message"]) == "n2");
    for (rapidjson::SizeType i = 1; i < events.Size(); ++i) {
      CHECK(events[i]["sequence"].GetInt() == events[i - 1]["sequence"].GetInt() + 1);
    }
    CHECK(f.call(a, "host.events")["result"]["events"].Size() == 100);
    auto three = f.call(a, "host.events", R"({"limit":3})");
    CHECK(three["result"]["events"][2]["sequence"].GetInt() == 501);
    CHECK(error_code(f.call(a, "host.events", R"({"limit":-1})")) == -32602);
  }

  TEST_CASE("host.notify: custom kind, agent and payload") {
    HostFixture f;
    Peer& a = f.peer();
    auto r = f.call(a, "host.notify",
                    R"({"kind":"build.done","agent_id":"X","message":"ok","payload":{"n":3}})");
    CHECK(str(r["result"]["kind"]) == "build.done");
    CHECK(str(r["result"]["agent_id"]) == "X");
    CHECK(r["result"]["payload"]["n"].GetInt() == 3);
    CHECK(str(r["result"]["id"]).rfind("event-", 0) == 0);
    CHECK(str(r["result"]["timestamp"]).back() == 'Z');
  }

  TEST_CASE("case 19/20: subscribers get every event after the snapshot; others do not") {
    HostFixture f;
    Peer& a = f.peer();
    Peer& h = f.peer();
    Peer& quiet = f.peer();
    Peer& gone = f.peer();
    f.call(a, "host.notify", R"({"message":"before"})");
    auto snap = f.call(h, "host.subscribe");
    CHECK(snap["result"]["subscribed"].GetBool());
    CHECK(snap["result"]["event_sequence"].GetInt() == 1);
    CHECK(snap["result"]["events"].Size() == 1);
    CHECK(snap["result"]["agents"].IsArray());
    CHECK(snap["result"]["devices"].IsArray());
    CHECK(snap["result"]["approvals"].IsArray());
    f.call(quiet, "host.subscribe");
    CHECK(f.call(quiet, "host.unsubscribe")["result"]["subscribed"].IsFalse());
    CHECK(f.call(quiet, "host.unsubscribe")["result"]["subscribed"].IsFalse());  // idempotent
    f.call(gone, "host.subscribe");
    f.disconnect(gone);

    register_x(f, a);
    f.call(a, "host.set_status", R"({"agent_id":"X","status":"running"})");
    f.call(a, "host.notify", R"({"message":"hello"})");
    auto approval = f.call(a, "host.request_approval", R"({"title":"ship it"})");
    f.call(a, "host.resolve_approval",
           R"({"approval_id":")" + str(approval["result"]["id"]) + R"(","approved":true})");

    auto events = f.take(h, "host.event");
    std::vector<std::string> kinds;
    for (auto& e : events) kinds.push_back(str(e["params"]["kind"]));
    CHECK(kinds == std::vector<std::string>{"agent.registered", "agent.status_changed",
                                            "host.notification", "approval.requested",
                                            "approval.resolved"});
    REQUIRE(!events.empty());
    CHECK(events[0]["params"]["sequence"].GetInt() == 2);  // event_sequence + 1
    for (std::size_t i = 1; i < events.size(); ++i) {
      CHECK(events[i]["params"]["sequence"].GetInt() ==
            events[i - 1]["params"]["sequence"].GetInt() + 1);
    }
    CHECK(str(events[1]["params"]["payload"]["status"]) == "running");
    CHECK(f.take(quiet, "host.event").empty());
    CHECK(f.take(gone, "host.event").empty());
  }

  TEST_CASE("case 19: a subscriber that stops reading never delays the others") {
    HostFixture f;
    Peer& a = f.peer();
    Peer& healthy = f.peer();
    SinkLimits small;
    small.max_frames = 16;
    Peer& stuck = f.peer(small);
    f.call(healthy, "host.subscribe");
    f.call(stuck, "host.subscribe");
    stuck.client.sink->set_stalled(true);
    for (int i = 0; i < 100; ++i) {
      a.client.send(R"({"jsonrpc":"2.0","method":"host.notify","params":{}})");
    }
    f.pump();
    CHECK(f.take(healthy, "host.event").size() == 100);
    // Its sink overflowed: it was disconnected (and unsubscribed), not silently skipped.
    CHECK(stuck.client.connection->closed());
    CHECK(f.service->state().subscriber_count() == 1);
  }

  TEST_CASE("the subscribe reply precedes the subscription's events, even inside a batch") {
    HostFixture f;
    Peer& h = f.peer();
    h.client.send(R"([{"jsonrpc":"2.0","id":1,"method":"host.subscribe"},)"
                  R"({"jsonrpc":"2.0","id":2,"method":"host.notify","params":{"message":"m"}}])");
    f.pump();
    REQUIRE(h.inbox.size() == 2);
    auto batch = parse_json(h.inbox[0]);
    REQUIRE(batch.IsArray());
    auto event = parse_json(h.inbox[1]);
    CHECK(str(event["method"]) == "host.event");
    // Whichever member ran first, the event is either in the snapshot or delivered, never both.
    for (const auto& entry : batch.GetArray()) {
      if (entry["id"].GetInt() == 1) CHECK(entry["result"]["event_sequence"].GetInt() == 0);
    }
    CHECK(event["params"]["sequence"].GetInt() == 1);
  }

  TEST_CASE("host.subscribe honours require_handshake") {
    ServerConfig config = Fixture::disabled_auth();
    config.require_handshake = true;
    HostFixture f({}, config);
    Peer& h = f.peer();
    auto refused = f.call(h, "host.subscribe");
    CHECK(error_code(refused) == -32005);
    f.call(h, "server.handshake", R"({"protocol_version":2})");
    CHECK(f.call(h, "host.subscribe")["result"]["subscribed"].GetBool());
    CHECK(f.call(h, "host.agents")["result"].IsArray());
  }

  TEST_CASE("host.subscribe carries the identity of the serving process") {
    long long pid =
#if defined(_WIN32)
        _getpid();
#else
        ::getpid();
#endif
    {
      HostFixture f;  // the defaults car-daemon keeps: no manifest
      Peer& h = f.peer();
      auto snap_doc = f.call(h, "host.subscribe");
      const auto& snap = snap_doc["result"];
      REQUIRE(snap.HasMember("identity"));
      const auto& id = snap["identity"];
      CHECK(str(id["version"]) == version_string);
      CHECK(id["pid"].GetInt64() == pid);
      REQUIRE(id.HasMember("manifest_path"));
      CHECK(id["manifest_path"].IsNull());
      CHECK(str(id["manifest_role"]) == "none");
      // Identity is the last member; the state members are still all there.
      std::vector<std::string> keys;
      for (const auto& m : snap.GetObject()) keys.emplace_back(json::view(m.name));
      CHECK(keys == std::vector<std::string>{"subscribed", "agents", "devices", "approvals",
                                             "events", "event_sequence", "identity"});
    }
    for (auto [role, text] : {std::pair{ManifestRole::owner, "owner"},
                              std::pair{ManifestRole::observer, "observer"}}) {
      CAPTURE(text);
      HostConfig config;
      config.manifest_path = "/etc/car/manifest.json";
      config.manifest_role = role;
      ServerConfig server_config = Fixture::disabled_auth();
      server_config.server_version = "9.9.9-embed";
      HostFixture f(config, server_config);
      Peer& h = f.peer();
      auto snap_doc = f.call(h, "host.subscribe");
      const auto& snap = snap_doc["result"];
      const auto& id = snap["identity"];
      CHECK(str(id["version"]) == "9.9.9-embed");  // the version the handshake reports
      CHECK(id["pid"].GetInt64() == pid);
      CHECK(str(id["manifest_path"]) == "/etc/car/manifest.json");
      CHECK(str(id["manifest_role"]) == text);
      CHECK(to_string(role) == text);
    }
    CHECK(to_string(ManifestRole::none) == "none");
  }

  TEST_CASE("with auth enabled, host methods need session.auth") {
    HostFixture f({}, Fixture::enabled_auth());
    Peer& a = f.peer();
    auto r = f.call(a, "host.agents");
    CHECK(error_code(r) == -32001);
    Peer& b = f.peer();
    f.call(b, "session.auth", R"({"token":"secret"})");
    CHECK(f.call(b, "host.agents")["result"].IsArray());
  }

  TEST_CASE("case 21: reads show other sessions' items") {
    HostFixture f;
    Peer& a = f.peer();
    Peer& b = f.peer();
    register_x(f, a);
    f.call(a, "host.request_approval", R"({"title":"t"})");
    f.call(a, "host.notify", R"({"message":"m"})");
    auto agents = f.call(b, "host.agents");
    REQUIRE(agents["result"].Size() == 1);
    CHECK(str(agents["result"][0]["session_id"]) == a.id());
    CHECK(f.call(b, "host.events")["result"]["events"].Size() == 3);
    auto approvals = f.call(b, "host.approvals");
    REQUIRE(approvals["result"]["approvals"].Size() == 1);
    CHECK(str(approvals["result"]["approvals"][0]["client_id"]) == a.id());
  }

  TEST_CASE("request_approval: shape and details") {
    HostFixture f;
    Peer& a = f.peer();
    auto r = f.call(a, "host.request_approval",
                    R"({"title":"Deploy","description":"to prod","context":{"env":"prod"},)"
                    R"("required_approvals":2})");
    const auto& row = r["result"];
    CHECK(str(row["id"]).rfind("approval-", 0) == 0);
    CHECK(str(row["action"]) == "Deploy");
    CHECK(str(row["details"]["description"]) == "to prod");
    CHECK(str(row["details"]["context"]["env"]) == "prod");
    CHECK(row["details"]["required_approvals"].GetInt() == 2);
    CHECK(str(row["options"][0]) == "approve");
    CHECK(str(row["options"][1]) == "deny");
    CHECK(str(row["status"]) == "pending");
    CHECK(str(row["client_id"]) == a.id());
    CHECK(str(row["created_at"]).size() == 24);
    CHECK_FALSE(row.HasMember("agent_id"));
    auto bare = f.call(a, "host.request_approval", R"({"title":"T"})");
    CHECK(bare["result"]["details"].ObjectEmpty());
    CHECK(error_code(f.call(a, "host.request_approval", "{}")) == -32602);
  }

  TEST_CASE("case 24/25: a non-owner proposes; the owner resolves; a repeat is idempotent") {
    HostFixture f;
    Peer& a = f.peer();
    Peer& b = f.peer();
    Peer& h = f.peer();
    f.call(h, "host.subscribe");
    auto req = f.call(a, "host.request_approval", R"({"title":"ship"})");
    std::string id = str(req["result"]["id"]);
    f.take(h, "host.event");

    auto proposal = f.call(b, "host.resolve_approval",
                           R"({"approval_id":")" + id + R"(","approved":true,"notes":"lgtm"})");
    CHECK(str(proposal["result"]["status"]) == "pending");
    CHECK_FALSE(proposal["result"].HasMember("resolution"));
    auto proposed = f.events(h, "approval.resolution_proposed");
    REQUIRE(proposed.size() == 1);
    const auto& payload = proposed[0]["params"]["payload"];
    CHECK(str(payload["approval_id"]) == id);
    CHECK(str(payload["resolution"]) == "approve");
    CHECK(str(payload["proposed_by"]) == b.id());

    auto resolved = f.call(a, "host.resolve_approval",
                           R"({"approval_id":")" + id + R"(","resolution":"deny","notes":"no"})");
    const auto& row = resolved["result"];
    CHECK(str(row["status"]) == "denied");
    CHECK(str(row["resolution"]) == "deny");
    CHECK(str(row["resolved_by"]) == a.id());
    CHECK(str(row["notes"]) == "no");
    CHECK(str(row["resolved_at"]).size() == 24);
    CHECK(f.events(h, "approval.resolved").size() == 1);

    auto again = f.call(a, "host.resolve_approval",
                        R"({"approval_id":")" + id + R"(","approved":true})");
    CHECK(json::stringify(again["result"]) == json::stringify(resolved["result"]));
    auto by_b = f.call(b, "host.resolve_approval",
                       R"({"approval_id":")" + id + R"(","approved":true})");
    CHECK(str(by_b["result"]["status"]) == "denied");
    f.pump();
    CHECK(f.take(h, "host.event").empty());  // no event for repeats
  }

  TEST_CASE("resolve_approval params") {
    HostFixture f;
    Peer& a = f.peer();
    auto id = str(f.call(a, "host.request_approval", R"({"title":"t"})")["result"]["id"]);
    auto missing = f.call(a, "host.resolve_approval", R"({"approval_id":")" + id + R"("})");
    CHECK(error_code(missing) == -32602);
    auto bad = f.call(a, "host.resolve_approval",
                      R"({"approval_id":")" + id + R"(","resolution":"maybe"})");
    CHECK(error_code(bad) == -32602);
    auto clash = f.call(a, "host.resolve_approval",
                        R"({"approval_id":")" + id + R"(","approved":true,"resolution":"deny"})");
    CHECK(error_code(clash) == -32602);
    auto unknown =
        f.call(a, "host.resolve_approval", R"({"approval_id":"approval-x","approved":true})");
    CHECK(error_code(unknown) == -32603);
    CHECK(error_message(unknown) == "unknown approval 'approval-x'");
    CHECK(f.service->state().approval(id)->pending());
  }

  TEST_CASE("case 26: the owner disconnects; its approvals are denied by system") {
    HostFixture f;
    Peer& a = f.peer();
    Peer& b = f.peer();
    Peer& h = f.peer();
    register_x(f, a);
    f.call(a, "host.set_status", R"({"agent_id":"X","status":"running"})");
    auto flipped =
        str(f.call(a, "host.request_approval", R"({"agent_id":"X","title":"t"})")["result"]["id"]);
    auto plain = str(f.call(a, "host.request_approval", R"({"title":"u"})")["result"]["id"]);
    auto theirs = str(f.call(b, "host.request_approval", R"({"title":"v"})")["result"]["id"]);
    f.call(h, "host.subscribe");
    f.disconnect(a);

    auto resolved = f.events(h, "approval.resolved");
    REQUIRE(resolved.size() == 2);
    for (std::size_t i = 0; i < resolved.size(); ++i) {
      const auto& row = resolved[i]["params"]["payload"];
      CHECK(str(row["id"]) == (i == 0 ? flipped : plain));
      CHECK(str(row["status"]) == "denied");
      CHECK(str(row["resolution"]) == "deny");
      CHECK(str(row["resolved_by"]) == "system");
      CHECK(str(row["notes"]) == "owner disconnected");
      CHECK(str(row["client_id"]) == a.id());
    }
    // The agent it had flipped returns to its previous status.
    auto status = f.events(h, "agent.status_changed");
    REQUIRE(status.size() == 1);
    CHECK(str(status[0]["params"]["payload"]["status"]) == "running");
    CHECK(str(f.call(b, "host.agents")["result"][0]["status"]) == "running");

    // B's later resolve returns the row unchanged, without error and without an event.
    auto rows_doc = f.call(b, "host.approvals");
    const auto& rows = rows_doc["result"]["approvals"];
    auto r = f.call(b, "host.resolve_approval",
                    R"({"approval_id":")" + flipped + R"(","approved":true})");
    REQUIRE(r.HasMember("result"));
    CHECK(json::stringify(r["result"]) == json::stringify(rows[0]));
    CHECK(f.take(h, "host.event").empty());
    // Another session's row is not touched.
    CHECK(str(rows[2]["id"]) == theirs);
    CHECK(str(rows[2]["status"]) == "pending");
  }

  TEST_CASE("an approval requested while its connection is being torn down is reaped too") {
    // Stands in for a request handled on another thread just as the connection ends: the
    // teardown's reap has already scanned when the row is created.
    HostFixture f;
    Peer& a = f.peer();
    auto conn = a.client.connection;
    f.disconnect(a);
    REQUIRE(conn->closed());
    const Method* method = f.server.methods().find("host.request_approval");
    REQUIRE(method != nullptr);
    auto params = parse_json(R"({"title":"late"})");
    method->handler(Request(*conn, "host.request_approval", params), Reply{});
    f.pump();
    auto rows = f.service->state().approvals();
    REQUIRE(rows.size() == 1);
    CHECK(rows[0].status == ApprovalStatus::denied);
    CHECK(rows[0].resolved_by == "system");
  }

  TEST_CASE("case 27: request_approval flips the caller's agent to waiting_for_approval") {
    HostFixture f;
    Peer& a = f.peer();
    Peer& h = f.peer();
    register_x(f, a);
    f.call(a, "host.set_status", R"({"agent_id":"X","status":"running"})");
    f.call(h, "host.subscribe");
    auto req = f.call(a, "host.request_approval", R"({"agent_id":"X","title":"t"})");
    CHECK(str(req["result"]["agent_id"]) == "X");
    auto status = f.events(h, "agent.status_changed");
    REQUIRE(status.size() == 1);
    CHECK(str(status[0]["params"]["payload"]["status"]) == "waiting_for_approval");
    CHECK(str(f.call(a, "host.agents")["result"][0]["status"]) == "waiting_for_approval");
    f.call(a, "host.resolve_approval",
           R"({"approval_id":")" + str(req["result"]["id"]) + R"(","approved":true})");
    CHECK(str(f.call(a, "host.agents")["result"][0]["status"]) == "running");
    auto back = f.events(h, "agent.status_changed");
    REQUIRE(back.size() == 1);
    CHECK(str(back[0]["params"]["payload"]["status"]) == "running");
  }

  TEST_CASE("case 50: set_status puts the caller's message and payload on the event verbatim") {
    HostFixture f;
    Peer& a = f.peer();
    Peer& h = f.peer();
    register_x(f, a);
    f.call(h, "host.subscribe");
    f.call(a, "host.set_status", R"({"agent_id":"X","status":"errored","payload":{"k":1},)"
                                 R"("message":"m"})");
    auto events = f.events(h, "agent.status_changed");
    REQUIRE(events.size() == 1);
    const auto& p = events[0]["params"];
    CHECK(str(p["message"]) == "m");
    CHECK(str(p["agent_id"]) == "X");
    CHECK(json::stringify(p["payload"]) == R"({"k":1})");
    // Not an object: passed through all the same.
    f.call(a, "host.set_status", R"({"agent_id":"X","status":"running","payload":["a",2]})");
    events = f.events(h, "agent.status_changed");
    REQUIRE(events.size() == 1);
    CHECK(json::stringify(events[0]["params"]["payload"]) == R"(["a",2])");
    CHECK(str(events[0]["params"]["message"]) == "agent 'X' is running");
    // Neither given (or a null payload): a generated line and the agent after the change.
    f.call(a, "host.set_status", R"({"agent_id":"X","status":"paused","payload":null})");
    events = f.events(h, "agent.status_changed");
    REQUIRE(events.size() == 1);
    const auto& q = events[0]["params"];
    CHECK(str(q["message"]) == "agent 'X' is paused");
    CHECK(str(q["payload"]["id"]) == "X");
    CHECK(str(q["payload"]["status"]) == "paused");
    CHECK(q["payload"]["current_task"].IsNull());
    CHECK(q["payload"]["pid"].IsNull());
    CHECK_FALSE(q["payload"].HasMember("details"));
    // The agent itself shows the nulls too.
    auto agents_doc = f.call(a, "host.agents");
    const auto& agents = agents_doc["result"];
    CHECK(agents[0]["current_task"].IsNull());
    CHECK(agents[0]["pid"].IsNull());
  }
}
