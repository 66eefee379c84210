// Fuzzes the JSON-RPC engine end to end without I/O: parse, envelope rules, batches, auth gate,
// routing, params validation and replies, through a loopback sink on a manual executor.
// Invariants: never crashes, and every frame the server writes is valid JSON.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "car/carcore.hpp"
#include "car/testing/loopback_sink.hpp"
#include "car/testing/manual_executor.hpp"

namespace {

void check_json(const std::string& frame) {
  car::json::Document doc;
  doc.Parse(frame.c_str(), frame.size());
  if (doc.HasParseError()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static car::testing::ManualExecutor executor;
  car::ServerConfig config;
  config.require_auth = size % 2 == 0;  // exercise both the auth gate and open dispatch
  config.max_inflight = 4;
  config.max_json_depth = 32;
  car::Server server(executor, config);
  car::session::AuthConfig auth;
  auth.token = "t";
  auto sessions = car::session::install_session_service(server, auth);
  server.methods().add("echo", {car::optional("value", car::ParamType::any)},
                       [](const car::Request& req, car::Reply reply) {
                         const auto* v = car::param::member(req.params(), "value");
                         reply.ok(v ? car::json::stringify(*v) : "null");
                       });
  auto sink = car::testing::LoopbackSink::create(executor);
  auto connection = server.open_connection("fuzz", sink);
  // Treat NUL bytes as message separators so one input can hold a conversation.
  std::string_view input(reinterpret_cast<const char*>(data), size);
  while (!input.empty()) {
    auto cut = input.find('\0');
    connection->receive(input.substr(0, cut));
    executor.run_until_idle();
    if (cut == std::string_view::npos) break;
    input.remove_prefix(cut + 1);
  }
  connection->end();
  executor.run_until_idle();
  for (const auto& frame : sink->written()) check_json(frame);
  return 0;
}
