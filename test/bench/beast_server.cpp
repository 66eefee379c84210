// beast-server: the JSON-RPC baseline a C++ team would write with Boost.Beast (issue 14), as the
// Beast examples teach it: one single-threaded io_context, websocket::stream over tcp_stream (or
// a Unix-domain socket), async_accept / async_read / async_write, and a per-session write queue
// because Beast allows one outstanding write per stream. The JSON work is baseline_rpc's, the
// same code floor-server runs, so only the transport differs.
//
//   beast-server (--tcp PORT | --unix PATH) [--cpu N] [--max-seconds N]
//
// Prints `listening ws://127.0.0.1:PORT` or `listening unix:PATH` on stderr when ready, like
// car-daemon. Fan-out: each runs.record_turns batch is serialized once (baseline_rpc) and the
// one shared batch is queued on every subscriber's session; each event goes out as its own
// WebSocket message (one async_write each), which is how a Beast session sends messages.
// No bounds, no auth, no persistence — a baseline, not a daemon.
#include <sched.h>

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility> (fixed in later
// Boosts); GCC 12 in C++20 mode then fails, so it is included first.
#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <memory>
#include <string>
#include <type_traits>

#include "baseline_rpc.hpp"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using unix_socket = asio::local::stream_protocol;

// One WebSocket session. `Stream` is beast::tcp_stream or a Unix-domain socket.
template <class Stream>
class Session final : public std::enable_shared_from_this<Session<Stream>>,
                      public car_bench::baseline::Peer {
 public:
  template <class Socket>
  Session(Socket&& socket, car_bench::baseline::Rpc& rpc)
      : ws_(std::forward<Socket>(socket)), rpc_(rpc) {}
  ~Session() override { rpc_.forget(*this); }

  void run() {
    if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
      // The websocket stream has its own timeouts; the tcp_stream's would cut idle sessions.
      beast::get_lowest_layer(ws_).expires_never();
    }
    ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
    ws_.async_accept(beast::bind_front_handler(&Session::on_accept, this->shared_from_this()));
  }

  void send_text(std::string_view json) override {
    queue_.push_back(Outgoing{nullptr, 0, std::string(json)});
    if (queue_.size() == 1) do_write();
  }
  void send_batch(const car_bench::baseline::SharedBatch& batch) override {
    queue_.push_back(Outgoing{batch, 0, {}});
    if (queue_.size() == 1) do_write();
  }

 private:
  struct Outgoing {
    car_bench::baseline::SharedBatch batch;  // shared events, or null for `own`
    std::size_t next = 0;                    // the batch's next event
    std::string own;                         // a reply
  };

  void on_accept(beast::error_code ec) {
    if (ec) return;
    ws_.text(true);
    do_read();
  }

  void do_read() {
    ws_.async_read(buffer_, beast::bind_front_handler(&Session::on_read, this->shared_from_this()));
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (ec) return;  // closed or failed: the session ends when its last handler has run
    auto data = buffer_.cdata();
    rpc_.handle(*this, std::string_view(static_cast<const char*>(data.data()), data.size()));
    buffer_.consume(buffer_.size());
    do_read();
  }

  void do_write() {
    Outgoing& front = queue_.front();
    asio::const_buffer bytes;
    if (front.batch) {
      const auto& span = front.batch->payloads[front.next];
      bytes = asio::buffer(front.batch->bytes.data() + span.offset, span.size);
    } else {
      bytes = asio::buffer(front.own);
    }
    ws_.async_write(bytes, beast::bind_front_handler(&Session::on_write, this->shared_from_this()));
  }

  void on_write(beast::error_code ec, std::size_t) {
    if (ec) return;
    Outgoing& front = queue_.front();
    if (front.batch && ++front.next < front.batch->payloads.size()) {
      do_write();
      return;
    }
    queue_.pop_front();
    if (!queue_.empty()) do_write();
  }

  websocket::stream<Stream> ws_;
  beast::flat_buffer buffer_;
  std::deque<Outgoing> queue_;
  car_bench::baseline::Rpc& rpc_;
};

// Accepts connections forever, one Session each.
template <class Protocol, class Stream>
class Listener final : public std::enable_shared_from_this<Listener<Protocol, Stream>> {
 public:
  Listener(asio::io_context& ioc, const typename Protocol::endpoint& endpoint,
           car_bench::baseline::Rpc& rpc)
      : acceptor_(ioc, endpoint), rpc_(rpc) {}

  typename Protocol::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }

  void do_accept() {
    acceptor_.async_accept(
        beast::bind_front_handler(&Listener::on_accept, this->shared_from_this()));
  }

 private:
  void on_accept(beast::error_code ec, typename Protocol::socket socket) {
    if (!ec) {
      if constexpr (std::is_same_v<Protocol, tcp>) {
        beast::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
      }
      std::make_shared<Session<Stream>>(std::move(socket), rpc_)->run();
    }
    do_accept();
  }

  asio::basic_socket_acceptor<Protocol> acceptor_;
  car_bench::baseline::Rpc& rpc_;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "beast-server: %s\nusage: beast-server (--tcp PORT | --unix PATH) [--cpu N] "
               "[--max-seconds N]\n",
               why);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  int port = -1;
  std::string unix_path;
  int cpu = -1;
  int max_seconds = 3600;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) usage(("missing value for " + a).c_str());
    if (a == "--tcp") port = std::atoi(argv[++i]);
    else if (a == "--unix") unix_path = argv[++i];
    else if (a == "--cpu") cpu = std::atoi(argv[++i]);
    else if (a == "--max-seconds") max_seconds = std::atoi(argv[++i]);
    else usage(("unknown option " + a).c_str());
  }
  if ((port < 0) == unix_path.empty()) usage("give one of --tcp or --unix");
  if (cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
  }
  try {
    asio::io_context ioc{1};
    car_bench::baseline::Rpc rpc;
    if (unix_path.empty()) {
      auto listener = std::make_shared<Listener<tcp, beast::tcp_stream>>(
          ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)),
          rpc);
      listener->do_accept();
      std::fprintf(stderr, "listening ws://127.0.0.1:%u\n", listener->local_endpoint().port());
    } else {
      std::remove(unix_path.c_str());
      auto listener = std::make_shared<Listener<unix_socket, unix_socket::socket>>(
          ioc, unix_socket::endpoint(unix_path), rpc);
      listener->do_accept();
      std::fprintf(stderr, "listening unix:%s\n", unix_path.c_str());
    }
    asio::signal_set signals(ioc, SIGINT, SIGTERM);
    signals.async_wait([&](beast::error_code, int) { ioc.stop(); });
    asio::steady_timer bound(ioc, std::chrono::seconds(max_seconds));
    bound.async_wait([&](beast::error_code) { ioc.stop(); });
    ioc.run();
    if (!unix_path.empty()) std::remove(unix_path.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "beast-server: %s\n", e.what());
    return 1;
  }
  return 0;
}
