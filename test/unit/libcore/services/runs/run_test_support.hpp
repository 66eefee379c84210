#pragma once

// Shared by the runs tests (run_service, run_methods, run_record, jsonl_run_store,
// trace_fanout): a Server with the run services on a ManualExecutor, in-process peers on
// loopback sinks, and a temporary state directory.

#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../../../test_support.hpp"
#include "car/runs/run_service.hpp"

namespace car::test {
// An inline namespace of its own: the host and runs helpers both define a Peer, and without it
// their inline members would collide in the one test binary (an ODR violation).
inline namespace runs_support {

using namespace car::runs;

// Named apart from uv_test_support.hpp's TempDir: two different classes car::test::TempDir in one
// binary break the one-definition rule (the linker keeps one destructor for both).
struct RunTempDir {
  RunTempDir() {
    static std::atomic<int> counter{0};
    path = std::filesystem::temp_directory_path() /
           ("carcore-runs-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" +
            random_hex(4));
    std::filesystem::create_directories(path);
  }
  ~RunTempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  RunTempDir(const RunTempDir&) = delete;
  RunTempDir& operator=(const RunTempDir&) = delete;
  std::string str() const { return path.string(); }
  std::filesystem::path path;
};
using TempDir = RunTempDir;

inline std::string frame_method(const json::Value& frame) {
  if (!frame.IsObject() || !frame.HasMember("method") || !frame["method"].IsString()) return {};
  return frame["method"].GetString();
}

// One in-process connection that sorts what it receives into replies (by id) and notifications
// (in arrival order).
struct Peer {
  Peer(Server& server, Executor& executor, SinkLimits limits = {})
      : sink(LoopbackSink::create(executor, limits)),
        connection(server.open_connection("run-test-peer", sink)) {}

  // Sends a request; returns its id.
  int send(const std::string& method, const std::string& params_json = "{}") {
    int id = next_id++;
    connection->receive(R"({"jsonrpc":"2.0","id":)" + std::to_string(id) + R"(,"method":")" +
                        method + R"(","params":)" + params_json + "}");
    return id;
  }

  // Moves newly written frames into replies/notes.
  void collect() {
    for (auto& text : sink->take_written()) {
      auto doc = parse_json(text);
      order.push_back(text);
      if (doc.IsObject() && doc.HasMember("id") && doc["id"].IsInt()) {
        replies[doc["id"].GetInt()] = text;
      } else {
        notes.push_back(text);
      }
    }
  }

  bool has_reply(int id) {
    collect();
    return replies.count(id) != 0;
  }

  json::Document reply(int id) {
    collect();
    REQUIRE_MESSAGE(replies.count(id) == 1, "no reply to request " << id);
    return parse_json(replies[id]);
  }

  // Notifications of `method` received so far (parsed), and forgets them when `take`.
  std::vector<std::string> notes_of(const std::string& method) {
    collect();
    std::vector<std::string> out;
    for (const auto& n : notes) {
      auto doc = parse_json(n);
      if (frame_method(doc) == method) out.push_back(n);
    }
    return out;
  }
  std::vector<std::string> events() { return notes_of("runs.trace.event"); }
  std::vector<std::string> gaps() { return notes_of("runs.trace.gap"); }
  void forget_notes() {
    collect();
    notes.clear();
  }

  std::shared_ptr<LoopbackSink> sink;
  std::shared_ptr<Connection> connection;
  int next_id = 1;
  std::map<int, std::string> replies;
  std::vector<std::string> notes;
  std::vector<std::string> order;  // every frame, in arrival order
};

struct RunFixture {
  explicit RunFixture(ServerConfig config = Fixture::disabled_auth(), RunConfig run_config = {},
                      std::string state_dir = {})
      : server(executor, std::move(config)),
        sessions(session::install_session_service(server, test_credentials())) {
    run_config.state_dir = state_dir.empty() ? dir.str() : state_dir;
    runs = install_run_services(server, std::move(run_config));
  }

  std::unique_ptr<Peer> peer(SinkLimits limits = {}) {
    return std::make_unique<Peer>(server, executor, limits);
  }

  // Sends a request, runs the executor until idle and returns the reply.
  json::Document call(Peer& p, const std::string& method, const std::string& params = "{}") {
    int id = p.send(method, params);
    executor.run_until_idle();
    return p.reply(id);
  }

  // runs.start for `agent`, returns the run id.
  std::string start(Peer& p, const std::string& agent = "a1", const std::string& extra = "") {
    auto r = call(p, "runs.start",
                  R"({"intent":"test","agent_id":")" + agent + "\"" + extra + "}");
    REQUIRE_MESSAGE(r.HasMember("result"), "runs.start failed: " << json::stringify(r));
    return r["result"]["run_id"].GetString();
  }

  json::Document record(Peer& p, const std::string& run_id, int n = 1,
                        const std::string& turn = R"({"prompt":"p","output":"o"})") {
    std::string turns = "[";
    for (int i = 0; i < n; ++i) turns += (i ? "," : "") + turn;
    turns += "]";
    return call(p, "runs.record_turns", R"({"run_id":")" + run_id + R"(","turns":)" + turns + "}");
  }

  void auth(Peer& p, const std::string& params) {
    auto r = call(p, "session.auth", params);
    REQUIRE_MESSAGE(r.HasMember("result"), "session.auth failed: " << json::stringify(r));
  }

  TempDir dir;
  ManualExecutor executor;
  Server server;
  std::shared_ptr<session::SessionService> sessions;
  std::shared_ptr<RunService> runs;
};

inline std::uint64_t cursor_of(const std::string& event_text) {
  auto doc = parse_json(event_text);
  return doc["params"]["cursor"].GetUint64();
}

inline std::string record_kind_of(const std::string& event_text) {
  auto doc = parse_json(event_text);
  return doc["params"]["record"]["record"].GetString();
}

}  // namespace runs_support
}  // namespace car::test
