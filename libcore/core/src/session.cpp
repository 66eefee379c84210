#include "car/session.hpp"

namespace car {

SessionSlot* Session::find_slot(const SessionSlotKey& key) const {
  std::lock_guard lock(slots_mutex_);
  for (const auto& [k, slot] : slots_) {
    if (k == &key) return slot.get();
  }
  return nullptr;
}

SessionSlot& Session::slot_or_create(const SessionSlotKey& key,
                                     std::unique_ptr<SessionSlot> (*make)()) {
  // A handful of services at most: a linear scan beats a map, and the lock is held only for it.
  std::lock_guard lock(slots_mutex_);
  for (const auto& [k, slot] : slots_) {
    if (k == &key) return *slot;
  }
  slots_.emplace_back(&key, make());
  return *slots_.back().second;
}

}  // namespace car
