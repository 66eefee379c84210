// The server side of the WebSocket opening handshake (RFC 6455 §4.2): an incremental parser for
// the client's HTTP/1.1 upgrade request and builders for the two possible answers. Sans-I/O: the
// caller reads the socket, feeds bytes, and writes the returned response strings; the 10 s
// handshake deadline, the Origin allowlist (403) and the connection cap (503) are the caller's.
//
// Acceptance rules (protocol PROTOCOL.md §1), checked in this order, first failure wins:
//   request line: exactly `METHOD SP target SP HTTP/1.1`, method a token, target non-empty
//     ⇒ else 400; method must be `GET` (case-sensitive, as HTTP methods are) ⇒ else 400.
//     The request line is checked as soon as it is complete, before any header arrives.
//   each header line: `name: value`, name a token with no whitespace before the colon, value
//     without control characters other than HT; a line starting with SP/HT (obsolete line
//     folding) ⇒ 400. Names are case-insensitive; values have leading/trailing SP/HT trimmed.
//     A second Host, Origin, Sec-WebSocket-Key or Sec-WebSocket-Version ⇒ 400 (ambiguous).
//   the header block (request line through the blank line) longer than max_header_bytes ⇒ 400
//     (detected as soon as the limit is crossed; nothing beyond it is buffered).
//   at the blank line: missing Host ⇒ 400 (RFC 7230 §5.4); no `websocket` token in any Upgrade
//     header ⇒ 400; no `upgrade` token in any Connection header ⇒ 400 (tokens compared
//     case-insensitively inside comma-separated lists); no Sec-WebSocket-Version ⇒ 400; a
//     version other than exactly `13` ⇒ 426 (checked before the key, so an older client learns
//     which version to speak); no Sec-WebSocket-Key, or one that is not base64 of exactly 16
//     bytes ⇒ 400.
//   Sec-WebSocket-Extensions sets wants_extensions (we decline by not answering it);
//   Sec-WebSocket-Protocol and every other header are ignored.
//
// Plain HTTP (opt-in, constructor flag accept_plain_http): a complete request with no `websocket`
// token in any Upgrade header and no WebSocket header (Sec-WebSocket-Key, -Version) is not an
// upgrade at all but an ordinary HTTP/1.1 request: a health check, a metrics scrape (another
// Upgrade, such as curl's h2c, may be ignored, RFC 9110 §7.8). A request with a WebSocket header
// is a WebSocket upgrade attempt, and a malformed one still gets PROTOCOL.md §1's 400 — e.g. a key
// and version but no `Upgrade: websocket`. It ends as `plain_http` (the caller answers it, see
// car/ws/plain_http.hpp, and closes) instead of 400, provided it has exactly one Host header
// (else 400, as before). Its method may be any token: the method check is then made at the blank
// line, where an upgrade request whose method is not GET still gets 400. Everything else — the
// request-line syntax, HTTP/1.1 only, header syntax, the size bound, 426 — is the same for both
// kinds. Bytes after the blank line (a body, a pipelined request) are not parsed or kept.
//
// Line endings: lenient. A line ends at LF; one CR immediately before the LF is dropped, so both
// CRLF and bare LF work (RFC 7230 §3.5 permits this; hand-typed `nc` sessions send bare LF). A CR
// anywhere else is a control character ⇒ 400, so CR cannot be used to smuggle a line break.
// Empty lines before the request line are skipped (RFC 7230 §3.5), within the byte limit.
//
// Thread-safety: HandshakeParser is a single-threaded object (one connection, one thread at a
// time). The free functions are reentrant. Nothing here throws except std::bad_alloc.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include "car/export.hpp"

