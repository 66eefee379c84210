// PendingUpgrades: the sockets a listener must close when it stops (pending_upgrades.cpp).
#include <doctest/doctest.h>

#include <algorithm>
#include <vector>

#include "car/ws/pending_upgrades.hpp"

using car::ws::PendingUpgrades;

TEST_SUITE("pending_upgrades") {
  TEST_CASE("close_all closes what is still listed, once, and empties the list") {
    PendingUpgrades pending;
    std::vector<int> closed;
    auto a = pending.add([&] { closed.push_back(1); });
    auto b = pending.add([&] { closed.push_back(2); });
    pending.add([&] { closed.push_back(3); });
    CHECK(a != b);
    pending.remove(b);  // upgraded: no longer the listener's to close
    pending.remove(999);  // unknown ids are ignored
    CHECK(pending.size() == 2);
    pending.close_all();
    std::sort(closed.begin(), closed.end());
    CHECK(closed == std::vector<int>{1, 3});
    CHECK(pending.size() == 0);
    pending.close_all();
    CHECK(closed.size() == 2);
  }

  TEST_CASE("a close that removes itself (as a closing socket does) is safe") {
    PendingUpgrades pending;
    int closed = 0;
    PendingUpgrades::Id id = 0;
    id = pending.add([&] {
      pending.remove(id);
      ++closed;
    });
    pending.close_all();
    CHECK(closed == 1);
    CHECK(pending.size() == 0);
  }
}
