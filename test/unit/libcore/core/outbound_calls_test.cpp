// Server→client calls: cb-N ids, replies, timeouts, cancellation, close (PROTOCOL.md §6).
#include "../../test_support.hpp"

using namespace car;
using namespace car::test;
using namespace std::chrono_literals;

TEST_SUITE("outbound_calls") {
  TEST_CASE("ids are cb-1, cb-2 per connection and replies complete the right call") {
    Fixture f;
    std::vector<CallOutcome> outcomes;
    auto& conn = *f.client().connection;
    auto id1 = conn.call("tools.execute", R"({"n":1})", 1000ms,
                         [&](CallOutcome o) { outcomes.push_back(std::move(o)); });
    auto id2 = conn.call("tools.execute", R"({"n":2})", 1000ms,
                         [&](CallOutcome o) { outcomes.push_back(std::move(o)); });
    REQUIRE(id1);
    REQUIRE(id2);
    CHECK(*id1 == "cb-1");
    CHECK(*id2 == "cb-2");
    f.executor.run_until_idle();
    auto frames = f.client().sink->take_written();
    REQUIRE(frames.size() == 2);
    auto req = parse_json(frames[0]);
    CHECK(std::string(req["id"].GetString()) == "cb-1");
    CHECK(std::string(req["method"].GetString()) == "tools.execute");
    CHECK(req["params"]["n"].GetInt() == 1);

    // An unknown id is ignored; a reply completes exactly its call.
    CHECK(f.exchange(R"({"jsonrpc":"2.0","id":"cb-99","result":1})").empty());
    CHECK(f.exchange(R"({"jsonrpc":"2.0","id":"cb-2","result":{"ok":true}})").empty());
    REQUIRE(outcomes.size() == 1);
    CHECK_FALSE(outcomes[0].error.has_value());
    CHECK(outcomes[0].result_json == R"({"ok":true})");
    f.exchange(R"({"jsonrpc":"2.0","id":"cb-1","error":{"code":-32000,"message":"nope","data":[1]}})");
    REQUIRE(outcomes.size() == 2);
    REQUIRE(outcomes[1].error.has_value());
    CHECK(outcomes[1].error->code == -32000);
    CHECK(outcomes[1].error->message == "nope");
    CHECK(outcomes[1].error->data_json == "[1]");
    // A duplicate reply is ignored.
    f.exchange(R"({"jsonrpc":"2.0","id":"cb-1","result":1})");
    CHECK(outcomes.size() == 2);
  }

  TEST_CASE("a call times out with -32004 and a late reply is ignored") {
    Fixture f;
    std::vector<CallOutcome> outcomes;
    f.client().connection->call("slow", "{}", 200ms,
                                [&](CallOutcome o) { outcomes.push_back(std::move(o)); });
    f.executor.advance(199ms);
    CHECK(outcomes.empty());
    f.executor.advance(2ms);
    REQUIRE(outcomes.size() == 1);
    CHECK(outcomes[0].error->code == -32004);
    f.exchange(R"({"jsonrpc":"2.0","id":"cb-1","result":1})");
    CHECK(outcomes.size() == 1);
  }

  TEST_CASE("cancel completes once with the given error; the timer is gone") {
    Fixture f;
    int calls = 0;
    auto id = f.client().connection->call("x", "{}", 200ms, [&](CallOutcome o) {
      ++calls;
      CHECK(o.error->message == "cancelled");
    });
    CHECK(f.client().connection->cancel_call(*id, Error::internal("cancelled")));
    CHECK_FALSE(f.client().connection->cancel_call(*id, Error::internal("cancelled")));
    f.executor.advance(500ms);
    CHECK(calls == 1);
  }

  TEST_CASE("closing the connection fails every pending call once") {
    Fixture f;
    int failed = 0;
    for (int i = 0; i < 3; ++i) {
      f.client().connection->call("x", "{}", 10000ms, [&](CallOutcome o) {
        if (o.error) ++failed;
      });
    }
    f.client().sink->simulate_peer_closed();
    f.executor.run_until_idle();
    CHECK(failed == 3);
    f.executor.advance(20000ms);
    CHECK(failed == 3);
    // After close a call cannot be sent: the callback never runs.
    bool ran = false;
    CHECK_FALSE(f.client().connection->call("x", "{}", 10ms, [&](CallOutcome) { ran = true; }));
    f.executor.advance(100ms);
    CHECK_FALSE(ran);
  }

  TEST_CASE("teardown runs the steps of every service in the order of PROTOCOL.md §3") {
    Fixture f;
    std::vector<std::string> order;
    f.server.add_teardown_step(runs::teardown_order::run_grace, [&](Connection&) { order.push_back("grace"); });
    f.server.add_teardown_step(host::teardown_order::host_events, [&](Connection& c) {
      CHECK(c.closed());
      CHECK(f.server.find_connection(c.client_id()) == nullptr);
      order.push_back("host");
    });
    f.server.add_teardown_step(host::teardown_order::tool_invocations, [&](Connection&) { order.push_back("tools"); });
    f.server.add_teardown_step(runs::teardown_order::run_subscriptions, [&](Connection&) { order.push_back("runs"); });
    f.client().connection->call("x", "{}", 1000ms, [&](CallOutcome) { order.push_back("calls"); });
    f.client().connection->end();
    f.client().connection->end();  // once only
    CHECK(order == std::vector<std::string>{"host", "runs", "calls", "tools", "grace"});
  }
}