namespace car::ws {

struct CAR_API UpgradeRequest {
  std::string method;   // request method ("GET" once complete; any token once plain_http)
  std::string target;   // request-target as sent (any path is accepted)
  std::string host;     // Host header value
  std::string key;      // Sec-WebSocket-Key value (trimmed), valid base64 of 16 bytes
  std::string version;  // Sec-WebSocket-Version value ("13" once complete)
  std::string origin;   // Origin header value, meaningful only if has_origin
  bool has_origin = false;
  bool wants_extensions = false;  // a Sec-WebSocket-Extensions header was present
};

enum class HandshakeStatus {
  need_more,  // no verdict yet: feed more bytes
  complete,   // a valid upgrade request; answer build_accept_response(request())
  rejected,   // answer build_reject_response(reject_status(), reject_reason()) and close
  // A complete plain HTTP request (only with accept_plain_http): answer it and close.
  // request() holds its method, target and host.
  plain_http,
};

class CAR_API HandshakeParser {
 public:
  // `max_header_bytes`: the largest accepted header block, request line and final blank line
  // included (spec: 8 KiB).
  // `accept_plain_http`: end a request without `Upgrade: websocket` as `plain_http` rather than
  // rejecting it (see the header comment).
  explicit HandshakeParser(std::size_t max_header_bytes = 8192, bool accept_plain_http = false);

  // Consumes `bytes` (any split, down to one byte per call) and returns the verdict so far.
  // Once `rejected` or `plain_http`, later feeds ignore their bytes and return the same status.
  // Once `complete`, bytes that followed the blank line — and those of any later feed — are
  // appended to leftover() and `complete` is returned again.
  HandshakeStatus feed(std::string_view bytes);

  HandshakeStatus status() const noexcept { return status_; }

  // The parsed request. Fully populated only after `complete`; before that (or after a
  // rejection) fields hold whatever was parsed so far. The reference is valid for the parser's
  // lifetime.
  const UpgradeRequest& request() const noexcept { return request_; }

  // Bytes received after the end of the header block — frames a client sent without waiting
  // for the 101, to be fed to the FrameDecoder. Empty unless `complete`. The view is valid until
  // the next feed() or the parser's destruction.
  std::string_view leftover() const noexcept { return leftover_; }

  // 400 or 426 after `rejected`; 0 otherwise.
  int reject_status() const noexcept { return reject_status_; }

  // A short, fixed English description of the rejection for logs and the response body (never
  // echoes request bytes); empty unless `rejected`. Points to static storage.
  std::string_view reject_reason() const noexcept { return reject_reason_; }

 private:
  void process_line(std::string_view line);
  void parse_request_line(std::string_view line);
  void parse_header_line(std::string_view line);
  void finish();
  void reject(int status, std::string_view reason);

  std::size_t max_header_bytes_;
  bool accept_plain_http_;
  std::size_t header_bytes_ = 0;  // bytes of the header block consumed so far
  std::string line_;              // the current, not yet terminated line
  HandshakeStatus status_ = HandshakeStatus::need_more;
  bool seen_request_line_ = false;
  bool has_host_ = false;
  bool has_key_ = false;
  bool has_version_ = false;
  bool upgrade_websocket_ = false;
  bool connection_upgrade_ = false;
  UpgradeRequest request_;
  std::string leftover_;
  int reject_status_ = 0;
  std::string_view reject_reason_;
};

// True iff `key` is exactly 24 characters of standard base64 (with "==" padding) encoding 16
// bytes, as RFC 6455 §4.1 requires of Sec-WebSocket-Key.
CAR_API bool is_valid_websocket_key(std::string_view key);

// base64(SHA-1(client_key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")), the Sec-WebSocket-Accept
// value (RFC 6455 §4.2.2). Returns an empty string only if OpenSSL's digest fails.
CAR_API std::string compute_accept_key(std::string_view client_key);

// "HTTP/1.1 101 Switching Protocols" with Upgrade, Connection and Sec-WebSocket-Accept; no
// Sec-WebSocket-Extensions (every extension is declined) and no Sec-WebSocket-Protocol.
CAR_API std::string build_accept_response(const UpgradeRequest& request);

// An error response: status line with the standard reason phrase (400 Bad Request, 403
// Forbidden, 426 Upgrade Required, 503 Service Unavailable; any other status gets "Error"),
// `Connection: close`, `Content-Type: text/plain; charset=utf-8`, a Content-Length and the body
// `reason` + "\n" (the phrase if `reason` is empty). 426 also carries `Sec-WebSocket-Version:
// 13`. The caller closes the connection after writing it.
CAR_API std::string build_reject_response(int status, std::string_view reason);


}  // namespace car::ws

// The Origin check of an upgrade request (origin_allowed) is part of the same codec.
#include "car/ws/origin.hpp"
