// A minimal embedding of carcore (PROTOCOL.md §10): the program owns its listener and its framing (here
// newline-delimited JSON over TCP on 127.0.0.1), implements FrameSink for its sockets, and hands
// each connection's complete messages to the core. It also adds a method of its own.
//
//   embed_line_server [PORT]      then e.g.:  printf '%s\n' '{"jsonrpc":"2.0","id":1,
//                                 "method":"demo.add","params":{"a":2,"b":3}}' | nc 127.0.0.1 PORT
#include <uv.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <car/carcore.hpp>

namespace {

// The embedder's FrameSink: QueuedFrameSink does bounds, deadlines and threading; this class only
// writes batches to its TCP handle and closes it.
class LineSink final : public car::QueuedFrameSink {
 public:
  LineSink(car::Executor& executor, uv_tcp_t* tcp) : QueuedFrameSink(executor, {}), tcp_(tcp) {
    write_.data = this;
  }

 private:
  void start_write(const Batch& batch) override {
    static char newline = '\n';
    bufs_.clear();
    for (const auto& p : batch) {
      bufs_.push_back(uv_buf_init(const_cast<char*>(p.frame->data()),
                                  static_cast<unsigned>(p.frame->size())));
      bufs_.push_back(uv_buf_init(&newline, 1));
    }
    keep_ = shared_from_this();  // the write request lives in this object
    int rc = uv_write(&write_, reinterpret_cast<uv_stream_t*>(tcp_), bufs_.data(),
                      static_cast<unsigned>(bufs_.size()), [](uv_write_t* req, int status) {
                        auto* self = static_cast<LineSink*>(req->data);
                        auto keep = std::move(self->keep_);
                        self->write_done(status == 0 ? car::SinkError::none : car::SinkError::io_error);
                      });
    if (rc != 0) {
      auto keep = std::move(keep_);
      write_done(car::SinkError::io_error);
    }
  }
  void shut_down_transport(const car::SinkEnd&) override {
    auto* handle = reinterpret_cast<uv_handle_t*>(tcp_);
    if (!uv_is_closing(handle)) {
      uv_close(handle, [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    }
  }

  uv_tcp_t* tcp_;
  uv_write_t write_{};
  std::vector<uv_buf_t> bufs_;
  std::shared_ptr<QueuedFrameSink> keep_;
};

struct Peer {
  std::shared_ptr<LineSink> sink;
  std::shared_ptr<car::Connection> connection;
  std::string pending;  // bytes of an unfinished line (bounded below)
};

car::Server* g_server = nullptr;
car::Executor* g_executor = nullptr;

void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  auto* peer = static_cast<Peer*>(stream->data);
  if (nread > 0) {
    peer->pending.append(buf->base, static_cast<std::size_t>(nread));
    std::size_t start = 0;
    for (std::size_t nl; (nl = peer->pending.find('\n', start)) != std::string::npos; start = nl + 1) {
      peer->connection->receive(std::string_view(peer->pending).substr(start, nl - start));
    }
    peer->pending.erase(0, start);
    if (peer->pending.size() > (1u << 20)) peer->connection->framing_error("line too long");
    if (peer->pending.size() > (1u << 20)) peer->pending.clear();
  } else if (nread < 0) {
    uv_read_stop(stream);
    peer->connection->end();  // the core tears the session down and closes the sink
    stream->data = nullptr;
    delete peer;
  }
  delete[] buf->base;
}

void on_connection(uv_stream_t* server, int status) {
  if (status != 0) return;
  auto* tcp = new uv_tcp_t;
  uv_tcp_init(server->loop, tcp);
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(tcp)) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(tcp), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    return;
  }
  auto* peer = new Peer;
  peer->sink = std::make_shared<LineSink>(*g_executor, tcp);
  peer->connection = g_server->open_connection("embed-tcp", peer->sink);
  tcp->data = peer;
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(tcp),
      [](uv_handle_t*, std::size_t size, uv_buf_t* buf) { *buf = uv_buf_init(new char[size], static_cast<unsigned>(size)); },
      on_read);
}

}  // namespace

int main(int argc, char** argv) {
  int port = argc > 1 ? std::atoi(argv[1]) : 9200;
  std::signal(SIGPIPE, SIG_IGN);
  uv_loop_t* loop = uv_default_loop();
  car::uv::UvExecutor executor(loop);
  car::ServerConfig config;
  config.require_auth = false;  // an embedder decides; this demo trusts localhost
  car::Server server(executor, config);
  auto sessions = car::session::install_session_service(server, {});
  server.methods().add("demo.add",
                       {car::required("a", car::ParamType::integer), car::required("b", car::ParamType::integer)},
                       [](const car::Request& req, car::Reply reply) {
                         auto sum = *car::param::integer(req.params(), "a") + *car::param::integer(req.params(), "b");
                         reply.ok(std::to_string(sum));
                       });
  g_server = &server;
  g_executor = &executor;

  uv_tcp_t listener;
  uv_tcp_init(loop, &listener);
  sockaddr_in addr{};
  uv_ip4_addr("127.0.0.1", port, &addr);
  if (uv_tcp_bind(&listener, reinterpret_cast<const sockaddr*>(&addr), 0) != 0 ||
      uv_listen(reinterpret_cast<uv_stream_t*>(&listener), 128, on_connection) != 0) {
    std::fprintf(stderr, "cannot listen on 127.0.0.1:%d\n", port);
    return 1;
  }
  sockaddr_storage bound{};
  int len = sizeof bound;
  uv_tcp_getsockname(&listener, reinterpret_cast<sockaddr*>(&bound), &len);
  std::fprintf(stderr, "listening tcp://127.0.0.1:%d (newline-delimited JSON)\n",
               ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port));
  return uv_run(loop, UV_RUN_DEFAULT);
}
