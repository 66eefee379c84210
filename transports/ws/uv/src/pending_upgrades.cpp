#include "car/ws/pending_upgrades.hpp"

#include <utility>

namespace car::ws {

PendingUpgrades::Id PendingUpgrades::add(std::function<void()> close) {
  Id id = ++next_;
  closers_.emplace(id, std::move(close));
  return id;
}

void PendingUpgrades::remove(Id id) { closers_.erase(id); }

void PendingUpgrades::close_all() {
  // Taken out first: each close removes its own entry while we iterate.
  auto closers = std::exchange(closers_, {});
  for (auto& [id, close] : closers) close();
}

}  // namespace car::ws
