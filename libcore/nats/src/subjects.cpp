#include "car/nats/subjects.hpp"

#include <fmt/format.h>

namespace car::nats {
namespace {

bool is_plain(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;  // lower-case hex is not produced, so it is not accepted: one spelling per id
}

// Splits "<a>.<b>..." into exactly `n` tokens after `prefix` + "."; false when it does not fit.
bool split_after_prefix(std::string_view prefix, std::string_view subject, std::string_view* out,
                        std::size_t n) {
  if (subject.size() <= prefix.size() || subject.substr(0, prefix.size()) != prefix ||
      subject[prefix.size()] != '.') {
    return false;
  }
  std::string_view rest = subject.substr(prefix.size() + 1);
  for (std::size_t i = 0; i < n; ++i) {
    std::size_t dot = rest.find('.');
    if ((dot == std::string_view::npos) != (i + 1 == n)) return false;
    out[i] = rest.substr(0, dot);
    if (out[i].empty()) return false;
    if (dot != std::string_view::npos) rest = rest.substr(dot + 1);
  }
  return true;
}

}  // namespace

std::string encode_subject_token(std::string_view id) {
  if (id.empty()) return "%";
  std::string token;
  token.reserve(id.size());
  for (char ch : id) {
    auto c = static_cast<unsigned char>(ch);
    if (is_plain(c)) {
      token.push_back(ch);
    } else {
      token += fmt::format("%{:02X}", c);
    }
  }
  return token;
}

std::optional<std::string> decode_subject_token(std::string_view token) {
  if (token == "%") return std::string();
  if (token.empty()) return std::nullopt;
  std::string id;
  id.reserve(token.size());
  for (std::size_t i = 0; i < token.size(); ++i) {
    auto c = static_cast<unsigned char>(token[i]);
    if (is_plain(c)) {
      id.push_back(token[i]);
      continue;
    }
    if (c != '%' || i + 2 >= token.size()) return std::nullopt;
    int high = hex_value(token[i + 1]);
    int low = hex_value(token[i + 2]);
    if (high < 0 || low < 0) return std::nullopt;
    auto byte = static_cast<unsigned char>(high * 16 + low);
    if (is_plain(byte)) return std::nullopt;  // a plain byte is never escaped: one spelling per id
    id.push_back(static_cast<char>(byte));
    i += 2;
  }
  return id;
}

std::string run_subject(std::string_view prefix, std::string_view host_id,
                        std::string_view agent_id, std::string_view run_id) {
  return fmt::format("{}.runs.{}.{}.{}", prefix, encode_subject_token(host_id),
                     encode_subject_token(agent_id), encode_subject_token(run_id));
}

std::string runs_filter(std::string_view prefix, std::optional<std::string_view> host_id,
                        std::optional<std::string_view> agent_id) {
  return fmt::format("{}.runs.{}.{}.*", prefix, host_id ? encode_subject_token(*host_id) : "*",
                     agent_id ? encode_subject_token(*agent_id) : "*");
}

std::string host_events_subject(std::string_view prefix, std::string_view host_id) {
  return fmt::format("{}.host.{}.events", prefix, encode_subject_token(host_id));
}

std::string host_events_filter(std::string_view prefix) {
  return fmt::format("{}.host.*.events", prefix);
}

std::optional<RunSubject> parse_run_subject(std::string_view prefix, std::string_view subject) {
  std::string_view tokens[4];
  if (!split_after_prefix(prefix, subject, tokens, 4) || tokens[0] != "runs") return std::nullopt;
  auto host = decode_subject_token(tokens[1]);
  auto agent = decode_subject_token(tokens[2]);
  auto run = decode_subject_token(tokens[3]);
  if (!host || !agent || !run) return std::nullopt;
  return RunSubject{std::move(*host), std::move(*agent), std::move(*run)};
}

std::optional<std::string> parse_host_events_subject(std::string_view prefix,
                                                     std::string_view subject) {
  std::string_view tokens[3];
  if (!split_after_prefix(prefix, subject, tokens, 3) || tokens[0] != "host" ||
      tokens[2] != "events") {
    return std::nullopt;
  }
  return decode_subject_token(tokens[1]);
}

std::string record_message_id(std::string_view host_id, std::string_view run_id,
                              std::uint64_t offset) {
  return fmt::format("{}/{}/{}", host_id, run_id, offset);
}

std::string host_event_message_id(std::string_view host_id, std::string_view boot_id,
                                  std::uint64_t sequence) {
  return fmt::format("{}/events/{}/{}", host_id, boot_id, sequence);
}

}  // namespace car::nats
