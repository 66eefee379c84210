// Fuzzes the whole in-process server — session, host, approvals, tools and runs services on one
// Server, up to four connections over loopback sinks on a manual executor — with sequences of
// JSON-RPC calls the fuzzer chooses: auth (good, wrong, host, agent), handshakes, agents, events,
// approvals and their gate, tool hosts and invocations, runs and their subscriptions, closes,
// stalled or failing sinks, garbage and the passing of time.
//
// Parser fuzzers find crashes; this one looks for logic bugs. After every step it reads what each
// connection was sent and checks:
//   - every frame is JSON; every reply answers a request this connection sent and is still
//     waiting for (no reply duplicated or invented);
//   - run-trace events of a subscription follow its snapshot without a hole that no
//     runs.trace.gap announced, and nothing follows an `ended`;
//   - host events of a host subscription arrive with contiguous sequence numbers after the
//     snapshot's event_sequence (host subscribers are disconnected, never skipped);
//   - no sink holds more than its bounds allow.
// At the end every timer is let expire: each request of a connection that is still open must
// have had exactly one reply (no reply lost).
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "car/carcore.hpp"
#include "car/testing/loopback_sink.hpp"
#include "car/testing/manual_executor.hpp"

#include <fmt/format.h>

namespace {

using namespace std::chrono_literals;

[[noreturn]] void violated(const std::string& what) {
  fprintf(stderr, "scenario invariant violated: %s\n", what.c_str());
  std::abort();
}

// Reads the fuzzer's bytes as choices; past the end every choice is 0.
class Choices {
 public:
  Choices(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  bool done() const { return pos_ >= size_; }
  std::uint8_t byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  std::size_t below(std::size_t n) { return n == 0 ? 0 : byte() % n; }
  template <class T>
  const T& pick(const std::vector<T>& items) { return items[below(items.size())]; }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

// What a subscriber has seen of one run.
struct TraceView {
  bool pending = true;  // a subscribe or unsubscribe is on its way: events may belong to the old one
  std::int64_t cursor = 0;
  bool ended = false;
};

struct Peer {
  std::shared_ptr<car::testing::LoopbackSink> sink;
  std::shared_ptr<car::Connection> connection;
  std::set<std::string> waiting;            // ids of requests sent and not yet answered
  std::map<std::string, std::string> kind;  // id -> method, for the replies that teach us ids
  std::vector<std::string> tool_calls;      // ids of tools.execute calls this peer was sent
  std::map<std::string, TraceView> traces;  // run_id -> what its subscription has seen
  bool host_subscribe_pending = false;
  std::optional<std::int64_t> host_sequence;  // last host event sequence seen while subscribed
  std::size_t garbage_sent = 0;               // replies with id null this peer may receive
  bool ended = false;                         // we closed it, or its sink ended
};

const std::vector<std::string> agent_ids = {"a1", "a2", "ag", "name:x"};
const std::vector<std::string> tool_names = {"echo", "ping", "slow"};
const std::vector<std::string> statuses = {"idle", "running", "paused", "bogus"};

class Scenario {
 public:
  explicit Scenario(const std::string& state_dir) {
    car::ServerConfig config;
    config.require_auth = true;
    config.max_inflight = 8;
    config.max_json_depth = 32;
    server_ = std::make_unique<car::Server>(executor_, config);
    car::session::AuthConfig auth;
    auth.token = "t";
    auth.host_token = "h";
    auth.agent_tokens["ag"] = "at";
    sessions_ = car::session::install_session_service(*server_, auth);
    car::host::HostConfig host;
    host.gate.methods = {"mail.send"};
    host.gate.timeout = 60s;
    host.tool_timeout = 30s;
    host_ = car::host::install_host_services(*server_, host);
    car::runs::RunConfig runs;
    runs.state_dir = state_dir;
    runs.grace = 50ms;
    runs.subscriber_queue = 4;  // small, so drops and gap notices happen
    runs_ = car::runs::install_run_services(*server_, runs);
  }

  ~Scenario() {
    for (auto& peer : peers_) {
      if (peer.connection) peer.connection->end();
    }
    executor_.run_until_idle();
  }

  void step(Choices& in) {
    auto& peer = peers_[in.below(peers_.size())];
    if (!peer.connection || peer.ended) {
      open(peer, in);
      return;
    }
    switch (in.below(24)) {
      case 0: {
        static const std::vector<std::string> creds = {
            R"({"token":"t"})", R"({"token":"t","agent_id":"a1"})", R"({"host_token":"h"})",
            R"({"token":"at","agent_id":"ag"})", R"({"token":"wrong"})", R"({})"};
        call(peer, "session.auth", in.pick(creds));
        break;
      }
      case 1: call(peer, "server.handshake", in.below(4) ? R"({"protocol_version":2})" : "{}"); break;
      case 2:
        call(peer, "host.register_agent",
             fmt::format(R"({{"id":"{}","name":"n","kind":"k"}})", in.pick(agent_ids)));
        break;
      case 3: {
        const auto& agent = in.pick(agent_ids);
        const auto& status = in.pick(statuses);
        call(peer, "host.set_status",
             fmt::format(R"({{"agent_id":"{}","status":"{}","payload":{{"k":{}}}}})", agent, status,
                         in.byte()));
        break;
      }
      case 4:
        call(peer, "host.notify",
             fmt::format(R"({{"message":"{}"}})", std::string(in.byte() * 16, 'm')));
        break;
      case 5:
        peer.host_subscribe_pending = true;
        peer.host_sequence.reset();
        call(peer, "host.subscribe", "{}");
        break;
      case 6:
        peer.host_subscribe_pending = true;  // events already queued may still arrive
        peer.host_sequence.reset();
        call(peer, "host.unsubscribe", "{}");
        break;
      case 7:
        call(peer, "host.request_approval",
             fmt::format(R"({{"agent_id":"{}","title":"t"}})", in.pick(agent_ids)));
        break;
      case 8: call(peer, "mail.send", R"({"to":"x"})"); break;  // gated
      case 9:
        if (!approvals_.empty()) {
          const auto& approval = in.pick(approvals_);
          call(peer, "host.resolve_approval",
               fmt::format(R"({{"approval_id":"{}","approved":{}}})", approval,
                           in.below(2) ? "true" : "false"));
        }
        break;
      case 10: {
        bool array_form = in.below(2) != 0;
        const auto& name = in.pick(tool_names);
        call(peer, "tools.register",
             array_form ? fmt::format(R"([{{"name":"{}"}}])", name)
                        : fmt::format(R"({{"tools":["{}"]}})", name));
        break;
      }
      case 11: call(peer, "tools.unregister", fmt::format(R"({{"name":"{}"}})", in.pick(tool_names))); break;
      case 12: call(peer, "tools.list", "{}"); break;
      case 13: {
        const auto& name = in.pick(tool_names);
        call(peer, "tools.invoke",
             fmt::format(R"({{"tool":"{}","timeout_ms":{}}})", name, 100 + in.byte() * 100));
        break;
      }
      case 14: answer_tool_call(peer, in); break;
      case 15: {
        std::string key = in.below(2) ? fmt::format(R"(,"idempotency_key":"k{}")", in.below(4)) : "";
        const auto& agent = in.pick(agent_ids);
        call(peer, "runs.start", fmt::format(R"({{"intent":"i","agent_id":"{}"{}}})", agent, key));
        break;
      }
      case 16:
        if (!runs_known_.empty()) {
          const auto& run = in.pick(runs_known_);
          std::string turns;
          std::size_t count = 1 + in.below(6);
          for (std::size_t i = 0; i < count; ++i) {
            if (i) turns += ',';
            turns += fmt::format(R"({{"prompt":"{}"}})", std::string(in.byte(), 'p'));
          }
          call(peer, "runs.record_turns", fmt::format(R"({{"run_id":"{}","turns":[{}]}})", run, turns));
        }
        break;
      case 17:
        if (!runs_known_.empty()) {
          call(peer, "runs.complete",
               fmt::format(R"({{"run_id":"{}","outcome":{{"status":"ok"}}}})", in.pick(runs_known_)));
        }
        break;
      case 18:
        if (!runs_known_.empty()) {
          const auto& run = in.pick(runs_known_);
          const char* method = in.below(4) ? "runs.subscribe" : "runs.unsubscribe";
          peer.traces[run].pending = true;
          call(peer, method, fmt::format(R"({{"run_id":"{}"}})", run));
        }
        break;
      case 19:
        if (!runs_known_.empty()) {
          const auto& run = in.pick(runs_known_);
          call(peer, in.below(2) ? "runs.get_trace" : "runs.stats",
               fmt::format(R"({{"run_id":"{}"}})", run));
        } else {
          call(peer, "runs.list", fmt::format(R"({{"agent_id":"{}"}})", in.pick(agent_ids)));
        }
        break;
      case 20: {
        static const std::vector<std::string> junk = {"{", "[]", "[1,2]", R"({"jsonrpc":"2.0"})",
                                                      "\"x\"", "{\"a\":1}\x01"};
        peer.garbage_sent += 2;  // a batch of junk answers each member; at most 2 here
        peer.connection->receive(in.pick(junk));
        break;
      }
      case 21: executor_.advance(std::chrono::milliseconds(in.byte() * 250)); break;
      case 22:
        switch (in.below(4)) {
          case 0: peer.sink->set_stalled(true); break;
          case 1: peer.sink->set_stalled(false); break;
          case 2: peer.sink->fail_next_write(); break;
          default: peer.sink->simulate_peer_closed(); break;
        }
        break;
      default:
        peer.connection->end();
        peer.ended = true;
        break;
    }
    collect_all();  // runs the loop until idle first
  }

  // Lets every timer expire, then checks that no open connection still waits for a reply.
  void finish() {
    for (auto& peer : peers_) {
      if (peer.sink) peer.sink->set_stalled(false);
    }
    for (int i = 0; i < 8; ++i) {
      executor_.advance(30s);
      collect_all();
    }
    for (auto& peer : peers_) {
      if (!peer.connection || peer.ended || peer.connection->closed()) continue;
      if (!peer.waiting.empty()) {
        violated(fmt::format("{} request(s) never answered, e.g. id {} ({})", peer.waiting.size(),
                             *peer.waiting.begin(), peer.kind[*peer.waiting.begin()]));
      }
    }
  }

 private:
  void open(Peer& peer, Choices& in) {
    car::SinkLimits limits;
    if (in.below(4) == 0) {  // a tight sink: the bounds and their failure paths
      limits.max_frames = 8;
      limits.max_bytes = 4096;
    }
    peer = Peer{};
    peer.sink = car::testing::LoopbackSink::create(executor_, limits);
    peer.connection = server_->open_connection(fmt::format("peer-{}", ++opened_), peer.sink);
    executor_.run_until_idle();
  }

  void call(Peer& peer, std::string_view method, const std::string& params) {
    std::string id = fmt::format("r{}", ++next_id_);
    peer.waiting.insert(id);
    peer.kind[id] = std::string(method);
    peer.connection->receive(fmt::format(R"({{"jsonrpc":"2.0","id":"{}","method":"{}","params":{}}})",
                                         id, method, params));
  }

  void answer_tool_call(Peer& peer, Choices& in) {
    if (peer.tool_calls.empty()) return;
    std::size_t i = in.below(peer.tool_calls.size());
    std::string id = peer.tool_calls[i];
    peer.tool_calls.erase(peer.tool_calls.begin() + static_cast<std::ptrdiff_t>(i));
    peer.connection->receive(
        in.below(3) ? fmt::format(R"({{"jsonrpc":"2.0","id":"{}","result":{{"ok":true}}}})", id)
                    : fmt::format(R"({{"jsonrpc":"2.0","id":"{}","error":{{"code":-1,"message":"no"}}}})", id));
  }

  void collect_all() {
    executor_.run_until_idle();
    for (auto& peer : peers_) {
      if (!peer.sink) continue;
      for (const auto& frame : peer.sink->take_written()) read_frame(peer, frame);
      auto stats = peer.sink->stats();
      const auto& limits = peer.sink->limits();
      // Replies are queued past the bounds (FrameSink::send_reply), one per request still owed
      // to this peer at most; everything else must fit.
      const std::size_t replies_owed = peer.waiting.size() + peer.garbage_sent;
      if (stats.queued_frames > limits.max_frames + replies_owed ||
          stats.queued_bytes >
              limits.max_bytes + (1 + replies_owed) * server_->config().max_message) {
        violated(fmt::format("sink holds {} frames / {} bytes past its bounds", stats.queued_frames,
                             stats.queued_bytes));
      }
      if (peer.sink->transport_end()) peer.ended = true;
    }
  }

  void read_frame(Peer& peer, const std::string& frame) {
    car::json::Document doc;
    doc.Parse(frame.c_str(), frame.size());
    if (doc.HasParseError()) violated("a frame is not JSON: " + frame.substr(0, 200));
    if (doc.IsArray()) {
      for (const auto& member : doc.GetArray()) read_message(peer, member);
    } else {
      read_message(peer, doc);
    }
  }

  void read_message(Peer& peer, const car::json::Value& m) {
    if (!m.IsObject()) violated("a message is not an object");
    if (m.HasMember("method")) {
      std::string method = m["method"].GetString();
      if (m.HasMember("id")) {
        if (method != "tools.execute") violated("unexpected server request " + method);
        peer.tool_calls.emplace_back(m["id"].GetString());
        return;
      }
      if (method == "runs.trace.event" || method == "runs.trace.gap") read_trace(peer, method, m["params"]);
      if (method == "host.event") read_host_event(peer, m["params"]);
      return;
    }
    if (!m.HasMember("id")) violated("a reply without an id");
    const auto& idv = m["id"];
    if (idv.IsNull()) {
      if (peer.garbage_sent == 0) violated("a reply with id null nobody asked for");
      --peer.garbage_sent;
      return;
    }
    if (!idv.IsString()) violated("a reply with an id we never use");
    std::string id = idv.GetString();
    if (peer.waiting.erase(id) == 0) violated("a reply to no waiting request: " + id);
    if (m.HasMember("result")) learn(peer, peer.kind[id], m["result"]);
  }

  // Replies that carry ids later steps reuse, or the base of a subscription.
  void learn(Peer& peer, const std::string& method, const car::json::Value& result) {
    if (method == "runs.start" && result.HasMember("run_id")) {
      std::string run = result["run_id"].GetString();
      if (std::find(runs_known_.begin(), runs_known_.end(), run) == runs_known_.end() &&
          runs_known_.size() < 16) {
        runs_known_.push_back(run);
      }
    } else if ((method == "host.request_approval") && result.HasMember("id")) {
      if (approvals_.size() < 16) approvals_.emplace_back(result["id"].GetString());
    } else if (method == "host.subscribe") {
      peer.host_subscribe_pending = false;
      peer.host_sequence = result["event_sequence"].GetInt64();
      for (const auto& row : result["approvals"].GetArray()) {
        if (approvals_.size() < 16) approvals_.emplace_back(row["id"].GetString());
      }
    } else if (method == "host.unsubscribe") {
      peer.host_subscribe_pending = false;
      peer.host_sequence.reset();
    } else if (method == "runs.subscribe") {
      auto& view = peer.traces[result["run_id"].GetString()];
      view.pending = false;
      view.cursor = result["cursor"].GetInt64();
      view.ended = std::string_view(result["status"].GetString()) != "in_progress";
    } else if (method == "runs.unsubscribe") {
      peer.traces.erase(result["run_id"].GetString());
    }
  }

  void read_trace(Peer& peer, const std::string& method, const car::json::Value& p) {
    auto it = peer.traces.find(p["run_id"].GetString());
    if (it == peer.traces.end() || it->second.pending) return;  // not (yet) ours to judge
    auto& view = it->second;
    if (view.ended) violated("a trace event after `ended` or after a final snapshot");
    if (method == "runs.trace.gap") {
      if (p["from_cursor"].GetInt64() != view.cursor) violated("a gap that does not start at the cursor");
      if (p["to_cursor"].GetInt64() <= view.cursor) violated("a gap that does not move forward");
      view.cursor = p["to_cursor"].GetInt64();
      return;
    }
    std::string_view record = p["record"]["record"].GetString();
    std::int64_t cursor = p["cursor"].GetInt64();
    if (record == "turn") {
      if (cursor != view.cursor + 1) {
        violated(fmt::format("turn cursor {} after {} without a gap notice", cursor, view.cursor));
      }
      view.cursor = cursor;
    } else if (record == "ended") {
      if (cursor != view.cursor) violated("`ended` carries another cursor than the last turn's");
      view.ended = true;
    } else {
      violated("a `started` event after the subscription's snapshot");
    }
  }

  void read_host_event(Peer& peer, const car::json::Value& event) {
    if (peer.host_subscribe_pending || !peer.host_sequence) return;
    std::int64_t sequence = event["sequence"].GetInt64();
    if (sequence != *peer.host_sequence + 1) {
      violated(fmt::format("host event {} after {}", sequence, *peer.host_sequence));
    }
    peer.host_sequence = sequence;
  }

  car::testing::ManualExecutor executor_;
  std::unique_ptr<car::Server> server_;
  std::shared_ptr<car::session::SessionService> sessions_;
  std::shared_ptr<car::host::HostService> host_;
  std::shared_ptr<car::runs::RunService> runs_;
  std::array<Peer, 4> peers_;
  std::vector<std::string> runs_known_;
  std::vector<std::string> approvals_;
  std::uint64_t next_id_ = 0;
  std::uint64_t opened_ = 0;
};

const std::string& state_root() {
  static const std::string root = [] {
    std::string pattern = (std::filesystem::temp_directory_path() / "car-scenario-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) violated("cannot create a state directory");
    return pattern;
  }();
  return root;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  car::set_log_level(car::LogLevel::error);
  std::filesystem::remove_all(state_root() + "/runs");
  Choices in(data, size);
  {
    Scenario scenario(state_root());
    for (int steps = 0; !in.done() && steps < 200; ++steps) scenario.step(in);
    scenario.finish();
  }
  return 0;
}
