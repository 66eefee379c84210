#include "http_routes.hpp"

#include <string_view>
#include <utility>

namespace car::daemon {

void HttpRoutes::add(std::string path, Handler handler) {
  routes_.insert_or_assign(std::move(path), std::move(handler));
}

car::ws::PlainHttpResponse HttpRoutes::answer(const car::ws::PlainHttpRequest& request) const {
  std::string_view path = request.target;
  if (auto query = path.find('?'); query != std::string_view::npos) path = path.substr(0, query);
  auto found = routes_.find(path);
  if (found == routes_.end() || !found->second) {
    return {404, "text/plain; charset=utf-8", "not found\n", {}};
  }
  if (request.method != "GET" && request.method != "HEAD") {
    return {405, "text/plain; charset=utf-8", "method not allowed\n", {{"Allow", "GET, HEAD"}}};
  }
  return found->second(request);
}

}  // namespace car::daemon
