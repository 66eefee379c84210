#include "car/runs/run_record.hpp"

#include <fmt/format.h>

#include <ctime>

#include "car/detail/hex_value.hpp"

namespace car::runs {

std::string_view to_string(RunStatus status) {
  switch (status) {
    case RunStatus::in_progress: return "in_progress";
    case RunStatus::completed: return "completed";
    case RunStatus::incomplete: return "incomplete";
  }
  return "in_progress";
}

std::string format_timestamp(std::chrono::system_clock::time_point at) {
  using namespace std::chrono;
  auto ms = duration_cast<milliseconds>(at.time_since_epoch()).count();
  auto secs = static_cast<std::time_t>(ms / 1000);
  auto millis = static_cast<int>(ms % 1000);
  if (millis < 0) {
    millis += 1000;
    secs -= 1;
  }
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, millis);
}

namespace {

bool is_ascii_alnum(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

}  // namespace

std::string slugify(std::string_view name) {
  std::string out;
  bool pending_dash = false;
  for (char ch : name) {
    auto c = static_cast<unsigned char>(ch);
    if (is_ascii_alnum(c)) {
      if (pending_dash && !out.empty()) out.push_back('-');
      pending_dash = false;
      out.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c));
    } else {
      pending_dash = true;  // a run of anything else; leading and trailing runs vanish
    }
  }
  return out;
}

std::string encode_path_component(std::string_view id) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(id.size());
  for (char ch : id) {
    auto c = static_cast<unsigned char>(ch);
    if (is_ascii_alnum(c) || c == '_' || c == '-') {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 0xF]);
    }
  }
  return out;
}

