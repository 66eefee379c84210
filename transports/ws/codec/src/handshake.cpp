#include "car/ws/handshake.hpp"

#include "car/ws/plain_http.hpp"
#include "http_chars.hpp"

#include <openssl/evp.h>

#include <array>
#include <string>

namespace car::ws {

namespace {

using detail::iequals;
using detail::is_token;

constexpr std::string_view accept_guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

bool is_ows(char c) noexcept { return c == ' ' || c == '\t'; }

std::string_view trim_ows(std::string_view s) noexcept {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

// Whether a comma-separated header value holds `token` (ASCII case-insensitive), e.g.
// "keep-alive, Upgrade" holds "upgrade".
bool list_contains(std::string_view value, std::string_view token) noexcept {
  while (true) {
    const std::size_t comma = value.find(',');
    if (iequals(trim_ows(value.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) return false;
    value.remove_prefix(comma + 1);
  }
}

bool is_base64_char(char c) noexcept {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/';
}

}  // namespace

HandshakeParser::HandshakeParser(std::size_t max_header_bytes, bool accept_plain_http)
    : max_header_bytes_(max_header_bytes), accept_plain_http_(accept_plain_http) {}

void HandshakeParser::reject(int status, std::string_view reason) {
  status_ = HandshakeStatus::rejected;
  reject_status_ = status;
  reject_reason_ = reason;
  // Nothing more will be parsed; give the memory back now rather than at destruction.
  std::string().swap(line_);
}

HandshakeStatus HandshakeParser::feed(std::string_view bytes) {
  if (status_ == HandshakeStatus::rejected || status_ == HandshakeStatus::plain_http) {
    return status_;
  }
  if (status_ == HandshakeStatus::complete) {
    leftover_.append(bytes);
    return status_;
  }
  while (!bytes.empty()) {
    const std::size_t lf = bytes.find('\n');
    const bool have_line = lf != std::string_view::npos;
    const std::size_t take = have_line ? lf + 1 : bytes.size();
    // Enforce the limit before buffering, so an endless header line costs at most the limit.
    if (take > max_header_bytes_ - header_bytes_) {
      reject(400, "request header block too large");
      return status_;
    }
    header_bytes_ += take;
    line_.append(bytes.substr(0, have_line ? lf : take));
    bytes.remove_prefix(take);
    if (!have_line) break;

    std::string_view line = line_;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    process_line(line);
    line_.clear();
    if (status_ == HandshakeStatus::rejected) return status_;
    if (status_ == HandshakeStatus::plain_http) {
      std::string().swap(line_);  // whatever follows the head is not ours to read
      return status_;
    }
    if (status_ == HandshakeStatus::complete) {
      std::string().swap(line_);
      leftover_.assign(bytes);
      return status_;
    }
  }
  return status_;
}

void HandshakeParser::process_line(std::string_view line) {
  // Field values may hold HT, visible ASCII and obs-text only (RFC 7230 §3.2). Refusing every
  // other control character here also refuses a bare CR and NUL everywhere in the request.
  for (char c : line) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7F) {
      reject(400, "control character in request header");
      return;
    }
  }
  if (!seen_request_line_) {
    if (line.empty()) return;  // tolerated empty line(s) before the request line
    seen_request_line_ = true;
    parse_request_line(line);
    return;
  }
  if (line.empty()) {
    finish();
    return;
  }
  if (is_ows(line.front())) {
    reject(400, "obsolete header line folding");
    return;
  }
  parse_header_line(line);
}

void HandshakeParser::parse_request_line(std::string_view line) {
  const std::size_t sp1 = line.find(' ');
  const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || sp2 == sp1 + 1) {
    reject(400, "malformed request line");
    return;
  }
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (!is_token(method) || target.find('\t') != std::string_view::npos) {
    reject(400, "malformed request line");
    return;
  }
  if (version != "HTTP/1.1") {
    reject(400, "request is not HTTP/1.1");
    return;
  }
  // With plain HTTP accepted, a HEAD or POST may be a plain request; whether it is an upgrade is
  // known only at the blank line (finish), which makes the same check there.
  if (method != "GET" && !accept_plain_http_) {
    reject(400, "method is not GET");
    return;
  }
  request_.method = method;
  request_.target = target;
}

void HandshakeParser::parse_header_line(std::string_view line) {
  const std::size_t colon = line.find(':');
  if (colon == std::string_view::npos || !is_token(line.substr(0, colon))) {
    reject(400, "malformed header line");
    return;
  }
  const std::string_view name = line.substr(0, colon);
  const std::string_view value = trim_ows(line.substr(colon + 1));

  // Single-valued headers: a repeat would make the request ambiguous, so refuse it.
  auto set_once = [&](bool& seen, std::string& field, std::string_view what) {
    if (seen) {
      reject(400, what);
      return;
    }
    seen = true;
    field = value;
  };
  if (iequals(name, "host")) {
    set_once(has_host_, request_.host, "duplicate Host header");
  } else if (iequals(name, "upgrade")) {
    upgrade_websocket_ = upgrade_websocket_ || list_contains(value, "websocket");
  } else if (iequals(name, "connection")) {
    connection_upgrade_ = connection_upgrade_ || list_contains(value, "upgrade");
  } else if (iequals(name, "sec-websocket-key")) {
    set_once(has_key_, request_.key, "duplicate Sec-WebSocket-Key header");
  } else if (iequals(name, "sec-websocket-version")) {
    set_once(has_version_, request_.version, "duplicate Sec-WebSocket-Version header");
  } else if (iequals(name, "origin")) {
    set_once(request_.has_origin, request_.origin, "duplicate Origin header");
  } else if (iequals(name, "sec-websocket-extensions")) {
    request_.wants_extensions = true;
  }
}

void HandshakeParser::finish() {
  // PROTOCOL.md §1: a version header that is present and not 13 gets 426 whatever else is wrong, so a
  // client of another protocol version always learns which one to speak.
  if (has_version_ && request_.version != "13") {
    return reject(426, "unsupported Sec-WebSocket-Version");
  }
  if (!has_host_) return reject(400, "missing Host header");
  if (!upgrade_websocket_) {
    // Sec-WebSocket-* only make sense in an upgrade: such a request is a broken one (400).
    const bool websocket_attempt = has_key_ || has_version_;
    if (accept_plain_http_ && !websocket_attempt) {
      status_ = HandshakeStatus::plain_http;
      return;
    }
    return reject(400, "missing Upgrade: websocket");
  }
  if (request_.method != "GET") return reject(400, "method is not GET");
  if (!connection_upgrade_) return reject(400, "missing Connection: upgrade");
  if (!has_version_) return reject(400, "missing Sec-WebSocket-Version header");
  if (!has_key_) return reject(400, "missing Sec-WebSocket-Key header");
  if (!is_valid_websocket_key(request_.key)) {
    return reject(400, "Sec-WebSocket-Key is not base64 of 16 bytes");
  }
  status_ = HandshakeStatus::complete;
}

bool is_valid_websocket_key(std::string_view key) {
  // 16 bytes encode to 22 significant characters and "==". OpenSSL's decoder is lenient about
  // where '=' may appear, so the shape is checked here and the decoding is left to OpenSSL.
  if (key.size() != 24 || key.substr(22) != "==") return false;
  for (std::size_t i = 0; i < 22; ++i) {
    if (!is_base64_char(key[i])) return false;
  }
  std::array<unsigned char, 18> decoded{};
  const int n = EVP_DecodeBlock(decoded.data(), reinterpret_cast<const unsigned char*>(key.data()),
                                static_cast<int>(key.size()));
  // EVP_DecodeBlock counts the two padding positions as (zero) bytes: 18 = 16 + 2.
  return n == 18;
}

std::string compute_accept_key(std::string_view client_key) {
  std::string input;
  input.reserve(client_key.size() + accept_guid.size());
  input.append(client_key).append(accept_guid);
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int digest_len = 0;
  if (EVP_Digest(input.data(), input.size(), digest.data(), &digest_len, EVP_sha1(), nullptr) !=
          1 ||
      digest_len != 20) {
    return {};
  }
  std::array<unsigned char, 29> encoded{};  // 4 * ceil(20 / 3) = 28, plus the NUL
  const int n = EVP_EncodeBlock(encoded.data(), digest.data(), static_cast<int>(digest_len));
  return std::string(reinterpret_cast<const char*>(encoded.data()), static_cast<std::size_t>(n));
}

std::string build_accept_response(const UpgradeRequest& request) {
  std::string out =
      "HTTP/1.1 101 Switching Protocols\r\n"
      "Upgrade: websocket\r\n"
      "Connection: Upgrade\r\n"
      "Sec-WebSocket-Accept: ";
  out += compute_accept_key(request.key);
  out += "\r\n\r\n";
  return out;
}

std::string build_reject_response(int status, std::string_view reason) {
  const std::string_view phrase = http_reason_phrase(status);
  std::string body(reason.empty() ? phrase : reason);
  body += '\n';
  std::string out = "HTTP/1.1 " + std::to_string(status) + ' ';
  out.append(phrase);
  out += "\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n";
  if (status == 426) out += "Sec-WebSocket-Version: 13\r\n";
  out += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  out += body;
  return out;
}

}  // namespace car::ws
