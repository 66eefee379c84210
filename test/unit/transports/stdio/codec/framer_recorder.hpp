#pragma once

// Shared by the stdio framer tests: records every FrameEvents upcall in order, so a test can
// compare the whole sequence (and doctest prints it readably when they differ).
#include <doctest/doctest.h>

#include <string>
#include <string_view>
#include <vector>

#include "car/stdio/framing_events.hpp"

namespace car::test {

// One upcall: 'm' for a message, 'e' for a framing error.
struct FramerEvent {
  char kind;
  std::string text;
  bool operator==(const FramerEvent&) const = default;
};

inline FramerEvent msg(std::string text) { return {'m', std::move(text)}; }
inline FramerEvent err(std::string text) { return {'e', std::move(text)}; }

class FramerRecorder : public car::stdio::FrameEvents {
 public:
  void on_message(std::string_view text) override {
    events.push_back(msg(std::string(text)));
    last_data = text.data();
  }
  void on_framing_error(std::string_view detail) override {
    events.push_back(err(std::string(detail)));
  }
  std::vector<FramerEvent> events;
  const char* last_data = nullptr;  // where the last message's bytes were (zero-copy checks)
};

}  // namespace car::test

namespace doctest {
template <>
struct StringMaker<std::vector<car::test::FramerEvent>> {
  static String convert(const std::vector<car::test::FramerEvent>& events) {
    std::string out = "{";
    for (const auto& e : events) out += std::string(1, e.kind) + ":\"" + e.text + "\" ";
    return String((out + "}").c_str());
  }
};
}  // namespace doctest
