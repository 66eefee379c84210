// car-daemon's plain-HTTP route table (http_routes.hpp).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <string>

#include "http_routes.hpp"

using car::daemon::HttpRoutes;
using car::ws::PlainHttpRequest;
using car::ws::PlainHttpResponse;

namespace {

PlainHttpRequest request(std::string_view method, std::string_view target) {
  return PlainHttpRequest{method, target, "127.0.0.1:9100", "127.0.0.1:9100", false};
}

// A route whose body names the path and the method it was called with.
HttpRoutes::Handler echo(std::string name) {
  return [name](const PlainHttpRequest& r) {
    return PlainHttpResponse{200, "text/plain", name + " " + std::string(r.method), {}};
  };
}

}  // namespace

TEST_SUITE("http_routes") {
  TEST_CASE("an exact path is served for GET and HEAD; the query is ignored") {
    HttpRoutes routes;
    routes.add("/healthz", echo("health"));
    routes.add("/metrics", echo("metrics"));
    CHECK(routes.answer(request("GET", "/healthz")).body == "health GET");
    CHECK(routes.answer(request("HEAD", "/healthz")).body == "health HEAD");
    CHECK(routes.answer(request("GET", "/metrics?name[]=x")).body == "metrics GET");
    CHECK(routes.answer(request("GET", "/metrics?")).status == 200);
  }

  TEST_CASE("no prefix, suffix or case folding: anything else is 404") {
    HttpRoutes routes;
    routes.add("/healthz", echo("health"));
    for (const char* target : {"/", "/healthz/", "/healthzz", "/HEALTHZ", "healthz", "/a/healthz",
                               "*", "http://localhost/healthz", ""}) {
      CAPTURE(target);
      const PlainHttpResponse r = routes.answer(request("GET", target));
      CHECK(r.status == 404);
      CHECK(r.headers.empty());
    }
    CHECK(HttpRoutes().answer(request("GET", "/healthz")).status == 404);
  }

  TEST_CASE("another method on a known path is 405 with Allow; on an unknown path 404") {
    HttpRoutes routes;
    routes.add("/metrics", echo("metrics"));
    for (const char* method : {"POST", "PUT", "DELETE", "OPTIONS", "get"}) {
      CAPTURE(method);
      const PlainHttpResponse r = routes.answer(request(method, "/metrics"));
      CHECK(r.status == 405);
      REQUIRE(r.headers.size() == 1);
      CHECK(r.headers[0].first == "Allow");
      CHECK(r.headers[0].second == "GET, HEAD");
    }
    CHECK(routes.answer(request("POST", "/other")).status == 404);
  }

  TEST_CASE("a second add of a path replaces the first") {
    HttpRoutes routes;
    routes.add("/", echo("first"));
    routes.add("/", echo("second"));
    CHECK(routes.answer(request("GET", "/")).body == "second GET");
  }
}
