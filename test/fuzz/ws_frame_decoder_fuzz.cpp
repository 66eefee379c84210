// libFuzzer target for car::ws::FrameDecoder.
//
// The first input byte chooses how the rest is split; the rest is decoded in both roles three
// ways (whole, split in two at a data-derived point, in small data-derived pieces) and the three
// event sequences and verdicts must be identical. A checking handler asserts the
// decoder's promises about every event (valid UTF-8 text, bounded sizes, validated close codes,
// nothing after close).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "car/ws/close_code.hpp"
#include "car/ws/frame_decoder.hpp"
#include "car/ws/utf8_validator.hpp"

namespace {

using namespace car::ws;

constexpr std::size_t max_message = 64 * 1024;

void check(bool ok) {
  if (!ok) std::abort();
}

struct CheckingHandler : FrameHandler {
  std::vector<std::string> events;
  bool closed = false;

  void on_text(std::string_view m) override {
    check(!closed);
    check(m.size() <= max_message);
    check(is_valid_utf8(m));
    events.push_back("t" + std::string(m));
  }
  void on_binary(std::size_t n) override {
    check(!closed);
    check(n <= max_message);
    events.push_back("b" + std::to_string(n));
  }
  void on_ping(std::string_view p) override {
    check(!closed);
    check(p.size() <= 125);
    events.push_back("i" + std::string(p));
  }
  void on_pong(std::string_view p) override {
    check(!closed);
    check(p.size() <= 125);
    events.push_back("o" + std::string(p));
  }
  void on_close(std::uint16_t code, std::string_view reason) override {
    check(!closed);
    check(code == 1005 ? reason.empty() : is_valid_received_close_code(code));
    check(reason.size() <= 123);
    check(is_valid_utf8(reason));
    closed = true;
    events.push_back("c" + std::to_string(code) + ":" + std::string(reason));
  }
};

struct Result {
  std::vector<std::string> events;
  std::optional<CloseCode> error;
  bool operator==(const Result&) const = default;
};

// Feeds `data` in pieces of the given sizes (cycled; 0 means "the rest").
Result run(Role role, std::string_view data, const std::vector<std::size_t>& pieces) {
  FrameDecoder decoder(role, max_message);
  CheckingHandler handler;
  Result r;
  std::size_t i = 0;
  while (!data.empty()) {
    std::size_t n = pieces.empty() ? data.size() : pieces[i++ % pieces.size()];
    if (n == 0 || n > data.size()) n = data.size();
    const auto err = decoder.feed(data.substr(0, n), handler);
    check(decoder.buffered_bytes() <= max_message);
    if (err) {
      r.error = err->code;
      // Dead: the same error again, and no further events.
      const std::size_t before = handler.events.size();
      const auto again = decoder.feed(data, handler);
      check(again && again->code == err->code && handler.events.size() == before);
      break;
    }
    data.remove_prefix(n);
  }
  check(handler.closed == decoder.closed());
  r.events = std::move(handler.events);
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t selector = data[0];
  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  const std::size_t split = input.empty() ? 0 : (selector * input.size()) / 255;

  // Small pieces derived from the data itself (1-8 bytes each).
  std::vector<std::size_t> small;
  for (std::size_t i = 0; i < input.size() && small.size() < 64; i += 7) {
    small.push_back(1 + (static_cast<unsigned char>(input[i]) ^ selector) % 8);
  }

  for (Role role : {Role::server, Role::client}) {
    const Result whole = run(role, input, {});
    const Result two = run(role, input, {split, 0});
    const Result pieces = run(role, input, small);
    check(whole == two);
    check(whole == pieces);
  }
  return 0;
}
