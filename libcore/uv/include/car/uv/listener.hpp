#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>

#include "car/export.hpp"
#include "car/result.hpp"
#include "car/uv/stream.hpp"

// A listening socket on libuv — TCP (HOST:PORT) or a Unix-domain socket (PATH) — that accepts
// connections, enforces a connection cap and hands each accepted connection to the transport's
// callback, which opens its own Stream on it (embedded in its own connection object).
//
// Unix sockets: the file is created with mode 0600 from the start (no window where others could
// connect). An existing file at PATH is replaced only when it is a socket that no live process
// answers on (a stale one left by a crash); a live socket or any other kind of file is an Error
// and is never touched. stop() removes the file the listener created.
//
// Lifetime: owned by the caller (unique_ptr); destroying it stops it. The libuv handle lives in a
// separate block freed in its close callback, so the Listener may be destroyed at any time on the
// loop thread, also from inside its own accept callback.
// Threading: loop thread only, like the accept callback.
namespace car::uv {

struct CAR_API ListenerOptions {
  // The kernel's queue of connections not yet accepted (listen(2) backlog).
  int backlog = 511;
  // Connection cap: while `open_connections()` reports this many or more, a new connection is
  // accepted and closed at once, before the accept callback (the first refusal of a run is
  // logged, until a connection is accepted again). 0 = no cap; the cap needs
  // `open_connections` (e.g. [&server] { return server.connection_count(); }).
  std::size_t max_connections = 0;
  std::function<std::size_t()> open_connections;
};

class CAR_API Listener {
 public:
  // The listener, or why it could not listen (Error::message names the address and the cause).
  using Started = Result<std::unique_ptr<Listener>>;

  // One connection waiting to be accepted. Valid only during the accept callback.
  class CAR_API Incoming {
   public:
    // Opens `stream` on the connection (Stream::accept: TCP_NODELAY on TCP). Returns 0 or a libuv
    // error; either way `stream`'s on_closed follows its close. A second call returns
    // UV_EALREADY and leaves its Stream unopened. When the callback returns without calling it,
    // the connection is accepted and closed.
    int accept(Stream& stream);
    // The listener that took the connection (for its address in peer labels).
    const Listener& listener() const { return listener_; }
    uv_loop_t* loop() const;

   private:
    friend class Listener;
    Incoming(uv_stream_t* server, const Listener& listener) : server_(server), listener_(listener) {}
    uv_stream_t* server_;
    const Listener& listener_;
    bool taken_ = false;
  };
  // Runs on the loop thread for every accepted connection within the cap. An exception it throws
  // is caught and logged (the connection is then closed unless it was accepted).
  using AcceptFn = std::function<void(Incoming& incoming)>;

  // Resolves `host` (numeric hosts never block; names are looked up once, synchronously, at
  // start-up), binds and listens. Port 0 picks a free port (see port()). Errors: "cannot resolve
  // HOST: ...", "cannot listen on HOST:PORT: ...".
  static Started listen_tcp(uv_loop_t* loop, const std::string& host, std::uint16_t port,
                            ListenerOptions options, AcceptFn on_accept);

  // Binds and listens on the Unix socket `path` (see above for stale sockets and the mode).
  // Errors: an empty or too long path, an existing non-socket or live socket, or "cannot listen
  // on PATH: ...".
  static Started listen_unix(uv_loop_t* loop, const std::string& path, ListenerOptions options,
                             AcceptFn on_accept);

  // Adopts `fd`, a socket someone else bound (e.g. a service manager's socket activation), and
  // listens on it: an AF_INET/AF_INET6 SOCK_STREAM socket for adopt_tcp, an AF_UNIX SOCK_STREAM
  // one for adopt_unix. listen(2) is called again with `options.backlog`, which is harmless on a
  // socket that already listens. The Listener owns `fd` from the call on: stop() closes it, and
  // so does an Error. host()/port() come from getsockname (a numeric host); path() is the bound
  // path ("@name" for an abstract socket). stop() never removes an adopted socket file: its
  // creator owns it. Errors: "fd N: ..." naming what is wrong with it.
  static Started adopt_tcp(uv_loop_t* loop, int fd, ListenerOptions options, AcceptFn on_accept);
  static Started adopt_unix(uv_loop_t* loop, int fd, ListenerOptions options, AcceptFn on_accept);

  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // Stops accepting (connections already handed over are not affected) and removes the socket
  // file it created. Idempotent.
  void stop();

  bool is_tcp() const { return tcp_; }
  // TCP: the host as given and the bound port. Unix: the socket path (port 0).
  const std::string& host() const { return host_; }
  const std::string& path() const { return host_; }
  std::uint16_t port() const { return port_; }

 private:
  // The libuv handle with what its callbacks need (options, accept callback), freed in the
  // handle's close callback: it outlives the Listener when stop() runs inside a callback.
  struct Core;

  Listener(bool tcp, std::string host, ListenerOptions options, AcceptFn on_accept);
  static void on_connection(uv_stream_t* server, int status);
  static void refuse(uv_stream_t* server);
  // adopt_tcp/adopt_unix after uv_*_open returned `opened`: listens, or stops this listener and
  // says why (closing `fd` when the handle did not take it).
  std::optional<Error> listen_adopted(uv_stream_t* handle, int fd, int opened, int backlog);

  Core* core_ = nullptr;
  bool tcp_;
  bool owns_file_ = false;  // we bound the socket file, so we remove it
  std::string host_;
  std::uint16_t port_ = 0;
};

}  // namespace car::uv
