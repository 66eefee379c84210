#pragma once

#include <cstddef>
#include <string>

// Unpredictable identifiers and secrets, from OpenSSL's CSPRNG. Thread-safe.
namespace car {

// A random (version 4) UUID in its canonical lowercase 36-character form.
std::string uuid_v4();

// `bytes` random bytes as 2*bytes lowercase hex characters (tokens are 32 bytes => 64 chars).
std::string random_hex(std::size_t bytes);

}  // namespace car