std::optional<std::string> decode_path_component(std::string_view encoded) {
  std::string out;
  out.reserve(encoded.size());
  for (std::size_t i = 0; i < encoded.size(); ++i) {
    char c = encoded[i];
    if (c != '%') {
      if (!is_ascii_alnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') {
        return std::nullopt;
      }
      out.push_back(c);
      continue;
    }
    if (i + 2 >= encoded.size()) return std::nullopt;
    int hi = car::detail::hex_value(encoded[i + 1]);
    int lo = car::detail::hex_value(encoded[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

std::string_view utf8_prefix(std::string_view text, std::size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  std::size_t cut = max_bytes;
  // Back up over continuation bytes so the cut falls on a code point boundary.
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return text.substr(0, cut);
}

namespace {

// Serializes a client value, cutting long strings (values, not keys: cutting keys could merge
// members; an oversized key still counts towards the turn size).
void write_truncated(json::Writer& w, const json::Value& v, std::size_t max_string) {
  switch (v.GetType()) {
    case rapidjson::kStringType: {
      std::string_view s = json::view(v);
      if (s.size() <= max_string) {
        w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
      } else {
        std::string cut(utf8_prefix(s, max_string));
        cut.append(truncation_marker);
        w.String(cut.data(), static_cast<rapidjson::SizeType>(cut.size()));
      }
      return;
    }
    case rapidjson::kObjectType:
      w.StartObject();
      for (const auto& m : v.GetObject()) {
        w.Key(m.name.GetString(), m.name.GetStringLength());
        write_truncated(w, m.value, max_string);
      }
      w.EndObject();
      return;
    case rapidjson::kArrayType:
      w.StartArray();
      for (const auto& e : v.GetArray()) write_truncated(w, e, max_string);
      w.EndArray();
      return;
    default:
      v.Accept(w);
      return;
  }
}

// The members that give way to the oversize marker: the bulky free-form ones (PROTOCOL.md §7.3).
bool is_bulk_member(std::string_view name) {
  return name == "prompt" || name == "parameters" || name == "output";
}

// Everything of the turn record after its stamp: `,"member":value,...}`. With `bulk_marker`, the
// bulk members are written as that string instead of their values.
std::string build_tail(const json::Value& turn, std::size_t max_string,
                       std::optional<std::string_view> bulk_marker) {
  json::Builder b;
  auto& w = b.w();
  // Written as an object so the writer tracks commas; the leading '{' is cut off below.
  w.StartObject();
  bool has_verdict = false;
  for (const auto& m : turn.GetObject()) {
    std::string_view name = json::view(m.name);
    if (name == "record" || name == "index") continue;
    if (name == "verifier_verdict") has_verdict = true;
    b.key(name);
    if (bulk_marker && is_bulk_member(name)) {
      b.str(*bulk_marker);
    } else {
      write_truncated(w, m.value, max_string);
    }
  }
  if (!has_verdict) b.key("verifier_verdict").str("not_run");
  w.EndObject();
  std::string_view body = b.view();  // "{...}" with at least verifier_verdict inside
  std::string tail = ",";
  tail.append(body.substr(1));
  return tail;
}

constexpr std::string_view turn_prefix = R"({"record":"turn","index":)";

}  // namespace

std::string oversize_marker_for(const TurnLimits& limits) {
  if (limits.max_turn_bytes == TurnLimits{}.max_turn_bytes) return std::string(oversize_marker);
  const std::size_t n = limits.max_turn_bytes;
  std::string size = n % 1024 == 0 ? fmt::format("{} KiB", n / 1024) : fmt::format("{} bytes", n);
  return fmt::format("{}[truncated: turn exceeded {}]", std::string_view("\xE2\x80\xA6"), size);
}

std::string stamp_turn(std::string_view tail, std::uint64_t index) {
  std::string digits = std::to_string(index);
  std::string out;
  out.reserve(turn_prefix.size() + digits.size() + tail.size());
  out.append(turn_prefix);
  out.append(digits);
  out.append(tail);
  return out;
}

std::optional<std::string> make_turn_tail(const json::Value& turn, const TurnLimits& limits) {
  if (!turn.IsObject()) return std::nullopt;
  // The size that counts is the stamped record's; indices stay below 10^4 (2000 turns per run),
  // so measure with four digits.
  constexpr std::size_t stamp = turn_prefix.size() + 4;
  std::string tail = build_tail(turn, limits.max_string_bytes, std::nullopt);
  if (stamp + tail.size() <= limits.max_turn_bytes) return tail;
  const std::string marker = oversize_marker_for(limits);
  tail = build_tail(turn, limits.max_string_bytes, marker);
  if (stamp + tail.size() <= limits.max_turn_bytes) return tail;
  return std::nullopt;
}

std::optional<std::string> make_turn_record(const json::Value& turn, std::uint64_t index,
                                            const TurnLimits& limits) {
  auto tail = make_turn_tail(turn, limits);
  if (!tail) return std::nullopt;
  return stamp_turn(*tail, index);
}

std::string make_started_record(const StartedFields& f) {
  json::Builder b;
  b.begin_object();
  b.key("record").str("started");
  b.key("run_id").str(f.run_id);
  b.key("agent_id").str(f.agent_id);
  b.key("client_id").str(f.client_id);
  b.key("intent").str(f.intent);
  if (f.outcome_description) b.key("outcome_description").str(*f.outcome_description);
  b.key("started_at").str(f.started_at);
  b.end_object();
  return b.take();
}

std::string make_ended_record(std::string_view outcome_json, std::string_view ended_at) {
  json::Builder b;
  b.begin_object();
  b.key("record").str("ended");
  b.key("termination").str(outcome_json.empty() ? "incomplete" : "outcome");
  if (!outcome_json.empty()) b.key("outcome").raw(outcome_json);
  b.key("ended_at").str(ended_at);
  b.end_object();
  return b.take();
}

std::string_view record_kind(std::string_view record_json) {
  static constexpr std::string_view tag = R"({"record":")";
  if (record_json.substr(0, tag.size()) != tag) return {};
  std::string_view rest = record_json.substr(tag.size());
  for (std::string_view kind : {"started", "turn", "ended"}) {
    if (rest.size() > kind.size() && rest.substr(0, kind.size()) == kind &&
        rest[kind.size()] == '"') {
      return kind;
    }
  }
  return {};
}

}  // namespace car::runs
