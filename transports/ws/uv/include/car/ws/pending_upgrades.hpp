#pragma once

#include <cstdint>
#include <functional>
#include <unordered_map>

#include "car/export.hpp"

// The sockets one listener accepted that have not completed their WebSocket upgrade. They are not
// connections of the Server yet, so Server::close_all does not reach them; without this, stopping
// the listener left each open until its upgrade timeout (10 s), holding a daemon's shutdown.
// Stopping a listener closes them. Bounded by the listener's accept-time cap
// (websocket_listener_options). Loop thread only.
namespace car::ws {

class CAR_API PendingUpgrades {
 public:
  using Id = std::uint64_t;

  PendingUpgrades() = default;
  PendingUpgrades(const PendingUpgrades&) = delete;
  PendingUpgrades& operator=(const PendingUpgrades&) = delete;

  // A socket starts upgrading; `close` closes it (it must not throw). Returns its id.
  Id add(std::function<void()> close);
  // The socket upgraded or closed on its own. Unknown ids are ignored.
  void remove(Id id);
  // Closes every socket still upgrading (each close may call remove; that is fine).
  void close_all();
  std::size_t size() const { return closers_.size(); }

 private:
  Id next_ = 0;
  std::unordered_map<Id, std::function<void()>> closers_;
};

}  // namespace car::ws
