#pragma once

// Private to the library: the value of one hexadecimal digit, shared by the parsers that decode
// hex (JSON \u escapes, %XX in run-store file names).
namespace car::detail {

// 0-15, or -1 when `c` is not a hex digit (either case).
inline int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace car::detail
