// Connection, the JSON-RPC engine (connection.cpp): parse errors, envelope validation, batches,
// routing, params validation, concurrency, the in-flight cap, the handshake gate, the gate hook and
// handler failures (PROTOCOL.md §2).
#include <thread>

#include "../../test_support.hpp"

using namespace car;
using namespace car::test;
using namespace std::chrono_literals;

namespace {

// Registers a few methods used by the tests below.
void add_test_methods(Server& server, std::vector<Reply>* parked = nullptr) {
  server.methods().add("echo", {optional("value", ParamType::any)},
                       [](const Request& req, Reply reply) {
                         const auto* v = param::member(req.params(), "value");
                         reply.ok(v ? json::stringify(*v) : "null");
                       });
  server.methods().add("typed",
                       {required("name", ParamType::non_empty_string),
                        optional("limit", ParamType::integer), optional("flag", ParamType::boolean)},
                       [](const Request&, Reply reply) { reply.ok("true"); });
  server.methods().add("park", {}, [parked](const Request&, Reply reply) {
    if (parked) parked->push_back(reply);
  });
  server.methods().add("throws", {}, [](const Request&, Reply) -> void {
    throw std::runtime_error("boom");
  });
  server.methods().add("drops", {}, [](const Request&, Reply) {});
}

}  // namespace

