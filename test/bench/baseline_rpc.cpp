// See baseline_rpc.hpp. The reply shapes were taken from car-daemon's own bytes (run it and
// compare: test/bench/run-all.sh drives both with the same car-bench client).
#include "baseline_rpc.hpp"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <array>
#include <cinttypes>
#include <cstdio>
#include <span>
#include <unordered_map>

#include "car/ws/frame_encoder.hpp"

namespace car_bench::baseline {
namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;
using Pool = rapidjson::MemoryPoolAllocator<>;
// A Document whose values and parse stack both live in pool allocators over fixed buffers.
using PooledDocument = rapidjson::GenericDocument<rapidjson::UTF8<>, Pool, Pool>;

struct Run {
  std::string run_id;
  std::string agent_id;
  std::vector<std::string> records;  // each turn's record JSON, for runs.subscribe's snapshot
  std::vector<Peer*> subscribers;
};

void write_string(Writer& w, std::string_view s) {
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

void key(Writer& w, std::string_view k) {
  w.Key(k.data(), static_cast<rapidjson::SizeType>(k.size()));
}

std::string_view string_member(const rapidjson::Value& object, const char* name) {
  if (!object.IsObject()) return {};
  auto it = object.FindMember(name);
  if (it == object.MemberEnd() || !it->value.IsString()) return {};
  return {it->value.GetString(), it->value.GetStringLength()};
}

}  // namespace

struct Rpc::State {
  std::unordered_map<std::string, std::unique_ptr<Run>> runs;
  std::uint64_t next_run = 1;
  rapidjson::StringBuffer reply;  // reused: the reply being written
  rapidjson::StringBuffer event;  // reused: the event being written
  // The request DOM lives in these fixed buffers (pool allocators fall back to malloc only for
  // requests that outgrow them), so a small request parses without touching the heap.
  alignas(8) char value_buffer[64 * 1024];
  alignas(8) char stack_buffer[16 * 1024];

  void begin(Writer& w, const rapidjson::Value& id) {
    w.StartObject();
    key(w, "jsonrpc");
    w.String("2.0");
    key(w, "id");
    id.Accept(w);
  }

  void error(Peer& from, const rapidjson::Value& id, int code, std::string_view message) {
    reply.Clear();
    Writer w(reply);
    begin(w, id);
    key(w, "error");
    w.StartObject();
    key(w, "code");
    w.Int(code);
    key(w, "message");
    write_string(w, message);
    w.EndObject();
    w.EndObject();
    from.send_text({reply.GetString(), reply.GetSize()});
  }

  Run* find_run(const rapidjson::Value& params) {
    auto id = string_member(params, "run_id");
    auto it = runs.find(std::string(id));
    return it == runs.end() ? nullptr : it->second.get();
  }

  void unknown_run(Peer& from, const rapidjson::Value& id, const rapidjson::Value& params) {
    std::string message = "unknown run '";
    message += string_member(params, "run_id");
    message += '\'';
    error(from, id, -32602, message);
  }

  void handshake(Writer& w, const rapidjson::Value& params) {
    w.StartObject();
    key(w, "protocol_version");
    w.Int(2);
    key(w, "server_version");
    w.String("0.1.0");
    key(w, "client_protocol_version");
    auto it = params.IsObject() ? params.FindMember("protocol_version") : params.MemberEnd();
    if (params.IsObject() && it != params.MemberEnd()) {
      it->value.Accept(w);
    } else {
      w.Int(2);
    }
    w.EndObject();
  }

  void start(Writer& w, const rapidjson::Value& params) {
    auto run = std::make_unique<Run>();
    // A UUID-shaped id (36 characters like car-daemon's), from a counter: nothing random needed.
    char id[40];
    std::snprintf(id, sizeof id, "00000000-0000-4000-8000-%012" PRIx64, next_run++);
    run->run_id = id;
    auto agent = string_member(params, "agent_id");
    run->agent_id = agent.empty() ? "default" : std::string(agent);
    w.StartObject();
    key(w, "run_id");
    write_string(w, run->run_id);
    key(w, "agent_id");
    write_string(w, run->agent_id);
    w.EndObject();
    runs.emplace(run->run_id, std::move(run));
  }

  void subscribe(Writer& w, Run& run, Peer& from) {
    w.StartObject();
    key(w, "run_id");
    write_string(w, run.run_id);
    key(w, "agent_id");
    write_string(w, run.agent_id);
    key(w, "turns_so_far");
    w.StartArray();
    for (const auto& record : run.records) {
      w.RawValue(record.data(), record.size(), rapidjson::kObjectType);
    }
    w.EndArray();
    key(w, "cursor");
    w.Uint64(run.records.size());
    key(w, "status");
    w.String("in_progress");
    w.EndObject();
    // The reply is queued before the peer joins, so it precedes every event on its connection.
    if (std::find(run.subscribers.begin(), run.subscribers.end(), &from) == run.subscribers.end()) {
      run.subscribers.push_back(&from);
    }
  }

