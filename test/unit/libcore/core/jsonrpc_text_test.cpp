// The JSON-RPC envelopes of jsonrpc_text.hpp (PROTOCOL.md §2): exact bytes, and each one parses as
// the JSON-RPC message it claims to be.
#include "../../test_support.hpp"

using namespace car;
using namespace car::test;

TEST_SUITE("jsonrpc_text") {
  TEST_CASE("result and error envelopes splice the id and the result as given") {
    CHECK(jsonrpc::result("7", R"({"ok":true})") ==
          R"({"jsonrpc":"2.0","id":7,"result":{"ok":true}})");
    CHECK(jsonrpc::result(R"("a")", "[]") == R"({"jsonrpc":"2.0","id":"a","result":[]})");
    Error plain{ErrorCode::invalid_params, "invalid params: \"x\" must be a string"};
    CHECK(jsonrpc::error("null", plain) ==
          R"({"jsonrpc":"2.0","id":null,"error":{"code":-32602,)"
          R"("message":"invalid params: \"x\" must be a string"}})");
    Error with_data{-32003, "approval denied"};
    with_data.data_json = R"({"approval_id":"a-1"})";
    auto doc = parse_json(jsonrpc::error("3", with_data));
    CHECK(doc["error"]["code"].GetInt() == -32003);
    CHECK(std::string(doc["error"]["data"]["approval_id"].GetString()) == "a-1");
  }

  TEST_CASE("notification and request envelopes quote the method and the id") {
    auto note = jsonrpc::notification("host.event", R"({"kind":"x"})");
    CHECK(note == R"({"jsonrpc":"2.0","method":"host.event","params":{"kind":"x"}})");
    std::string prefix = jsonrpc::notification_prefix("host.event");
    REQUIRE(note.size() > prefix.size());
    CHECK(note.compare(0, prefix.size(), prefix) == 0);
    CHECK(note.substr(prefix.size(), note.size() - prefix.size() - 1) == R"({"kind":"x"})");
    auto call = jsonrpc::request("cb-1", "tools.execute", R"({"name":"t"})");
    CHECK(call ==
          R"({"jsonrpc":"2.0","id":"cb-1","method":"tools.execute","params":{"name":"t"}})");
    auto odd = parse_json(jsonrpc::request("id\"1", "m\\x", "{}"));
    CHECK(std::string(odd["id"].GetString()) == "id\"1");
    CHECK(std::string(odd["method"].GetString()) == "m\\x");
  }
}
