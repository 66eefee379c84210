#include "car/uv/stream.hpp"

#include <cstring>

#include <netinet/in.h>

#include <array>

#include <fmt/format.h>

#include "car/log.hpp"
#include "car/uv/guarded.hpp"

namespace car::uv {
namespace {

// Stream reads are handled synchronously inside the read callback, so one buffer per loop thread
// serves every stream: an idle connection holds no read buffer at all.
constexpr std::size_t read_buffer_size = 64 * 1024;
thread_local std::array<char, read_buffer_size> t_read_buffer;
// The decoded bytes of one filtered read, handed to on_read and reused by every stream of the
// thread like t_read_buffer (a filter yields no more than it was given plus what it held back:
// under 64 KiB plus one TLS record).
thread_local std::string t_decoded;

struct OwnedWrite {
  uv_write_t req;
  std::string bytes;
  Stream::Done done;
};

struct OwnedShutdown {
  uv_shutdown_t req;
  Stream::Done done;
};

bool is_stream_type(uv_handle_type type) {
  return type == UV_TCP || type == UV_NAMED_PIPE || type == UV_TTY;
}

}  // namespace

// A file read runs on the pool and fills its buffer while the loop goes on, so unlike stream
// reads it cannot share the thread's buffer.
struct Stream::File {
  uv_fs_t req{};
  bool pending = false;
  std::array<char, read_buffer_size> buffer;
};

Stream::Stream(StreamHandler& handler) : handler_(handler) {}

Stream::~Stream() = default;

void Stream::opened(uv_loop_t* loop) {
  loop_ = loop;
  handle_.handle.data = this;
  state_ = State::open;
}

int Stream::open_fd(uv_loop_t* loop, int fd) {
  if (state_ != State::unopened) return UV_EALREADY;
  int rc = UV_EBADF;
  switch (fd >= 0 ? uv_guess_handle(fd) : UV_UNKNOWN_HANDLE) {
    case UV_TTY:
      // uv_tty_init fails before it initialises anything, so a failure falls through to the
      // stand-in below.
      rc = uv_tty_init(loop, &handle_.tty, fd, 0);
      if (rc == 0) {
        opened(loop);
        return 0;
      }
      break;
    case UV_NAMED_PIPE:
      uv_pipe_init(loop, &handle_.pipe, 0);
      opened(loop);
      rc = uv_pipe_open(&handle_.pipe, fd);
      if (rc != 0) close();
      return rc;
    case UV_FILE:
      uv_idle_init(loop, &handle_.idle);
      file_ = std::make_unique<File>();
      file_->req.data = this;
      file_fd_ = fd;
      opened(loop);
      return 0;
    case UV_TCP:
    case UV_UDP:
      rc = UV_ENOTSUP;
      break;
    default:
      rc = UV_EBADF;
      break;
  }
  // Nothing could be opened: a stand-in handle keeps the promise of exactly one on_closed.
  uv_idle_init(loop, &handle_.idle);
  opened(loop);
  close();
  return rc;
}

int Stream::accept(uv_stream_t* server) {
  if (state_ != State::unopened) return UV_EALREADY;
  uv_loop_t* loop = server->loop;
  bool tcp = uv_handle_get_type(reinterpret_cast<uv_handle_t*>(server)) == UV_TCP;
  if (tcp) {
    uv_tcp_init(loop, &handle_.tcp);
  } else {
    uv_pipe_init(loop, &handle_.pipe, 0);
  }
  opened(loop);
  int rc = uv_accept(server, &handle_.stream);
  if (rc != 0) {
    close();
    return rc;
  }
  if (tcp) uv_tcp_nodelay(&handle_.tcp, 1);
  return 0;
}

int Stream::set_filter(StreamFilter* filter) {
  if (file_) return UV_ENOTSUP;
  if (filter_ != nullptr) return UV_EALREADY;
  filter_ = filter;
  return 0;
}

uv_stream_t* Stream::stream() {
  if (state_ != State::open && state_ != State::closing) return nullptr;
  return is_stream_type(handle_.handle.type) ? &handle_.stream : nullptr;
}

// ---- reading ----

void Stream::start_reading() {
  want_read_ = true;
  update_reading();
}

void Stream::stop_reading() {
  want_read_ = false;
  update_reading();
}

void Stream::set_paused(bool paused) {
  paused_ = paused;
  update_reading();
}

void Stream::update_reading() {
  bool want = state_ == State::open && want_read_ && !paused_ && !read_ended_;
  if (file_) {
    if (want && !file_->pending) read_file();
    return;
  }
  uv_stream_t* s = stream();
  if (s == nullptr || want == reading_) return;
  if (want) {
    int rc = uv_read_start(s, &Stream::on_alloc, &Stream::on_read_cb);
    if (rc != 0) {
      log_warn("uv_read_start failed: {}", uv_strerror(rc));
      return;
    }
  } else {
    uv_read_stop(s);
  }
  reading_ = want;
}

void Stream::on_alloc(uv_handle_t*, std::size_t, uv_buf_t* buf) {
  *buf = uv_buf_init(t_read_buffer.data(), static_cast<unsigned>(t_read_buffer.size()));
}

void Stream::on_read_cb(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  auto* self = static_cast<Stream*>(s->data);
  if (nread == 0) return;  // EAGAIN: libuv handed the buffer back unused
  bool ok = false;
  if (nread > 0) {
    ok = guarded("stream read callback",
                 [&] { self->deliver({buf->base, static_cast<std::size_t>(nread)}); });
  } else {
    uv_read_stop(s);
    self->reading_ = false;
    self->read_ended_ = true;
    ok = guarded("stream read-end callback",
                         [&] { self->handler_.on_read_end(*self, static_cast<int>(nread)); });
  }
  if (!ok) self->fail_upcall();
}

void Stream::deliver(std::string_view bytes) {
  if (filter_ == nullptr) {
    handler_.on_read(*this, bytes);
  } else {
    deliver_filtered(bytes);
  }
}

void Stream::deliver_filtered(std::string_view wire) {
  std::string& decoded = t_decoded;
  decoded.clear();
  std::string reply;
  const StreamFilter::Input input = filter_->decode(wire, decoded, reply);
  if (!reply.empty()) {
    if (input == StreamFilter::Input::failed) {
      // The alert explaining the failure: worth a try, not worth a queued write (the stream
      // closes next, which would cancel it).
      uv_buf_t buf = uv_buf_init(reply.data(), static_cast<unsigned>(reply.size()));
      static_cast<void>(uv_try_write(&handle_.stream, &buf, 1));
    } else if (int rc = write_wire(std::move(reply), {}); rc != 0 && rc != UV_EPIPE) {
      // UV_EPIPE: the stream is closing already. Anything else leaves the peer waiting for
      // records it will never get: end the input like a failed read.
      log_debug("stream: cannot write the filter's reply: {}", uv_strerror(rc));
      uv_read_stop(&handle_.stream);
      reading_ = false;
      read_ended_ = true;
      handler_.on_read_end(*this, rc);
      return;
    }
  }
  if (!decoded.empty()) handler_.on_read(*this, decoded);
  if (input == StreamFilter::Input::more) return;
  // The owner may have closed the stream (or met the end another way) inside on_read.
  if (state_ != State::open || read_ended_) return;
  if (reading_) {
    uv_read_stop(&handle_.stream);
    reading_ = false;
  }
  read_ended_ = true;
  handler_.on_read_end(*this, input == StreamFilter::Input::ended ? UV_EOF : UV_EPROTO);
}

void Stream::read_file() {
  file_->pending = true;
  uv_buf_t buf = uv_buf_init(file_->buffer.data(), static_cast<unsigned>(file_->buffer.size()));
  int rc = uv_fs_read(loop_, &file_->req, file_fd_, &buf, 1, -1, &Stream::on_file_read);
  if (rc == 0) return;
  uv_fs_req_cleanup(&file_->req);
  file_->pending = false;
  read_ended_ = true;
  if (!guarded("stream read-end callback", [&] { handler_.on_read_end(*this, rc); })) {
    fail_upcall();
  }
}

void Stream::on_file_read(uv_fs_t* req) {
  auto* self = static_cast<Stream*>(req->data);
  auto result = req->result;
  uv_fs_req_cleanup(req);
  self->file_->pending = false;
  if (self->state_ != State::open) {
    // close() waited for this read; its bytes are not delivered.
    if (self->state_ == State::closing) self->finish_close();
    return;
  }
  bool ok = false;
  if (result > 0) {
    ok = guarded("file read callback", [&] {
      self->handler_.on_read(*self, {self->file_->buffer.data(), static_cast<std::size_t>(result)});
    });
    if (ok) self->update_reading();
  } else {
    self->read_ended_ = true;
    int status = result == 0 ? UV_EOF : static_cast<int>(result);
    ok = guarded("file read-end callback",
                         [&] { self->handler_.on_read_end(*self, status); });
  }
  if (!ok) self->fail_upcall();
}

// An upcall threw: the owner's state is unknown, so the only safe course is to close.
void Stream::fail_upcall() { close(); }

// ---- writing ----

int Stream::write(std::string bytes, Done done) {
  if (state_ != State::open) return UV_EPIPE;
  if (filter_ != nullptr) {
    std::string wire;
    uv_buf_t plain = uv_buf_init(bytes.data(), static_cast<unsigned>(bytes.size()));
    if (!filter_->encode({&plain, 1}, wire)) return UV_EPROTO;
    return write_wire(std::move(wire), std::move(done));
  }
  return write_wire(std::move(bytes), std::move(done));
}

int Stream::write_wire(std::string bytes, Done done) {
  if (state_ != State::open) return UV_EPIPE;
  uv_stream_t* s = stream();
  if (s == nullptr) return UV_ENOTSUP;
  auto w = std::make_unique<OwnedWrite>();
  w->bytes = std::move(bytes);
  w->done = std::move(done);
  w->req.data = w.get();
  uv_buf_t buf = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
  int rc = uv_write(&w->req, s, &buf, 1, [](uv_write_t* req, int status) {
    std::unique_ptr<OwnedWrite> owned(static_cast<OwnedWrite*>(req->data));
    if (owned->done) guarded("stream write callback", [&] { owned->done(status); });
  });
  if (rc == 0) static_cast<void>(w.release());  // owned by the request until its callback
  return rc;
}

int Stream::try_write(std::string_view bytes) {
  if (state_ != State::open) return UV_EPIPE;
  uv_stream_t* s = stream();
  if (s == nullptr) return UV_ENOTSUP;
  if (filter_ != nullptr) {
    std::string wire;
    uv_buf_t plain = uv_buf_init(const_cast<char*>(bytes.data()), static_cast<unsigned>(bytes.size()));
    if (!filter_->encode({&plain, 1}, wire)) return UV_EPROTO;
    uv_buf_t buf = uv_buf_init(wire.data(), static_cast<unsigned>(wire.size()));
    int rc = uv_try_write(s, &buf, 1);
    if (rc < 0) return rc;
    return static_cast<std::size_t>(rc) == wire.size() ? static_cast<int>(bytes.size()) : UV_EAGAIN;
  }
  uv_buf_t buf = uv_buf_init(const_cast<char*>(bytes.data()), static_cast<unsigned>(bytes.size()));
  return uv_try_write(s, &buf, 1);
}

int Stream::shutdown(Done done) {
  if (state_ != State::open) return UV_EPIPE;
  uv_stream_t* s = stream();
  if (s == nullptr) return UV_ENOTSUP;
  if (filter_ != nullptr) {
    // The filter's goodbye goes out before the FIN (uv_shutdown waits for queued writes).
    std::string goodbye;
    filter_->finish(goodbye);
    if (!goodbye.empty()) {
      if (int rc = write_wire(std::move(goodbye), {}); rc != 0) return rc;
    }
  }
  auto r = std::make_unique<OwnedShutdown>();
  r->done = std::move(done);
  r->req.data = r.get();
  int rc = uv_shutdown(&r->req, s, [](uv_shutdown_t* req, int status) {
    std::unique_ptr<OwnedShutdown> owned(static_cast<OwnedShutdown*>(req->data));
    if (owned->done) guarded("stream shutdown callback", [&] { owned->done(status); });
  });
  if (rc == 0) static_cast<void>(r.release());
  return rc;
}

// ---- closing ----

void Stream::close() {
  if (state_ != State::open) return;
  state_ = State::closing;
  want_read_ = false;
  if (reading_) {
    uv_read_stop(&handle_.stream);
    reading_ = false;
  }
  if (file_ && file_->pending) return;  // on_file_read finishes the close
  finish_close();
}

void Stream::finish_close() { uv_close(&handle_.handle, &Stream::on_close_cb); }

void Stream::on_close_cb(uv_handle_t* handle) {
  auto* self = static_cast<Stream*>(handle->data);
  self->state_ = State::closed;
  // The owner may destroy the Stream inside on_closed: nothing touches `self` afterwards.
  guarded("stream close callback", [self] { self->handler_.on_closed(*self); });
}

namespace {

// "IP:PORT", IPv6 in brackets; empty when the address is neither IPv4 nor IPv6.
std::string format_address(const sockaddr_storage& addr) {
  char ip[64] = {};
  if (addr.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
    if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
      // An IPv4 peer of a dual-stack socket: written as the IPv4 address it is, which is also
      // what a browser puts in Host (the plain-HTTP Host check compares with this).
      sockaddr_in v4{};
      v4.sin_family = AF_INET;
      v4.sin_port = a->sin6_port;
      std::memcpy(&v4.sin_addr, &a->sin6_addr.s6_addr[12], 4);
      uv_ip4_name(&v4, ip, sizeof ip);
      return fmt::format("{}:{}", ip, ntohs(v4.sin_port));
    }
    uv_ip6_name(a, ip, sizeof ip);
    return fmt::format("[{}]:{}", ip, ntohs(a->sin6_port));
  }
  if (addr.ss_family != AF_INET) return {};
  const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
  uv_ip4_name(a, ip, sizeof ip);
  return fmt::format("{}:{}", ip, ntohs(a->sin_port));
}

}  // namespace

std::string Stream::peer_address() {
  if (stream() == nullptr || handle_.handle.type != UV_TCP) return {};
  sockaddr_storage addr{};
  int length = sizeof addr;
  if (uv_tcp_getpeername(&handle_.tcp, reinterpret_cast<sockaddr*>(&addr), &length) != 0) return {};
  return format_address(addr);
}

std::string Stream::local_address() {
  if (stream() == nullptr || handle_.handle.type != UV_TCP) return {};
  sockaddr_storage addr{};
  int length = sizeof addr;
  if (uv_tcp_getsockname(&handle_.tcp, reinterpret_cast<sockaddr*>(&addr), &length) != 0) return {};
  return format_address(addr);
}

}  // namespace car::uv
