#include "car/runs/run_store.hpp"

namespace car::runs {

// A store that is durable on append (or an embedder's that never claims more) has nothing to do.
std::optional<std::string> RunStore::sync(std::string_view, std::string_view) {
  return std::nullopt;
}

}  // namespace car::runs
