#pragma once

// Shared by the stdio framer fuzz targets: records every FrameEvents upcall and aborts (so
// libFuzzer reports a crash) as soon as one breaks an invariant every framer must keep.
#include <cstddef>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "car/stdio/framing_events.hpp"

namespace car::fuzz {

struct FramerEvent {
  bool is_message;
  std::string text;
  bool operator==(const FramerEvent&) const = default;
};

class CheckingRecorder : public car::stdio::FrameEvents {
 public:
  // A framer-specific invariant on each message; false aborts.
  using MessageCheck = bool (*)(std::string_view text);

  explicit CheckingRecorder(std::size_t max, MessageCheck check = nullptr)
      : max_(max), check_(check) {}

  void on_message(std::string_view text) override {
    if (text.size() > max_) std::abort();  // never above the configured maximum
    if (check_ != nullptr && !check_(text)) std::abort();
    events.push_back({true, std::string(text)});
  }
  void on_framing_error(std::string_view detail) override {
    if (detail.empty()) std::abort();  // every error says what went wrong
    events.push_back({false, std::string(detail)});
  }

  std::vector<FramerEvent> events;

 private:
  std::size_t max_;
  MessageCheck check_;
};

}  // namespace car::fuzz
