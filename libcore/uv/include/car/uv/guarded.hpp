#pragma once

#include <exception>

#include "car/log.hpp"

// No exception may unwind through libuv's C frames. Every libuv trampoline (in this library and
// in the transports) runs the C++ it calls through guarded(): an exception is logged, naming the
// callback with `what` (a literal), and reported as `false` so the trampoline can put its object
// into a safe state (usually: close it). Any thread; never throws.
namespace car::uv {

template <typename F>
bool guarded(const char* what, F&& fn) noexcept {
  try {
    fn();
    return true;
  } catch (const std::exception& e) {
    log_error("uncaught exception in {}: {}", what, e.what());
  } catch (...) {
    log_error("uncaught non-standard exception in {}", what);
  }
  return false;
}

}  // namespace car::uv
