// A program built from the engine and the stdio transport alone (pkg-config carcore-stdio): it
// serves one method of its own over stdin/stdout. CI builds it against the installed libraries
// and checks, with ldd and nm, that it carries no WebSocket code and no OpenSSL.
#include <uv.h>

#include <memory>

#include <car/json.hpp>
#include <car/server.hpp>
#include <car/stdio/stdio_transport.hpp>
#include <car/uv/uv_executor.hpp>

int main() {
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    car::uv::UvExecutor executor(&loop);
    car::ServerConfig config;
    config.require_auth = false;  // no session service here: nothing could authenticate
    car::Server server(executor, config);
    server.methods().add("echo", {car::required("text", car::ParamType::string)},
                         [](const car::Request& request, car::Reply reply) {
                           car::json::Builder out;
                           out.str(*car::param::string(request.params(), "text"));
                           reply.ok(out.view());
                         });
    std::shared_ptr<car::stdio::StdioTransport> stdio;
    stdio = car::stdio::start_stdio(&loop, server, {}, [&] {
      stdio.reset();
      executor.shutdown();
    });
    if (!stdio) return 1;
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  uv_run(&loop, UV_RUN_DEFAULT);  // the close callbacks of what the executor released
  return uv_loop_close(&loop) == 0 ? 0 : 1;
}
