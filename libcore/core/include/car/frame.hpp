#pragma once

#include <memory>
#include <string>

// A frame is one complete outbound message (a JSON text). It is immutable and shared, so one
// serialized event can be offered to many sinks without a copy: each sink holds a reference until
// its write completes.
namespace car {

using Frame = std::shared_ptr<const std::string>;

inline Frame make_frame(std::string text) {
  return std::make_shared<const std::string>(std::move(text));
}

}  // namespace car
