#pragma once

#include <cstddef>
#include <string>

#include "car/export.hpp"

// Unpredictable identifiers and secrets, from the kernel's CSPRNG (getrandom). Thread-safe.
namespace car {

// A random (version 4) UUID in its canonical lowercase 36-character form.
CAR_API std::string uuid_v4();

// `bytes` random bytes as 2*bytes lowercase hex characters (tokens are 32 bytes => 64 chars).
CAR_API std::string random_hex(std::size_t bytes);

}  // namespace car
