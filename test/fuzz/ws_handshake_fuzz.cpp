// libFuzzer target for car::ws::HandshakeParser.
//
// The input is parsed whole, split in two at a data-derived point, and one byte at a time; the
// verdicts, reject statuses and leftovers must agree, and each verdict must keep its promises
// (a complete request carries a valid key and version 13; a rejection is 400 or 426 with a
// reason; the 101 response carries the accept key). Every other input also runs with plain HTTP
// accepted: a plain_http verdict must carry a Host, build a response with the right
// Content-Length, and survive the DNS-rebinding check on whatever Host it holds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "car/ws/handshake.hpp"
#include "car/ws/plain_http.hpp"

namespace {

using namespace car::ws;

void check(bool ok) {
  if (!ok) std::abort();
}

struct Result {
  HandshakeStatus status;
  int reject_status;
  std::string leftover;
  std::string key;
  bool operator==(const Result&) const = default;
};

Result finish(const HandshakeParser& p, HandshakeStatus last) {
  check(last == p.status());
  if (last == HandshakeStatus::complete) {
    const UpgradeRequest& r = p.request();
    check(r.method == "GET" && r.version == "13" && is_valid_websocket_key(r.key));
    check(p.reject_status() == 0 && p.reject_reason().empty());
    const std::string response = build_accept_response(r);
    check(response.find(compute_accept_key(r.key)) != std::string::npos);
    check(compute_accept_key(r.key).size() == 28);
  } else if (last == HandshakeStatus::rejected) {
    check(p.reject_status() == 400 || p.reject_status() == 426);
    check(!p.reject_reason().empty());
    check(p.leftover().empty());
    check(!build_reject_response(p.reject_status(), p.reject_reason()).empty());
  } else if (last == HandshakeStatus::plain_http) {
    const UpgradeRequest& r = p.request();
    check(p.reject_status() == 0);
    PlainHttpResponse response;
    response.body = std::string(r.target);
    response.headers.push_back({std::string(r.method), std::string(r.host)});  // maybe dropped
    const std::string bytes = build_http_response(response, r.method == "HEAD");
    check(bytes.find("Content-Length: " + std::to_string(response.body.size()) + "\r\n") !=
          std::string::npos);
    // The head ends at its first blank line and the body follows whole: no header the request
    // put into the response could end the head early.
    const std::size_t head_end = bytes.find("\r\n\r\n");
    check(head_end != std::string::npos);
    check(bytes.size() == head_end + 4 + (r.method == "HEAD" ? 0 : response.body.size()));
    (void)host_is_local(r.host, "127.0.0.1:9100");
  } else {
    check(p.reject_status() == 0 && p.leftover().empty());
  }
  return {last, p.reject_status(), std::string(p.leftover()), p.request().key};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  // A small limit now and then, so the limit path is reached with short inputs.
  const std::size_t limit = (data[0] & 1) ? 8192 : 16 + data[0];
  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  const std::size_t split = input.empty() ? 0 : (data[0] * input.size()) / 255;

  const bool plain_http = (data[0] & 2) != 0;

  HandshakeParser whole(limit, plain_http);
  const Result a = finish(whole, whole.feed(input));

  HandshakeParser two(limit, plain_http);
  two.feed(input.substr(0, split));
  const Result b = finish(two, two.feed(input.substr(split)));

  HandshakeParser bytewise(limit, plain_http);
  HandshakeStatus last = bytewise.feed({});
  for (char c : input) last = bytewise.feed(std::string_view(&c, 1));
  const Result c = finish(bytewise, last);

  check(a == b);
  check(a == c);
  return 0;
}
