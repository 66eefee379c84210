#pragma once

#include <functional>
#include <map>
#include <string>

#include "car/ws/plain_http.hpp"

// The plain-HTTP side of car-daemon's WebSocket listeners (car/ws/plain_http.hpp): a table from
// exact path to handler. The transport has already checked Host (DNS rebinding) and the request
// head; this only decides which page, if any, answers.
//
// Threads: add() before the listeners start; answer() from any thread once they have (the table
// is then only read).
namespace car::daemon {

class HttpRoutes {
 public:
  using Handler = std::function<car::ws::PlainHttpResponse(const car::ws::PlainHttpRequest&)>;

  // Serves `path` (e.g. "/healthz") with `handler`; a second add of the same path replaces the
  // first. Routes come from code at startup, never from peers, so the table needs no bound.
  void add(std::string path, Handler handler);

  // The target without its `?query` is matched exactly (no prefixes, no trailing-slash folding):
  // an unknown path is 404; a known path with a method other than GET or HEAD is 405 with
  // `Allow: GET, HEAD`; otherwise the handler's response (HEAD calls it too: the transport drops
  // the body and keeps its Content-Length).
  car::ws::PlainHttpResponse answer(const car::ws::PlainHttpRequest& request) const;

 private:
  std::map<std::string, Handler, std::less<>> routes_;
};

}  // namespace car::daemon
