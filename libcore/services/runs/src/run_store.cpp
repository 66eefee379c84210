// The default behaviour of RunStore's optional members, for embedders' stores that only implement
// append/find/read/list.
#include <algorithm>

#include "car/runs/run_store.hpp"

namespace car::runs {

// A store that is durable on append (or an embedder's that never claims more) has nothing to do.
std::optional<std::string> RunStore::sync(std::string_view, std::string_view) {
  return std::nullopt;
}

std::optional<RunPage> RunStore::list_page(std::string_view agent_id, std::size_t limit,
                                           std::optional<std::string_view> before) {
  std::vector<RunSummary> all = list(agent_id);
  std::sort(all.begin(), all.end(), [](const RunSummary& a, const RunSummary& b) {
    if (a.started_at != b.started_at) return a.started_at > b.started_at;
    return a.run_id > b.run_id;
  });
  std::size_t first = 0;
  if (before) {
    auto it = std::find_if(all.begin(), all.end(),
                           [&](const RunSummary& s) { return s.run_id == *before; });
    if (it == all.end()) return std::nullopt;
    first = static_cast<std::size_t>(it - all.begin()) + 1;
  }
  RunPage page;
  std::size_t end = limit == 0 ? all.size() : std::min(all.size(), first + limit);
  for (std::size_t i = first; i < end; ++i) page.runs.push_back(std::move(all[i]));
  if (end < all.size() && !page.runs.empty()) page.next_before = page.runs.back().run_id;
  return page;
}

std::size_t RunStore::prune(std::optional<std::string_view>, const RetentionPolicy&,
                            const IsOpenRun&, std::chrono::system_clock::time_point) {
  return 0;
}

}  // namespace car::runs