  // Serializes each turn's event once into one batch, hands the batch to every subscriber, then
  // writes the producer's reply into `w`.
  void record_turns(Writer& w, Run& run, const rapidjson::Value& turns) {
    const std::size_t base = run.records.size();
    auto batch = std::make_shared<EventBatch>();
    batch->payloads.reserve(turns.Size());
    for (const auto& turn : turns.GetArray()) {
      const std::size_t index = run.records.size();
      event.Clear();
      Writer e(event);
      e.StartObject();
      key(e, "jsonrpc");
      e.String("2.0");
      key(e, "method");
      e.String("runs.trace.event");
      key(e, "params");
      e.StartObject();
      key(e, "run_id");
      write_string(e, run.run_id);
      key(e, "agent_id");
      write_string(e, run.agent_id);
      key(e, "record");
      // The record's text starts after the ':' the Writer puts before the next value.
      const std::size_t record_begin = event.GetSize() + 1;
      e.StartObject();
      key(e, "record");
      e.String("turn");
      key(e, "index");
      e.Uint64(index);
      if (turn.IsObject()) {
        for (const auto& member : turn.GetObject()) {
          member.name.Accept(e);
          member.value.Accept(e);
        }
      }
      key(e, "verifier_verdict");
      e.String("not_run");
      e.EndObject();
      const std::size_t record_end = event.GetSize();
      key(e, "cursor");
      e.Uint64(index + 1);
      key(e, "status");
      e.String("in_progress");
      e.EndObject();
      e.EndObject();
      std::string_view text(event.GetString(), event.GetSize());
      run.records.emplace_back(text.substr(record_begin, record_end - record_begin));
      std::array<std::uint8_t, car::ws::max_frame_header> header{};
      std::size_t header_len =
          car::ws::encode_frame_header(car::ws::Opcode::text, text.size(), true, header);
      batch->bytes.append(reinterpret_cast<const char*>(header.data()), header_len);
      batch->payloads.push_back({batch->bytes.size(), text.size()});
      batch->bytes.append(text);
    }
    SharedBatch shared = std::move(batch);
    if (!shared->payloads.empty()) {
      for (Peer* subscriber : run.subscribers) subscriber->send_batch(shared);
    }
    w.StartObject();
    key(w, "run_id");
    write_string(w, run.run_id);
    key(w, "base_index");
    w.Uint64(base);
    key(w, "count");
    w.Uint64(turns.Size());
    key(w, "ok");
    w.Bool(true);
    w.EndObject();
  }
};

Rpc::Rpc() : state_(std::make_unique<State>()) {}
Rpc::~Rpc() = default;

void Rpc::handle(Peer& from, std::string_view request) {
  State& s = *state_;
  Pool values(s.value_buffer, sizeof s.value_buffer);
  Pool stack(s.stack_buffer, sizeof s.stack_buffer);
  PooledDocument doc(&values, 1024, &stack);
  doc.Parse(request.data(), request.size());
  const rapidjson::Value null_id;
  if (doc.HasParseError()) {
    s.error(from, null_id, -32700, "parse error");
    return;
  }
  if (!doc.IsObject()) {
    s.error(from, null_id, -32600, "invalid request");
    return;
  }
  auto id_it = doc.FindMember("id");
  if (id_it == doc.MemberEnd()) return;  // a notification: nothing to answer
  const rapidjson::Value& id = id_it->value;
  std::string_view method = string_member(doc, "method");
  auto params_it = doc.FindMember("params");
  const rapidjson::Value empty_params(rapidjson::kObjectType);
  const rapidjson::Value& params = params_it == doc.MemberEnd() ? empty_params : params_it->value;

  s.reply.Clear();
  Writer w(s.reply);
  s.begin(w, id);
  key(w, "result");
  if (method == "host.agents") {
    w.StartArray();  // no agents on this host
    w.EndArray();
  } else if (method == "server.handshake") {
    s.handshake(w, params);
  } else if (method == "runs.record_turns") {
    Run* run = s.find_run(params);
    if (run == nullptr) return s.unknown_run(from, id, params);
    auto turns = params.FindMember("turns");
    if (turns == params.MemberEnd() || !turns->value.IsArray()) {
      return s.error(from, id, -32602, "turns must be an array");
    }
    s.record_turns(w, *run, turns->value);
  } else if (method == "runs.start") {
    s.start(w, params);
  } else if (method == "runs.subscribe") {
    Run* run = s.find_run(params);
    if (run == nullptr) return s.unknown_run(from, id, params);
    s.subscribe(w, *run, from);
  } else {
    return s.error(from, id, -32601, "method not found: " + std::string(method));
  }
  w.EndObject();
  from.send_text({s.reply.GetString(), s.reply.GetSize()});
}

void Rpc::forget(Peer& peer) {
  for (auto& [id, run] : state_->runs) {
    auto& subs = run->subscribers;
    subs.erase(std::remove(subs.begin(), subs.end(), &peer), subs.end());
  }
}

}  // namespace car_bench::baseline
