#pragma once

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include "car/export.hpp"

// JSON helpers on RapidJSON shared by the core and its modules.
namespace car::json {

using Value = rapidjson::Value;
using Document = rapidjson::Document;
using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

// Deepest nesting accepted in an inbound message. Parsing is iterative (no recursion), but later
// stages (serializing a stored turn, previews) walk values recursively, so depth is bounded here.
inline constexpr std::size_t default_max_depth = 256;

// Parses `text` into `doc` (strict JSON, UTF-8 validated, iterative, depth-limited). Returns an
// error detail on failure (the document is then unspecified). Never throws.
CAR_API std::optional<std::string> parse(std::string_view text, Document& doc,
                                 std::size_t max_depth = default_max_depth);

// `text` with every backslash-u escape of an unpaired UTF-16 surrogate (inside a string) turned
// into the escape of U+FFFD, same length; nullopt when there is none. parse() applies it: such
// text is valid JSON (RFC 8259) that RapidJSON would refuse.
CAR_API std::optional<std::string> replace_lone_surrogate_escapes(std::string_view text);

// Compact serialization.
CAR_API std::string stringify(const Value& value);

inline std::string_view view(const Value& v) { return {v.GetString(), v.GetStringLength()}; }

// Writes `text` as a JSON string literal (quoted, escaped) to `out`.
CAR_API void append_quoted(std::string& out, std::string_view text);

// Builds one JSON text with a RapidJSON writer; the helpers keep handler code short.
class CAR_API Builder {
 public:
  Builder() : writer_(buffer_) {}
  Writer& w() { return writer_; }
  Builder& key(std::string_view k) {
    writer_.Key(k.data(), static_cast<rapidjson::SizeType>(k.size()));
    return *this;
  }
  Builder& str(std::string_view s) {
    writer_.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
    return *this;
  }
  Builder& raw(std::string_view json) {
    writer_.RawValue(json.data(), json.size(), rapidjson::kObjectType);
    return *this;
  }
  Builder& value(const Value& v) {
    v.Accept(writer_);
    return *this;
  }
  Builder& boolean(bool b) {
    writer_.Bool(b);
    return *this;
  }
  Builder& integer(long long i) {
    writer_.Int64(i);
    return *this;
  }
  Builder& null() {
    writer_.Null();
    return *this;
  }
  Builder& begin_object() {
    writer_.StartObject();
    return *this;
  }
  Builder& end_object() {
    writer_.EndObject();
    return *this;
  }
  Builder& begin_array() {
    writer_.StartArray();
    return *this;
  }
  Builder& end_array() {
    writer_.EndArray();
    return *this;
  }
  std::string_view view() const { return {buffer_.GetString(), buffer_.GetSize()}; }
  std::string take() const { return std::string(view()); }

 private:
  rapidjson::StringBuffer buffer_;
  Writer writer_;
};

}  // namespace car::json
