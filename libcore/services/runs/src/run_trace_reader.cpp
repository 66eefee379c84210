#include "car/runs/run_trace_reader.hpp"

#include "car/json.hpp"

namespace car::runs {
namespace {

bool parse_record(std::string_view line, json::Document& doc) {
  return !json::parse(line, doc) && doc.IsObject() && doc.HasMember("record") &&
         doc["record"].IsString();
}

std::string string_member(const json::Value& v, const char* name) {
  auto it = v.FindMember(name);
  if (it == v.MemberEnd() || !it->value.IsString()) return {};
  return std::string(json::view(it->value));
}

}  // namespace

std::optional<StoredTrace> parse_trace(std::string_view text) {
  StoredTrace trace;
  bool started = false;
  while (!text.empty()) {
    auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    if (line.empty()) continue;
    json::Document doc;
    if (!parse_record(line, doc)) continue;  // torn or corrupt: skipped
    std::string_view kind = json::view(doc["record"]);
    if (!started) {
      if (kind != "started") return std::nullopt;
      trace.location.run_id = string_member(doc, "run_id");
      if (trace.location.run_id.empty()) return std::nullopt;
      trace.location.agent_id = string_member(doc, "agent_id");
      trace.location.client_id = string_member(doc, "client_id");
      trace.summary.run_id = trace.location.run_id;
      trace.summary.agent_id = trace.location.agent_id;
      trace.summary.intent = string_member(doc, "intent");
      trace.summary.started_at = string_member(doc, "started_at");
      started = true;
    } else if (trace.location.ended) {
      break;  // nothing after the ending counts
    } else if (kind == "turn") {
      trace.summary.turn_count += 1;
    } else if (kind == "ended") {
      trace.location.ended = true;
      trace.summary.ended_at = string_member(doc, "ended_at");
      trace.summary.status = string_member(doc, "termination") == "outcome"
                                 ? RunStatus::completed
                                 : RunStatus::incomplete;
    } else {
      continue;  // a second `started` or an unknown kind
    }
    trace.records.emplace_back(line);
  }
  if (!started) return std::nullopt;
  return trace;
}

}  // namespace car::runs
