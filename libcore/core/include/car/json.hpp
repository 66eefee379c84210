#pragma once

#include <rapidjson/document.h>
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

// RapidJSON's internal stacks (reader, writer, document) each heap-allocate their own
// CrtAllocator when given none: one more malloc and free per parse or serialization. CrtAllocator
// has no state, so every stack can share this one; it is safe from any thread.
CAR_API rapidjson::CrtAllocator& shared_crt_allocator();

// A RapidJSON output stream that appends to a std::string, so a serialization ends in the string
// the caller keeps rather than in a StringBuffer that is copied out afterwards.
struct StringOutput {
  using Ch = char;
  std::string* out;
  void Put(char c) { out->push_back(c); }
  void Flush() {}
};

// The writer reserves before a run of unchecked puts (strings, raw values); found by
// argument-dependent lookup over RapidJSON's generic no-op versions, they let a long string grow
// the text once.
inline void PutReserve(StringOutput& stream, std::size_t count) {
  stream.out->reserve(stream.out->size() + count);
}
inline void PutUnsafe(StringOutput& stream, char c) { stream.out->push_back(c); }

using Writer = rapidjson::Writer<StringOutput, rapidjson::UTF8<>, rapidjson::UTF8<>,
                                 rapidjson::CrtAllocator>;

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
  Builder() : writer_(output_, &shared_crt_allocator()) { text_.reserve(256); }
  Builder(const Builder&) = delete;
  Builder& operator=(const Builder&) = delete;
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
  std::string_view view() const { return text_; }
  std::string take() const { return text_; }

 private:
  std::string text_;
  StringOutput output_{&text_};
  Writer writer_;
};

}  // namespace car::json