TEST_SUITE("connection") {
  TEST_CASE("unparseable text gets -32700 with id null and the connection stays usable") {
    Fixture f;
    add_test_methods(f.server);
    auto r = f.call("{not json");
    CHECK(error_code(r) == -32700);
    CHECK(r["id"].IsNull());
    CHECK(error_message(r).rfind("parse error", 0) == 0);
    auto ok = f.call(R"({"jsonrpc":"2.0","id":1,"method":"echo","params":{"value":5}})");
    CHECK(ok["result"].GetInt() == 5);
  }

  TEST_CASE("invalid UTF-8 and deep nesting are parse errors, not crashes") {
    Fixture f;
    add_test_methods(f.server);
    CHECK(error_code(f.call("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}")) == -32700);
    std::string deep(100000, '[');
    auto r = f.call(deep);
    CHECK(error_code(r) == -32700);
    CHECK(error_message(r).find("nesting") != std::string::npos);
    std::string ok_depth = std::string(200, '[') + std::string(200, ']');
    // 200 levels parse; an array of arrays is a batch whose one member is invalid.
    auto frames = f.exchange(ok_depth);
    REQUIRE(frames.size() == 1);
    CHECK(frames[0].find("-32600") != std::string::npos);
  }

  TEST_CASE("an unpaired surrogate escape is valid JSON: it becomes U+FFFD, the request runs") {
    // A string cut inside a surrogate pair (JavaScript's slice, then JSON.stringify).
    Fixture f;
    add_test_methods(f.server);
    auto r = f.call(R"({"jsonrpc":"2.0","id":3,"method":"echo","params":{"value":"a\ud83d"}})");
    CHECK(r["id"].GetInt() == 3);
    CHECK(std::string(r["result"].GetString()) == "a\xEF\xBF\xBD");
    auto low = f.call(R"({"jsonrpc":"2.0","id":4,"method":"echo","params":{"value":"\uDC00\ud83d\ude00"}})");
    CHECK(std::string(low["result"].GetString()) == "\xEF\xBF\xBD\xF0\x9F\x98\x80");
  }

  TEST_CASE("ids are echoed with their type") {
    Fixture f;
    add_test_methods(f.server);
    auto s = f.call(R"({"jsonrpc":"2.0","id":"abc","method":"nope"})");
    CHECK(error_code(s) == -32601);
    CHECK(std::string(s["id"].GetString()) == "abc");
    CHECK(error_message(s) == "method not found: nope");
    auto i = f.call(R"({"jsonrpc":"2.0","id":9007199254740993,"method":"nope"})");
    REQUIRE(i["id"].IsInt64());
    CHECK(i["id"].GetInt64() == 9007199254740993LL);
    auto n = f.call(R"({"jsonrpc":"2.0","id":null,"method":"echo","params":{"value":1}})");
    CHECK(n["id"].IsNull());
    CHECK(n["result"].GetInt() == 1);
  }

  TEST_CASE("invalid requests get -32600") {
    Fixture f;
    add_test_methods(f.server);
    struct Case {
      const char* text;
      bool id_null;
    };
    for (const Case& c : {
             Case{R"({"jsonrpc":"1.0","id":1,"method":"echo"})", false},
             Case{R"({"id":1,"method":"echo"})", false},
             Case{R"({"jsonrpc":"2.0","id":1,"method":5})", false},
             Case{R"({"jsonrpc":"2.0","id":1.5,"method":"echo"})", true},
             Case{R"({"jsonrpc":"2.0","id":{},"method":"echo"})", true},
             Case{R"({"jsonrpc":"2.0","id":18446744073709551615,"method":"echo"})", true},
             Case{R"({"jsonrpc":"2.0","id":1,"method":"echo","params":3})", false},
             Case{R"({"jsonrpc":"2.0","method":"echo","params":"x"})", true},
             Case{R"(42)", true},
             Case{R"("text")", true},
         }) {
      CAPTURE(c.text);
      auto r = f.call(c.text);
      CHECK(error_code(r) == -32600);
      CHECK(error_message(r) == "invalid request");
      if (c.id_null) {
        CHECK(r["id"].IsNull());
      } else {
        CHECK(r["id"].GetInt() == 1);
      }
    }
  }

  TEST_CASE("params validation names the field") {
    Fixture f;
    add_test_methods(f.server);
    auto missing = f.call(R"({"jsonrpc":"2.0","id":1,"method":"typed","params":{}})");
    CHECK(error_code(missing) == -32602);
    CHECK(error_message(missing) == "invalid params: name is required");
    auto empty = f.call(R"({"jsonrpc":"2.0","id":1,"method":"typed","params":{"name":""}})");
    CHECK(error_message(empty) == "invalid params: name must be a non-empty string");
    auto bad_int =
        f.call(R"({"jsonrpc":"2.0","id":1,"method":"typed","params":{"name":"a","limit":"x"}})");
    CHECK(error_message(bad_int) == "invalid params: limit must be an integer");
    auto bad_bool =
        f.call(R"({"jsonrpc":"2.0","id":1,"method":"typed","params":{"name":"a","flag":1}})");
    CHECK(error_message(bad_bool) == "invalid params: flag must be a boolean");
    auto array = f.call(R"({"jsonrpc":"2.0","id":1,"method":"typed","params":["a"]})");
    CHECK(error_code(array) == -32602);
    auto unknown_ok = f.call(
        R"({"jsonrpc":"2.0","id":1,"method":"typed","params":{"name":"a","extra":[1,2]}})");
    CHECK(unknown_ok["result"].GetBool());
    auto null_optional =
        f.call(R"({"jsonrpc":"2.0","id":1,"method":"typed","params":{"name":"a","limit":null}})");
    CHECK(null_optional["result"].GetBool());
  }

  TEST_CASE("accepts_array_params lets one method take an array; others still refuse it") {
    Fixture f;
    add_test_methods(f.server);
    MethodOptions options;
    options.accepts_array_params = true;
    f.server.methods().add("listy", {required("name", ParamType::non_empty_string)},
                           [](const Request& req, Reply reply) {
                             reply.ok(req.params().IsArray()
                                          ? std::to_string(req.params().Size())
                                          : std::string("\"object\""));
                           },
                           options);
    // The array reaches the handler as is; the object ParamSpecs do not apply to it.
    auto array = f.call(R"({"jsonrpc":"2.0","id":1,"method":"listy","params":["a",{"b":1}]})");
    CHECK(array["result"].GetInt() == 2);
    auto empty = f.call(R"({"jsonrpc":"2.0","id":2,"method":"listy","params":[]})");
    CHECK(empty["result"].GetInt() == 0);
    // An object is still validated against the specs.
    auto missing = f.call(R"({"jsonrpc":"2.0","id":3,"method":"listy","params":{}})");
    CHECK(error_message(missing) == "invalid params: name is required");
    auto object = f.call(R"({"jsonrpc":"2.0","id":4,"method":"listy","params":{"name":"x"}})");
    CHECK(json::view(object["result"]) == "object");
    // A method without the option keeps answering arrays with -32602.
    auto refused = f.call(R"({"jsonrpc":"2.0","id":5,"method":"typed","params":["a"]})");
    CHECK(error_code(refused) == -32602);
    CHECK(error_message(refused) == "invalid params: params must be an object");
  }

  TEST_CASE("notifications are never answered, even on error") {
    Fixture f;
    add_test_methods(f.server);
    CHECK(f.exchange(R"({"jsonrpc":"2.0","method":"nope"})").empty());
    CHECK(f.exchange(R"({"jsonrpc":"2.0","method":"typed","params":{}})").empty());
    CHECK(f.exchange(R"({"jsonrpc":"2.0","method":"throws"})").empty());
    CHECK(f.exchange(R"({"jsonrpc":"2.0","method":"echo"})").empty());
  }

  TEST_CASE("batch rules") {
    Fixture f;
    add_test_methods(f.server);
    SUBCASE("empty batch is one -32600 object") {
      auto r = f.call("[]");
      CHECK(r.IsObject());
      CHECK(error_code(r) == -32600);
    }
    SUBCASE("request, notification and invalid member") {
      auto r = f.call(
          R"([{"jsonrpc":"2.0","id":1,"method":"echo","params":{"value":"a"}},)"
          R"({"jsonrpc":"2.0","method":"echo"},{"foo":1}])");
      REQUIRE(r.IsArray());
      REQUIRE(r.Size() == 2);
      int results = 0, errors = 0;
      for (const auto& e : r.GetArray()) {
        if (e.HasMember("result")) {
          ++results;
          CHECK(e["id"].GetInt() == 1);
        } else {
          ++errors;
          CHECK(e["error"]["code"].GetInt() == -32600);
          CHECK(e["id"].IsNull());
        }
      }
      CHECK(results == 1);
      CHECK(errors == 1);
    }
    SUBCASE("only notifications: no reply at all") {
      CHECK(f.exchange(R"([{"jsonrpc":"2.0","method":"echo"},{"jsonrpc":"2.0","method":"nope"}])")
                .empty());
    }
    SUBCASE("invalid member keeps its readable id") {
      auto r = f.call(R"([{"jsonrpc":"1.0","id":"x","method":"echo"}, 5])");
      REQUIRE(r.Size() == 2);
      CHECK(std::string(r[0]["id"].GetString()) == "x");
      CHECK(r[1]["id"].IsNull());
    }
    SUBCASE("the batch reply waits for its slowest member") {
      std::vector<Reply> parked;
      add_test_methods(f.server, &parked);
      auto frames = f.exchange(
          R"([{"jsonrpc":"2.0","id":1,"method":"park"},{"jsonrpc":"2.0","id":2,"method":"echo"}])");
      CHECK(frames.empty());
      REQUIRE(parked.size() == 1);
      parked[0].ok(R"("late")");
      f.executor.run_until_idle();
      auto out = f.client().sink->take_written();
      REQUIRE(out.size() == 1);
      auto r = parse_json(out[0]);
      REQUIRE(r.Size() == 2);
    }
  }

  TEST_CASE("requests run concurrently and replies may come out of order") {
    Fixture f;
    std::vector<Reply> parked;
    add_test_methods(f.server, &parked);
    CHECK(f.exchange(R"({"jsonrpc":"2.0","id":"a","method":"park"})").empty());
    CHECK(f.exchange(R"({"jsonrpc":"2.0","id":"b","method":"park"})").empty());
    // The connection keeps serving while both wait.
    CHECK(f.call(R"({"jsonrpc":"2.0","id":"c","method":"echo","params":{"value":3}})")["result"]
              .GetInt() == 3);
    CHECK(f.client().connection->inflight() == 2);
    // Complete b from another thread, then a.
    std::thread([&] { parked[1].ok(R"("B")"); }).join();
    parked[0].ok(R"("A")");
    parked[0].ok(R"("again")");  // ignored: first completion wins
    f.executor.run_until_idle();
    auto frames = f.client().sink->take_written();
    REQUIRE(frames.size() == 2);
    CHECK(std::string(parse_json(frames[0])["id"].GetString()) == "b");
    CHECK(std::string(parse_json(frames[1])["result"].GetString()) == "A");
    CHECK(f.client().connection->inflight() == 0);
  }

  TEST_CASE("the in-flight cap answers -32000 and does not run the request") {
    ServerConfig config = Fixture::disabled_auth();
    config.max_inflight = 2;
    Fixture f(config);
    std::vector<Reply> parked;
    add_test_methods(f.server, &parked);
    f.exchange(R"({"jsonrpc":"2.0","id":1,"method":"park"})");
    f.exchange(R"({"jsonrpc":"2.0","id":2,"method":"park"})");
    auto busy = f.call(R"({"jsonrpc":"2.0","id":3,"method":"park"})");
    CHECK(error_code(busy) == -32000);
    CHECK(error_message(busy) == "server busy: too many requests in flight");
    CHECK(parked.size() == 2);
    // Notifications do not count and are not refused.
    f.exchange(R"({"jsonrpc":"2.0","method":"park"})");
    CHECK(parked.size() == 3);
    parked[0].ok("1");
    f.executor.run_until_idle();
    f.client().sink->take_written();
    f.exchange(R"({"jsonrpc":"2.0","id":4,"method":"park"})");
    CHECK(parked.size() == 4);
  }

  TEST_CASE("a handler that throws answers -32603 with its message") {
    Fixture f;
    add_test_methods(f.server);
    auto r = f.call(R"({"jsonrpc":"2.0","id":1,"method":"throws"})");
    CHECK(error_code(r) == -32603);
    CHECK(error_message(r) == "boom");
  }

  TEST_CASE("a handler that drops its reply still gets the request answered") {
    Fixture f;
    add_test_methods(f.server);
    auto r = f.call(R"({"jsonrpc":"2.0","id":7,"method":"drops"})");
    CHECK(error_code(r) == -32603);
    CHECK(r["id"].GetInt() == 7);
    CHECK(f.client().connection->inflight() == 0);
  }

  TEST_CASE("after_queued runs after the reply is queued, so later frames follow it") {
    Fixture f;
    f.server.methods().add("subscribe", {}, [](const Request& req, Reply reply) {
      auto conn = req.connection_ptr();
      reply.ok(R"({"subscribed":true})", [conn] { conn->notify("event", R"({"n":1})"); });
    });
    auto frames = f.exchange(R"({"jsonrpc":"2.0","id":1,"method":"subscribe"})");
    REQUIRE(frames.size() == 2);
    CHECK(frames[0].find("subscribed") != std::string::npos);
    CHECK(frames[1].find("\"method\":\"event\"") != std::string::npos);
    // Inside a batch the event follows the whole batch reply.
    frames = f.exchange(R"([{"jsonrpc":"2.0","id":1,"method":"subscribe"}])");
    REQUIRE(frames.size() == 2);
    CHECK(frames[0][0] == '[');
  }

  TEST_CASE("a reply is queued past the sink's bounds: every request is answered") {
    ManualExecutor ex;
    ServerConfig config = Fixture::disabled_auth();
    Server server(ex, config);
    add_test_methods(server);
    SinkLimits limits;
    limits.max_frames = 1;
    limits.max_bytes = 16;
    Client c(server, ex, limits);
    c.sink->set_stalled(true);
    c.send(R"({"jsonrpc":"2.0","id":1,"method":"echo"})");
    ex.run_until_idle();
    c.send(R"([{"jsonrpc":"2.0","id":2,"method":"echo"},{"jsonrpc":"2.0","id":3,"method":"echo"}])");
    ex.run_until_idle();
    CHECK_FALSE(c.connection->closed());
    CHECK(c.connection->notify("event", "{}") == SinkError::full);  // not a reply: refused
    c.sink->set_stalled(false);
    ex.run_until_idle();
    auto frames = c.sink->written();
    REQUIRE(frames.size() == 2);
    CHECK(frames[0].find("\"id\":1") != std::string::npos);
    CHECK(frames[1].find("\"id\":3") != std::string::npos);
  }

  TEST_CASE("the gate runs before lookup and can refuse or admit later") {
    struct TestGate : MethodGate {
      bool gates(std::string_view m) const override { return m.rfind("risky", 0) == 0; }
      void admit(Connection&, std::string_view, const json::Value& params,
                 Decision decide) override {
        seen_params.push_back(json::stringify(params));
        pending.push_back(std::move(decide));
      }
      std::vector<Decision> pending;
      std::vector<std::string> seen_params;
    };
    Fixture f;
    add_test_methods(f.server);
    auto gate = std::make_shared<TestGate>();
    f.server.set_method_gate(gate);
    f.server.methods().add("risky.op", {required("x", ParamType::integer)},
                           [](const Request& req, Reply reply) {
                             reply.ok(std::to_string(*param::integer(req.params(), "x") * 2));
                           });
    CHECK(f.exchange(R"({"jsonrpc":"2.0","id":1,"method":"risky.op","params":{"x":21}})").empty());
    CHECK(f.exchange(R"({"jsonrpc":"2.0","id":2,"method":"risky.unknown"})").empty());
    CHECK(f.exchange(R"({"jsonrpc":"2.0","id":3,"method":"risky.op","params":{"x":1}})").empty());
    REQUIRE(gate->pending.size() == 3);
    CHECK(gate->seen_params[0] == R"({"x":21})");
    CHECK(f.client().connection->inflight() == 3);  // waiting at the gate counts
    gate->pending[0](std::nullopt);
    gate->pending[1](std::nullopt);
    gate->pending[2](Error{ErrorCode::approval_denied, "approval denied"});
    f.executor.run_until_idle();
    auto frames = f.client().sink->take_written();
    REQUIRE(frames.size() == 3);
    std::map<int, std::string> by_id;
    for (auto& fr : frames) {
      auto d = parse_json(fr);
      by_id[d["id"].GetInt()] = fr;
    }
    CHECK(by_id[1].find("\"result\":42") != std::string::npos);
    CHECK(by_id[2].find("-32601") != std::string::npos);
    CHECK(by_id[3].find("approval denied") != std::string::npos);
  }

  TEST_CASE("the handshake gate: -32005 naming the method, before the approval gate and params") {
    struct CountingGate : MethodGate {
      bool gates(std::string_view) const override { return true; }
      void admit(Connection&, std::string_view, const json::Value&, Decision decide) override {
        ++admitted;
        decide(std::nullopt);
      }
      int admitted = 0;
    };
    ServerConfig config = Fixture::disabled_auth();
    config.require_handshake = true;
    Fixture f(config);
    auto gate = std::make_shared<CountingGate>();
    f.server.set_method_gate(gate);
    int runs = 0;
    MethodOptions marked;
    marked.requires_handshake = true;
    f.server.methods().add("watch.sub", {required("topic", ParamType::non_empty_string)},
                           [&runs](const Request&, Reply reply) {
                             ++runs;
                             reply.ok("true");
                           },
                           marked);
    f.server.methods().add("plain", {}, [](const Request&, Reply reply) { reply.ok("1"); });
    // Missing and ill-typed params: still -32005, the params are not even looked at.
    for (const char* params : {"", R"(,"params":{})", R"(,"params":{"topic":5})",
                               R"(,"params":[1])", R"(,"params":{"topic":"t"})"}) {
      CAPTURE(params);
      auto r = f.call(std::string(R"({"jsonrpc":"2.0","id":1,"method":"watch.sub")") + params + "}");
      CHECK(error_code(r) == -32005);
      CHECK(error_message(r) == "protocol handshake required: watch.sub needs server.handshake");
    }
    CHECK(runs == 0);
    CHECK(gate->admitted == 0);  // refused before an approval was asked for
    CHECK(f.client().connection->inflight() == 0);
    CHECK_FALSE(f.client().connection->closed());
    // Unmarked methods are not gated.
    CHECK(f.call(R"({"jsonrpc":"2.0","id":2,"method":"plain"})")["result"].GetInt() == 1);
    // Negotiated: params are validated as usual and the method runs.
    f.client().connection->session().set_handshake_done();
    CHECK(error_code(f.call(R"({"jsonrpc":"2.0","id":3,"method":"watch.sub"})")) == -32602);
    CHECK(f.call(R"({"jsonrpc":"2.0","id":4,"method":"watch.sub","params":{"topic":"t"}})")
              ["result"].GetBool());
    CHECK(runs == 1);
  }

  TEST_CASE("without require_handshake a marked method runs on an unnegotiated connection") {
    Fixture f;
    MethodOptions marked;
    marked.requires_handshake = true;
    f.server.methods().add("watch.sub", {}, [](const Request&, Reply r) { r.ok("7"); }, marked);
    CHECK(f.call(R"({"jsonrpc":"2.0","id":1,"method":"watch.sub"})")["result"].GetInt() == 7);
  }

  TEST_CASE("a message above the maximum is refused before parsing") {
    ServerConfig config = Fixture::disabled_auth();
    config.max_message = 64;
    Fixture f(config);
    add_test_methods(f.server);
    auto r = f.call(R"({"jsonrpc":"2.0","id":1,"method":"echo","params":{"value":")" +
                    std::string(100, 'x') + "\"}}");
    CHECK(error_code(r) == -32700);
  }
}
