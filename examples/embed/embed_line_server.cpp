// A complete embedding of carcore (PROTOCOL.md §10): the program owns its transport —
// newline-delimited JSON over TCP on 127.0.0.1, built from carcore's libuv plumbing (a
// uv::Listener, one uv::Stream and uv::StreamSink per client, the stdio codec's NDJSON framer) —
// installs the CAR services, adds a method of its own and shuts down on SIGINT/SIGTERM in the
// same order as car-daemon.
//
//   embed_line_server [PORT [TOKEN]]   PORT 0 picks a free port; a TOKEN turns auth on.
//   Run records go to $CAR_STATE_DIR (default /tmp/car-embed-state). With CAR_EXPORT_STDOUT=1
//   every stored record and host event is also exported to stdout as JSONL (jsonl_exporter.hpp).
//   Then, for example:
//   printf '%s\n' '{"jsonrpc":"2.0","id":1,"method":"demo.add","params":{"a":2,"b":3}}' | nc 127.0.0.1 PORT
#include <uv.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include <car/carcore.hpp>
#include <car/uv/listener.hpp>
#include <car/uv/stream.hpp>
#include <car/uv/stream_sink.hpp>

#include "jsonl_exporter.hpp"

namespace {

// One client: its stream (embedded: the peer deletes itself once the stream is closed), a sink
// that writes every frame followed by "\n", and the core's connection fed one line at a time.
class LinePeer final : public car::uv::StreamHandler, public car::stdio::FrameEvents {
 public:
  static void serve(car::uv::Listener::Incoming& incoming, car::Server& server) {
    auto* peer = new LinePeer(server);
    if (incoming.accept(peer->stream_) != 0) return;  // already closing: on_closed deletes it
    car::uv::StreamSinkOptions options;
    options.framing.suffix = "\n";
    options.name = "embed";
    // When the core is done with the connection (and its replies are flushed), close the socket.
    peer->sink_ = std::make_shared<car::uv::StreamSink>(
        server.executor(), peer->stream_, options, [peer](const car::SinkEnd&) { peer->stream_.close(); });
    peer->sink_->throttle_reading(peer->stream_);  // stop reading while 4 MiB wait to be sent
    peer->connection_ = server.open_connection("embed-tcp " + peer->stream_.peer_address(), peer->sink_);
    peer->stream_.start_reading();
  }

 private:
  explicit LinePeer(car::Server& server) : stream_(*this), lines_(server.config().max_message) {}

  void on_read(car::uv::Stream&, std::string_view bytes) override { lines_.feed(bytes, *this); }
  void on_read_end(car::uv::Stream&, int status) override {
    if (status != UV_EOF) {
      sink_->transport_gone(car::SinkError::closed, uv_strerror(status));  // the peer is gone
      return;
    }
    lines_.finish(*this);
    connection_->finish_input();  // answer what is in flight, flush, then close
  }
  void on_closed(car::uv::Stream&) override {
    if (sink_) {
      sink_->transport_gone(car::SinkError::closed, "connection closed");  // no-op if ended
      sink_->detach();
    }
    delete this;
  }

  void on_message(std::string_view line) override { connection_->receive(line); }
  void on_framing_error(std::string_view detail) override { connection_->framing_error(detail); }

  car::uv::Stream stream_;
  car::stdio::NdjsonFramer lines_;
  std::shared_ptr<car::uv::StreamSink> sink_;
  std::shared_ptr<car::Connection> connection_;
};

// car-daemon's shutdown order: stop listening, close every connection with 1001, end open runs
// `incomplete`, give connections 2 s (the run store 10 s) to flush, cut the rest, stop the loop.
struct Shutdown {
  car::uv::UvExecutor& executor;
  car::Server& server;
  car::runs::RunService& runs;
  car::uv::Listener& listener;
  uv_signal_t sigint{};
  uv_signal_t sigterm{};
  uv_timer_t timer{};
  std::atomic<bool> runs_flushed{false};  // set on a pool thread
  bool started = false;
  int ticks = 0;

