#include "car/json.hpp"

#include <rapidjson/encodedstream.h>
#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>

#include <fmt/format.h>

#include "car/detail/hex_value.hpp"

namespace car::json {
namespace {

// Forwards SAX events to the document while counting depth, so a hostile `[[[[...` is refused
// before it costs memory or, later, stack.
class DepthLimitedHandler {
 public:
  DepthLimitedHandler(Document& doc, std::size_t max_depth) : doc_(doc), max_depth_(max_depth) {}
  bool Null() { return doc_.Null(); }
  bool Bool(bool b) { return doc_.Bool(b); }
  bool Int(int i) { return doc_.Int(i); }
  bool Uint(unsigned u) { return doc_.Uint(u); }
  bool Int64(int64_t i) { return doc_.Int64(i); }
  bool Uint64(uint64_t u) { return doc_.Uint64(u); }
  bool Double(double d) { return doc_.Double(d); }
  bool RawNumber(const char* s, rapidjson::SizeType n, bool copy) {
    return doc_.RawNumber(s, n, copy);
  }
  bool String(const char* s, rapidjson::SizeType n, bool copy) { return doc_.String(s, n, copy); }
  bool StartObject() { return enter() && doc_.StartObject(); }
  bool Key(const char* s, rapidjson::SizeType n, bool copy) { return doc_.Key(s, n, copy); }
  bool EndObject(rapidjson::SizeType members) {
    --depth_;
    return doc_.EndObject(members);
  }
  bool StartArray() { return enter() && doc_.StartArray(); }
  bool EndArray(rapidjson::SizeType elements) {
    --depth_;
    return doc_.EndArray(elements);
  }
  bool too_deep() const { return too_deep_; }

 private:
  bool enter() {
    if (++depth_ > max_depth_) {
      too_deep_ = true;
      return false;
    }
    return true;
  }
  Document& doc_;
  std::size_t max_depth_;
  std::size_t depth_ = 0;
  bool too_deep_ = false;
};

// The value of the four hex digits at `at`, or -1.
int hex4(std::string_view s, std::size_t at) {
  if (at + 4 > s.size()) return -1;
  int value = 0;
  for (std::size_t i = at; i < at + 4; ++i) {
    int d = car::detail::hex_value(s[i]);
    if (d < 0) return -1;
    value = value * 16 + d;
  }
  return value;
}

bool is_surrogate(int unit) { return unit >= 0xD800 && unit <= 0xDFFF; }
bool is_high_surrogate(int unit) { return unit >= 0xD800 && unit <= 0xDBFF; }
bool is_low_surrogate(int unit) { return unit >= 0xDC00 && unit <= 0xDFFF; }

// True when `text` may hold a backslash-u escape of a UTF-16 surrogate (D800-DFFF). A cheap
// filter: a false positive only costs a scan.
bool may_hold_surrogate_escape(std::string_view text) {
  for (auto at = text.find("\\u"); at != std::string_view::npos; at = text.find("\\u", at + 2)) {
    if (at + 2 < text.size() && (text[at + 2] == 'd' || text[at + 2] == 'D')) return true;
  }
  return false;
}

// Messages up to this size parse with the calling thread's reader, whose stack (the copy of the
// string being parsed, the iterative parser's states) keeps its memory from one message to the
// next; a larger one gets a reader of its own, freed after it, so no thread keeps more than about
// this much.
constexpr std::size_t reused_reader_max_text = 64 * 1024;

rapidjson::Reader& thread_reader() {
  thread_local rapidjson::Reader reader(&shared_crt_allocator());
  return reader;
}

}  // namespace

rapidjson::CrtAllocator& shared_crt_allocator() {
  static rapidjson::CrtAllocator allocator;
  return allocator;
}

std::optional<std::string> replace_lone_surrogate_escapes(std::string_view text) {
  std::string out;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (!in_string) {
      in_string = c == '"';
      continue;
    }
    if (c == '"') {
      in_string = false;
      continue;
    }
    if (c != '\\' || i + 1 >= text.size()) continue;
    int unit = text[i + 1] == 'u' ? hex4(text, i + 2) : -1;
    if (unit < 0) {
      ++i;  // a two-character escape (backslash, quote, n, ...): skip its second character
      continue;
    }
    if (is_high_surrogate(unit) && i + 7 < text.size() && text[i + 6] == '\\' &&
        text[i + 7] == 'u' && is_low_surrogate(hex4(text, i + 8))) {
      i += 11;  // a proper pair
      continue;
    }
    if (is_surrogate(unit)) {
      if (out.empty()) out.assign(text);
      out.replace(i + 2, 4, "FFFD");  // same length: error offsets stay true
    }
    i += 5;
  }
  if (out.empty()) return std::nullopt;
  return out;
}

std::optional<std::string> parse(std::string_view text, Document& doc, std::size_t max_depth) {
  // RFC 8259's grammar allows any backslash-u escape, so a string cut in the middle of a
  // surrogate pair (JavaScript's slice, then JSON.stringify) is valid JSON; RapidJSON refuses
  // it, and the request would be answered as a parse error without its id. Such escapes become
  // U+FFFD instead, the usual replacement when UTF-16 text is turned into UTF-8.
  std::optional<std::string> repaired;
  if (may_hold_surrogate_escape(text)) {
    repaired = replace_lone_surrogate_escapes(text);
    if (repaired) text = *repaired;
  }
  constexpr unsigned flags = rapidjson::kParseIterativeFlag | rapidjson::kParseValidateEncodingFlag;
  rapidjson::MemoryStream memory(text.data(), text.size());
  rapidjson::EncodedInputStream<rapidjson::UTF8<>, rapidjson::MemoryStream> input(memory);
  DepthLimitedHandler handler(doc, max_depth);
  std::optional<rapidjson::Reader> own_reader;
  if (text.size() > reused_reader_max_text) own_reader.emplace(&shared_crt_allocator());
  rapidjson::Reader& reader = own_reader ? *own_reader : thread_reader();
  bool ok = false;
  auto generator = [&](Document&) {
    ok = !reader.Parse<flags>(input, handler).IsError();
    return ok;
  };
  doc.Populate(generator);
  // RapidJSON reads a 0x00 byte as the end of its input, so a NUL after a complete value would
  // hide whatever follows it. A raw NUL is never valid JSON outside a string (and RapidJSON
  // refuses it inside one): stopping short of the end is a parse error.
  if (ok && memory.Tell() < text.size()) {
    return fmt::format("NUL byte at offset {}", memory.Tell());
  }
  if (ok) return std::nullopt;
  if (handler.too_deep()) return fmt::format("nesting deeper than {}", max_depth);
  return fmt::format("{} at offset {}", rapidjson::GetParseError_En(reader.GetParseErrorCode()),
                     reader.GetErrorOffset());
}

std::string stringify(const Value& value) {
  std::string text;
  StringOutput output{&text};
  Writer writer(output, &shared_crt_allocator());
  value.Accept(writer);
  return text;
}

void append_quoted(std::string& out, std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  out.push_back('"');
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (u < 0x20) {
          out += "\\u00";
          out.push_back(hex[u >> 4]);
          out.push_back(hex[u & 0xF]);
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
}

}  // namespace car::json
