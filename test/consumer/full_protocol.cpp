// A program that takes all of carcore (pkg-config carcore, or the `carcore_dep` of the subproject):
// the session, host and run services on one server, driven in-process through the test doubles.
// It authenticates, shakes hands, lists agents and starts a run, and checks every reply.
#include <cstdio>
#include <filesystem>
#include <string>

#include <car/carcore.hpp>
#include <car/testing/loopback_sink.hpp>
#include <car/testing/manual_executor.hpp>

namespace {

bool expect(const std::string& frame, const char* needle) {
  if (frame.find(needle) != std::string::npos) return true;
  std::fprintf(stderr, "expected %s in %s\n", needle, frame.c_str());
  return false;
}

}  // namespace

int main() {
  auto state_dir = std::filesystem::temp_directory_path() / ("carcore-consumer-" + car::random_hex(6));
  car::testing::ManualExecutor executor;
  car::Server server(executor, car::ServerConfig{});
  car::session::AuthConfig auth;
  auth.token = "consumer-token";
  auto sessions = car::session::install_session_service(server, auth);
  auto host = car::host::install_host_services(server);
  car::runs::RunConfig run_config;
  run_config.state_dir = state_dir.string();
  auto runs = car::runs::install_run_services(server, run_config);

  auto sink = car::testing::LoopbackSink::create(executor);
  auto connection = server.open_connection("consumer", sink);
  const char* requests[] = {
      R"({"jsonrpc":"2.0","id":1,"method":"session.auth","params":{"token":"consumer-token"}})",
      R"({"jsonrpc":"2.0","id":2,"method":"server.handshake","params":{"protocol_version":2}})",
      R"({"jsonrpc":"2.0","id":3,"method":"host.agents","params":{}})",
      R"({"jsonrpc":"2.0","id":4,"method":"runs.start","params":{"agent_id":"consumer","intent":"check"}})",
  };
  const char* expected[] = {R"("ok":true)", R"("protocol_version":2)", R"("result":[])", R"("run_id":")"};
  bool ok = true;
  for (int i = 0; i < 4; ++i) {
    connection->receive(requests[i]);
    executor.run_until_idle();
    auto frames = sink->take_written();
    ok = frames.size() == 1 && expect(frames[0], expected[i]) && ok;
    if (frames.size() == 1) std::puts(frames[0].c_str());
  }
  connection->end();
  runs->shutdown([] {});
  executor.run_until_idle();
  std::filesystem::remove_all(state_dir);
  return ok ? 0 : 1;
}