  void arm(uv_loop_t* loop) {
    auto on_signal = [](uv_signal_t* s, int) { static_cast<Shutdown*>(s->data)->begin(); };
    for (uv_signal_t* s : {&sigint, &sigterm}) {
      uv_signal_init(loop, s);
      s->data = this;
    }
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_timer_init(loop, &timer);
    timer.data = this;
  }

  void begin() {
    if (started) return;
    started = true;
    listener.stop();
    server.close_all(1001, "server shutting down");
    runs.shutdown([this] { runs_flushed = true; });
    uv_timer_start(&timer, [](uv_timer_t* t) { static_cast<Shutdown*>(t->data)->tick(); }, 20, 20);
  }

  void tick() {
    ++ticks;
    bool connections_done = server.connection_count() == 0 || ticks * 20 >= 2000;
    bool store_done = runs_flushed || ticks * 20 >= 10000;
    if (!connections_done || !store_done) return;
    for (uv_handle_t* h : {reinterpret_cast<uv_handle_t*>(&timer), reinterpret_cast<uv_handle_t*>(&sigint),
                           reinterpret_cast<uv_handle_t*>(&sigterm)}) {
      uv_close(h, nullptr);
    }
    for (auto& c : server.connections()) c->sink().abort(car::SinkError::aborted, "shutdown");
    executor.shutdown();
  }
};

}  // namespace

int main(int argc, char** argv) {
  int port = argc > 1 ? std::atoi(argv[1]) : 9200;
  const char* token = argc > 2 ? argv[2] : nullptr;
  const char* state_dir = std::getenv("CAR_STATE_DIR");
  std::signal(SIGPIPE, SIG_IGN);  // a peer that vanishes mid-write is EPIPE, not death

  uv_loop_t* loop = uv_default_loop();
  car::uv::UvExecutor executor(loop);
  car::ServerConfig config;
  config.require_auth = token != nullptr;  // without a token this demo trusts localhost
  car::Server server(executor, config);

  // Every service is installed before the first connection.
  car::session::AuthConfig auth;
  if (token != nullptr) auth.token = token;
  auto sessions = car::session::install_session_service(server, auth);  // session.auth, server.*
  auto host = car::host::install_host_services(server);                  // host.*, tools.*
  car::runs::RunConfig run_config;
  run_config.state_dir = state_dir != nullptr ? state_dir : "/tmp/car-embed-state";
  const char* export_stdout = std::getenv("CAR_EXPORT_STDOUT");
  if (export_stdout != nullptr && std::string(export_stdout) == "1") {
    run_config.exporters.push_back(std::make_shared<JsonlExporter>(stdout));
  }
  auto runs = car::runs::install_run_services(server, run_config);       // runs.*
  if (auto tap = runs->host_event_exporter()) host->state().subscribe("record-exporters", tap);
  server.methods().add("demo.add",
                       {car::required("a", car::ParamType::integer), car::required("b", car::ParamType::integer)},
                       [](const car::Request& req, car::Reply reply) {
                         auto sum = *car::param::integer(req.params(), "a") + *car::param::integer(req.params(), "b");
                         reply.ok(std::to_string(sum));
                       });

  car::uv::ListenerOptions listen_options;
  listen_options.max_connections = 1024;  // beyond that, new connections are closed at once
  listen_options.open_connections = [&server] { return server.connection_count(); };
  auto started = car::uv::Listener::listen_tcp(
      loop, "127.0.0.1", static_cast<std::uint16_t>(port), listen_options,
      [&server](car::uv::Listener::Incoming& incoming) { LinePeer::serve(incoming, server); });
  if (!started) {
    std::fprintf(stderr, "%s\n", started.error().message.c_str());
    return 1;
  }
  car::uv::Listener& listener = *started.value();
  std::fprintf(stderr, "listening tcp://127.0.0.1:%u (newline-delimited JSON)\n", unsigned{listener.port()});

  Shutdown shutdown{executor, server, *runs, listener};
  shutdown.arm(loop);
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}
