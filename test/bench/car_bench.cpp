// car-bench: the load generator and baseline servers for carcore's performance report
// (docs/PERFORMANCE.md; driven by test/bench/run-all.sh).
//
//   car-bench rtt         --target T [--requests N] [--warmup N] [--method M]
//   car-bench throughput  --target T --connections C --depth D [--seconds S] [--warmup-seconds S]
//                         [--method M]   (M: server.handshake, the default, or host.agents)
//   car-bench idle        --target ws-...:... --connections C --server-pid PID
//   car-bench fanout      --target ws-...:... --subscribers S --batch B --turns K [--depth D]
//                         [--runs R]   (R runs of K turns back to back, latencies pooled)
//   car-bench wedged      (fanout) --wedged W [--rcvbuf BYTES]
//   (rtt / throughput also take --body-file F or --pad BYTES: the cost curves' requests)
//   car-bench echo-server        (--unix PATH | --tcp PORT) [--cpu N]
//   car-bench ws-prebuilt-server (--unix PATH | --tcp PORT) [--cpu N]
//   car-bench floor-server       (--unix PATH | --tcp PORT) [--cpu N]   (floor_server.cpp)
//
// Targets: ws-tcp:HOST:PORT, ws-unix:PATH (WebSocket), raw-tcp:HOST:PORT, raw-unix:PATH (NDJSON
// lines to echo-server), stdio:DAEMON and stdio-cl:DAEMON (car-bench spawns DAEMON --stdio
// --no-auth on pipes, NDJSON or Content-Length framing; --server-cpu pins it).
// Common options: --label L (copied into the output), --cpu N (pin car-bench), --server-pid PID
// (server CPU and RSS are read from /proc), --timeout S (hard bound on any wait, default 60).
//
// Every scenario prints ONE JSON line on stdout. Exit status is non-zero only when the harness
// itself fails (cannot connect, protocol error, nothing answered in time) — never because a
// number is slow.
//
// How it stays out of the way: one thread, one epoll loop, non-blocking sockets, requests
// pre-encoded (masked) once per in-flight slot, replies matched by a fixed-width id so nothing is
// parsed beyond a digit scan, one write per connection per loop turn, and no allocation in the
// hot loop once buffers reach their working size.
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bench_net.hpp"
#include "bench_servers.hpp"
#include "bench_support.hpp"
#include "floor_server.hpp"
#include "car/ws/frame_encoder.hpp"

namespace car_bench {
namespace {

constexpr std::uint32_t kMaskKey = 0x37fa213dU;
constexpr std::uint64_t kIdBase = 100000;

// ---------------------------------------------------------------------------------------------
// Options

struct Options {
  std::string scenario;
  std::string target;
  std::string label;
  int connections = 1;
  int depth = 1;
  long requests = 20000;
  long warmup = 2000;
  double seconds = 5;
  double warmup_seconds = 1;
  int server_pid = -1;
  int cpu = -1;
  int server_cpu = -1;
  double timeout = 60;
  // fanout / wedged
  int subscribers = 10;
  int batch = 10;
  int turns = 2000;
  int wedged = 0;
  int rcvbuf = 4096;
  int runs = 1;  // fanout: back-to-back runs whose samples are pooled
  std::string state_dir;
  std::string method = "server.handshake";  // rtt / throughput: the request sent (request_body)
  std::string body_file;  // rtt / throughput: the request read from a file (cost curves)
  long pad = 0;           // rtt / throughput: request grown to this many bytes (size curve)
  long stored_runs = -1;  // copied into the output line (the stored-runs curve's x)
  // servers
  ServerOptions server;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr, "car-bench: %s (see the comment at the top of car_bench.cpp)\n", why);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  if (argc < 2) usage("missing scenario");
  o.scenario = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value for " + a).c_str());
      return argv[++i];
    };
    if (a == "--target") o.target = next();
    else if (a == "--label") o.label = next();
    else if (a == "--connections") o.connections = std::atoi(next().c_str());
    else if (a == "--depth") o.depth = std::atoi(next().c_str());
    else if (a == "--requests") o.requests = std::atol(next().c_str());
    else if (a == "--warmup") o.warmup = std::atol(next().c_str());
    else if (a == "--seconds") o.seconds = std::atof(next().c_str());
    else if (a == "--warmup-seconds") o.warmup_seconds = std::atof(next().c_str());
    else if (a == "--server-pid") o.server_pid = std::atoi(next().c_str());
    else if (a == "--cpu") o.cpu = o.server.cpu = std::atoi(next().c_str());
    else if (a == "--server-cpu") o.server_cpu = std::atoi(next().c_str());
    else if (a == "--timeout") o.timeout = std::atof(next().c_str());
    else if (a == "--subscribers") o.subscribers = std::atoi(next().c_str());
    else if (a == "--batch") o.batch = std::atoi(next().c_str());
    else if (a == "--turns") o.turns = std::atoi(next().c_str());
    else if (a == "--wedged") o.wedged = std::atoi(next().c_str());
    else if (a == "--runs") o.runs = std::atoi(next().c_str());
    else if (a == "--rcvbuf") o.rcvbuf = std::atoi(next().c_str());
    else if (a == "--state-dir") o.state_dir = next();
    else if (a == "--method") o.method = next();
    else if (a == "--body-file") o.body_file = next();
    else if (a == "--pad") o.pad = std::atol(next().c_str());
    else if (a == "--stored-runs") o.stored_runs = std::atol(next().c_str());
    else if (a == "--unix") o.server.unix_path = next();
    else if (a == "--tcp") o.server.tcp_port = std::atoi(next().c_str());
    else if (a == "--max-seconds") o.server.max_seconds = std::atoi(next().c_str());
    else usage(("unknown option " + a).c_str());
  }
  if (o.connections < 1 || o.depth < 1 || o.depth > 200000 || o.batch < 1 || o.turns < 1 ||
      o.subscribers < 0 || o.wedged < 0 || o.runs < 1) {
    usage("bad counts");
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// Targets

enum class Kind { websocket, raw, stdio };

struct Target {
  Kind kind = Kind::websocket;
  Address address;
  std::string daemon;  // stdio
  bool content_length = false;
  std::string name;    // "ws-unix", ...
};

Target parse_target(const std::string& spec) {
  Target t;
  auto colon = spec.find(':');
  if (colon == std::string::npos) usage("bad --target");
  t.name = spec.substr(0, colon);
  std::string rest = spec.substr(colon + 1);
  auto host_port = [&](Address& a) {
    auto c = rest.rfind(':');
    if (c == std::string::npos) usage("bad HOST:PORT");
    a.host = rest.substr(0, c);
    if (!a.host.empty() && a.host.front() == '[') a.host = a.host.substr(1, a.host.size() - 2);
    a.port = std::atoi(rest.c_str() + c + 1);
  };
  if (t.name == "ws-tcp") {
    host_port(t.address);
  } else if (t.name == "ws-unix") {
    t.address.unix_socket = true;
    t.address.path = rest;
  } else if (t.name == "raw-tcp") {
    t.kind = Kind::raw;
    host_port(t.address);
  } else if (t.name == "raw-unix") {
    t.kind = Kind::raw;
    t.address.unix_socket = true;
    t.address.path = rest;
  } else if (t.name == "stdio" || t.name == "stdio-cl") {
    t.kind = Kind::stdio;
    t.daemon = rest;
    t.content_length = t.name == "stdio-cl";
  } else {
    usage("unknown target kind");
  }
  return t;
}

// Frames one message for the target's wire format.
std::string frame_for(const Target& t, std::string_view payload) {
  switch (t.kind) {
    case Kind::websocket:
      return car::ws::encode_client_frame(car::ws::Opcode::text, payload, kMaskKey);
    case Kind::raw:
      return std::string(payload) + "\n";
    case Kind::stdio:
      if (t.content_length) {
        return "Content-Length: " + std::to_string(payload.size()) + "\r\n\r\n" +
               std::string(payload);
      }
      return std::string(payload) + "\n";
  }
  return {};
}

// The rtt/throughput request for --method, with its 6-digit id at kIdOffset like kRequest.
std::string request_body(const std::string& method) {
  if (method == "server.handshake") return kRequest;
  if (method == "host.agents") return R"({"jsonrpc":"2.0","id":100000,"method":"host.agents","params":{}})";
  usage(("unknown --method " + method).c_str());
}

// The cost curves' requests (docs/PERFORMANCE.md "Cost curves"): --body-file F sends F's JSON
// (its id written as `"id":100000` right after `{"jsonrpc":"2.0",`, so the slot digits land at
// kIdOffset); --pad BYTES sends server.handshake grown to BYTES by an extra string param, which
// the daemon parses and UTF-8-validates in full, then ignores (a small reply whatever the size).
std::string curve_request_body(const Options& o) {
  std::string body = request_body(o.method);
  if (!o.body_file.empty()) {
    FILE* f = std::fopen(o.body_file.c_str(), "r");
    if (f == nullptr) usage("cannot read --body-file");
    body.clear();
    char buf[4096];
    std::size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) body.append(buf, n);
    std::fclose(f);
    while (!body.empty() && (body.back() == '\n' || body.back() == ' ')) body.pop_back();
    if (body.compare(0, kIdOffset + kIdDigits, std::string(kRequest).substr(0, kIdOffset + kIdDigits)) != 0) {
      usage("--body-file must start with {\"jsonrpc\":\"2.0\",\"id\":100000");
    }
  }
  if (o.pad > 0) {
    const std::string head =
        R"({"jsonrpc":"2.0","id":100000,"method":"server.handshake","params":{"protocol_version":2,"pad":")";
    const std::string tail = "\"}}";
    std::size_t fill = static_cast<std::size_t>(o.pad) > head.size() + tail.size()
                           ? static_cast<std::size_t>(o.pad) - head.size() - tail.size()
                           : 0;
    body = head + std::string(fill, 'x') + tail;
  }
  return body;
}

std::string with_id(std::string_view payload, std::uint64_t id) {
  std::string s(payload);
  std::string digits = std::to_string(id);
  s.replace(kIdOffset, kIdDigits, digits);
  return s;
}

// Opens one connection to the target (stdio: spawns the daemon). Returns null on failure.
std::unique_ptr<Conn> open_conn(const Target& t, const Options& o, MessageHandler* handler,
                                std::size_t index, Child* child, int rcvbuf = 0) {
  if (t.kind == Kind::stdio) {
    std::vector<std::string> argv = {t.daemon, "--stdio", "--no-auth", "--log-level", "error"};
    if (t.content_length) {
      argv.emplace_back("--stdio-framing");
      argv.emplace_back("content-length");
    }
    if (!o.state_dir.empty()) {
      argv.emplace_back("--state-dir");
      argv.push_back(o.state_dir);
    }
    *child = spawn_child(argv, o.server_cpu);
    if (child->pid < 0) return nullptr;
    set_nonblocking(child->to_child);
    set_nonblocking(child->from_child);
    auto conn = std::make_unique<Conn>(child->from_child, child->to_child,
                                       t.content_length ? Framing::content_length : Framing::line,
                                       handler, index);
    child->to_child = child->from_child = -1;  // owned by the Conn now
    return conn;
  }
  int fd = connect_to(t.address, rcvbuf);
  if (fd < 0) return nullptr;
  std::string leftover;
  if (t.kind == Kind::websocket && !websocket_upgrade(fd, leftover)) {
    ::close(fd);
    return nullptr;
  }
  set_nonblocking(fd);
  auto conn = std::make_unique<Conn>(fd, fd, t.kind == Kind::websocket ? Framing::websocket
                                                                       : Framing::line,
                                     handler, index);
  conn->feed_initial(leftover);
  return conn;
}

// ---------------------------------------------------------------------------------------------
// CPU accounting: the client's own (getrusage) and the server's (/proc/PID/stat), so every
// throughput line shows whether the load generator or the server was the busy one.

double self_cpu_s() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

double proc_cpu_s(int pid) {
  if (pid <= 0) return -1;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE* f = std::fopen(path, "r");
  if (f == nullptr) return -1;
  char buf[1024];
  std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  // Fields after the command name (which may contain spaces) start after the last ')'.
  char* p = std::strrchr(buf, ')');
  if (p == nullptr) return -1;
  unsigned long utime = 0;
  unsigned long stime = 0;
  // state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
  if (std::sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime,
                  &stime) != 2) {
    return -1;
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

bool parse_id(std::string_view message, std::uint64_t& id) {
  return find_uint(message, "\"id\":", id);
}

// ---------------------------------------------------------------------------------------------
// rtt and throughput: C connections × D slots, each slot one pre-encoded request that is sent
// again as soon as its reply arrives.

class RequestLoad final : public MessageHandler {
 public:
  RequestLoad(const Target& target, int depth, const std::string& body)
      : depth_(static_cast<std::size_t>(depth)) {
    for (std::size_t slot = 0; slot < depth_; ++slot) {
      frames_.push_back(frame_for(target, with_id(body, kIdBase + slot)));
    }
  }

  void prime(Conn& conn) {
    conn.sent_ns.assign(depth_, 0);
    std::uint64_t t = now_ns();
    for (std::size_t slot = 0; slot < depth_; ++slot) {
      conn.queue(frames_[slot]);
      conn.sent_ns[slot] = t;
      ++inflight_;
    }
  }

  void on_message(Conn& conn, std::string_view message) override {
    std::uint64_t id = 0;
    if (!parse_id(message, id) || id < kIdBase || id - kIdBase >= depth_) {
      ++unmatched_;
      return;
    }
    if (message.find("\"result\"") == std::string_view::npos) ++errors_;
    auto slot = static_cast<std::size_t>(id - kIdBase);
    std::uint64_t t = now_ns();
    if (measuring_) {
      samples.add(t - conn.sent_ns[slot]);
      ++measured_;
    }
    ++completed_;
    if (issuing_) {
      conn.queue(frames_[slot]);
      conn.sent_ns[slot] = t;
    } else {
      --inflight_;
    }
  }
  void on_closed(Conn&, std::string_view) override { ++closed_; }

  Samples samples;
  std::uint64_t completed_ = 0;
  std::uint64_t measured_ = 0;
  std::uint64_t errors_ = 0;
  std::uint64_t unmatched_ = 0;
  std::uint64_t inflight_ = 0;
  int closed_ = 0;
  bool measuring_ = false;
  bool issuing_ = true;

 private:
  std::size_t depth_;
  std::vector<std::string> frames_;
};

int run_requests(const Options& o, bool rtt) {
  Target target = parse_target(o.target);
  int connections = rtt ? 1 : o.connections;
  int depth = rtt ? 1 : o.depth;
  if (target.kind == Kind::stdio && connections != 1) usage("stdio targets take 1 connection");
  Loop loop;
  RequestLoad load(target, depth, curve_request_body(o));
  Child child;
  std::vector<std::unique_ptr<Conn>> conns;
  for (int i = 0; i < connections; ++i) {
    auto c = open_conn(target, o, &load, static_cast<std::size_t>(i), &child);
    if (!c) {
      std::fprintf(stderr, "car-bench: cannot open connection %d to %s\n", i, o.target.c_str());
      return 1;
    }
    loop.add(*c);
    conns.push_back(std::move(c));
  }
  int server_pid = target.kind == Kind::stdio ? child.pid : o.server_pid;
  const std::uint64_t hard_stop = now_ns() + static_cast<std::uint64_t>(o.timeout * 1e9);

  // Expected replies before the measurement: a count for rtt, a time for throughput.
  std::size_t expected = rtt ? static_cast<std::size_t>(o.requests)
                             : static_cast<std::size_t>(o.seconds * 400000.0) + 1024;
  load.samples.reserve(std::min<std::size_t>(expected, 8u << 20));
  for (auto& c : conns) load.prime(*c);
  loop.flush_all(conns);

  auto run_until = [&](auto done) {
    while (!done()) {
      if (now_ns() > hard_stop) return false;
      loop.poll_once(10);
      if (load.closed_ > 0 || load.errors_ > 0) return false;
      for (auto& c : conns) {
        if (c->closed()) return false;
      }
    }
    return true;
  };

  bool ok = true;
  // Warm-up.
  std::uint64_t warm_end = now_ns() + static_cast<std::uint64_t>(o.warmup_seconds * 1e9);
  if (rtt) {
    ok = run_until([&] { return load.completed_ >= static_cast<std::uint64_t>(o.warmup); });
  } else {
    ok = run_until([&] { return now_ns() >= warm_end; });
  }
  // Measurement.
  load.measuring_ = true;
  double cpu0 = self_cpu_s();
  double server_cpu0 = proc_cpu_s(server_pid);
  std::uint64_t t0 = now_ns();
  std::uint64_t t_end = t0 + static_cast<std::uint64_t>(o.seconds * 1e9);
  if (ok) {
    if (rtt) {
      ok = run_until([&] { return load.measured_ >= static_cast<std::uint64_t>(o.requests); });
    } else {
      ok = run_until([&] { return now_ns() >= t_end; });
    }
  }
  std::uint64_t t1 = now_ns();
  load.measuring_ = false;
  double cpu1 = self_cpu_s();
  double server_cpu1 = proc_cpu_s(server_pid);
  // Drain what is in flight (bounded).
  load.issuing_ = false;
  if (ok) ok = run_until([&] { return load.inflight_ == 0; });

  for (auto& c : conns) loop.remove(*c);
  conns.clear();
  if (target.kind == Kind::stdio) finish_child(child, 5000);

  if (!ok) {
    std::fprintf(stderr,
                 "car-bench: %s against %s failed (completed %llu, errors %llu, closed %d)\n",
                 o.scenario.c_str(), o.target.c_str(),
                 static_cast<unsigned long long>(load.completed_),
                 static_cast<unsigned long long>(load.errors_), load.closed_);
    return 1;
  }
  double wall = static_cast<double>(t1 - t0) / 1e9;
  load.samples.finish();
  JsonLine line;
  line.str("scenario", rtt ? "rtt" : "throughput").str("label", o.label).str("target",
                                                                              target.name);
  line.str("method", o.method);
  if (!o.body_file.empty()) line.str("body_file", o.body_file);
  if (o.pad > 0) line.integer("request_bytes", o.pad);
  if (o.stored_runs >= 0) line.integer("stored_runs", o.stored_runs);
  line.integer("connections", connections).integer("depth", depth);
  line.integer("requests", static_cast<long long>(load.measured_));
  line.num("seconds", wall).num("rps", static_cast<double>(load.measured_) / wall);
  line.num("p50_us", load.samples.pct_us(50)).num("p90_us", load.samples.pct_us(90));
  line.num("p99_us", load.samples.pct_us(99)).num("max_us", load.samples.max_us());
  line.num("client_cpu_pct", 100.0 * (cpu1 - cpu0) / wall);
  if (server_cpu0 >= 0 && server_cpu1 >= 0) {
    line.num("server_cpu_pct", 100.0 * (server_cpu1 - server_cpu0) / wall);
  } else {
    line.null("server_cpu_pct");
  }
  line.print();
  return 0;
}

// ---------------------------------------------------------------------------------------------
// idle: C WebSocket connections that did one request each and then sit; the server's RSS growth
// per connection.

class CountReplies final : public MessageHandler {
 public:
  void on_message(Conn&, std::string_view) override { ++replies; }
  std::uint64_t replies = 0;
};

int run_idle(const Options& o) {
  Target target = parse_target(o.target);
  if (target.kind == Kind::stdio) usage("idle needs a socket target");
  if (o.server_pid <= 0) usage("idle needs --server-pid");
  raise_fd_limit();
  Loop loop;
  CountReplies counter;
  std::string request = frame_for(target, kRequest);
  long rss0 = read_rss_kib(o.server_pid);
  std::vector<std::unique_ptr<Conn>> conns;
  const std::uint64_t hard_stop = now_ns() + static_cast<std::uint64_t>(o.timeout * 1e9);
  for (int i = 0; i < o.connections; ++i) {
    auto c = open_conn(target, o, &counter, static_cast<std::size_t>(i), nullptr);
    if (!c) {
      std::fprintf(stderr, "car-bench: idle: connection %d failed\n", i);
      return 1;
    }
    loop.add(*c);
    c->queue(request);
    conns.push_back(std::move(c));
    if (conns.size() % 64 == 0) {
      loop.flush_all(conns);
      while (loop.poll_once(0) > 0) {
      }
    }
  }
  loop.flush_all(conns);
  while (counter.replies < static_cast<std::uint64_t>(o.connections) && now_ns() < hard_stop) {
    loop.poll_once(10);
  }
  if (counter.replies < static_cast<std::uint64_t>(o.connections)) {
    std::fprintf(stderr, "car-bench: idle: only %llu of %d replies\n",
                 static_cast<unsigned long long>(counter.replies), o.connections);
    return 1;
  }
  // Let the server settle (its loop frees per-request state after the replies are written).
  std::uint64_t settle = now_ns() + 300000000ULL;
  while (now_ns() < settle) loop.poll_once(50);
  long rss1 = read_rss_kib(o.server_pid);
  for (auto& c : conns) loop.remove(*c);
  conns.clear();
  JsonLine line;
  line.str("scenario", "idle").str("label", o.label).str("target", target.name);
  line.integer("connections", o.connections).integer("rss_before_kib", rss0);
  line.integer("rss_after_kib", rss1);
  line.num("kib_per_conn", static_cast<double>(rss1 - rss0) / o.connections);
  line.print();
  return 0;
}

// ---------------------------------------------------------------------------------------------
// fanout / wedged: one producer (runs.start, then runs.record_turns in batches of B, D calls in
// flight — 1 by default), S subscribers (runs.subscribe), optionally W subscribers that never
// read. runs.stats is read before and after the turns, so the fan-out counters (pool hops) are
// the run's own.

constexpr std::uint64_t kIdStart = kIdBase + 1;
constexpr std::uint64_t kIdSubscribe = kIdBase + 2;
constexpr std::uint64_t kIdRecord = kIdBase + 3;
constexpr std::uint64_t kIdStats = kIdBase + 4;
constexpr std::uint64_t kIdStatsBefore = kIdBase + 5;
constexpr std::size_t kStampDigits = 20;

class Fanout final : public MessageHandler {
 public:
  Fanout(const Options& o, const Target& t) : options_(o), target_(t) {}

  void on_message(Conn& conn, std::string_view message) override {
    if (conn.index() == 0) {
      on_producer(conn, message);
    } else {
      on_subscriber(conn, message);
    }
  }
  void on_closed(Conn& conn, std::string_view) override {
    if (conn.index() == 0) failed = "producer connection closed";
  }

  void on_producer(Conn& conn, std::string_view message) {
    std::uint64_t id = 0;
    if (!parse_id(message, id)) return;
    if (id == kIdStart) {
      auto at = message.find("\"run_id\":\"");
      if (at == std::string_view::npos) {
        failed = "runs.start failed: " + std::string(message.substr(0, 200));
        return;
      }
      at += 10;
      run_id = std::string(message.substr(at, message.find('"', at) - at));
    } else if (id == kIdRecord) {
      std::uint64_t t = now_ns();
      // Replies to one producer's record_turns come in call order (one store actor per run).
      if (!record_sent_ns.empty()) {
        producer_latency.add(t - record_sent_ns.front());
        record_sent_ns.pop_front();
      }
      if (message.find("\"ok\":true") == std::string_view::npos) {
        ++refused;
        if (refused == 1) {
          std::fprintf(stderr, "car-bench: record_turns refused: %.200s\n",
                       std::string(message).c_str());
        }
      }
      if (run_turns_sent < static_cast<std::uint64_t>(options_.turns)) send_batch(conn);
    } else if (id == kIdStats) {
      stats_reply = std::string(message);
    } else if (id == kIdStatsBefore) {
      stats_before = std::string(message);
    }
  }

  void on_subscriber(Conn& conn, std::string_view message) {
    std::uint64_t t = now_ns();
    if (message.find("\"runs.trace.event\"") != std::string_view::npos) {
      std::uint64_t cursor = 0;
      // The event's own cursor follows the record (the record has `index`, not `cursor`).
      auto at = message.rfind("\"cursor\":");
      if (at == std::string_view::npos || !find_uint(message, "\"cursor\":", cursor, at)) return;
      if (cursor == conn.last_cursor + 1) {
        conn.last_cursor = cursor;
      } else if (cursor <= conn.last_cursor) {
        ++conn.duplicates;
      } else {
        conn.missing += cursor - conn.last_cursor - 1;
        ++conn.gaps;
        conn.last_cursor = cursor;
      }
      ++conn.received;
      ++delivered;
      last_event_ns = t;
      std::uint64_t stamp = 0;
      if (find_uint(message, "\"prompt\":\"t=", stamp) && stamp <= t) e2e.add(t - stamp);
      return;
    }
    if (message.find("\"runs.trace.gap\"") != std::string_view::npos) {
      ++gap_notifications;
      return;
    }
    std::uint64_t id = 0;
    if (parse_id(message, id) && id == kIdSubscribe) {
      if (message.find("\"result\"") == std::string_view::npos) {
        failed = "runs.subscribe failed: " + std::string(message.substr(0, 200));
        return;
      }
      std::uint64_t cursor = 0;
      auto at = message.rfind("\"cursor\":");
      if (at != std::string_view::npos) find_uint(message, "\"cursor\":", cursor, at);
      conn.last_cursor = cursor;
      ++subscribed;
    }
  }

  // Builds the record_turns payload template once: B turns with a fixed-width timestamp each.
  void build_record_template() {
    stamp_offsets_.clear();
    std::string payload = R"({"jsonrpc":"2.0","id":)" + std::to_string(kIdRecord) +
                          R"(,"method":"runs.record_turns","params":{"run_id":")" + run_id +
                          R"(","turns":[)";
    for (int i = 0; i < options_.batch; ++i) {
      if (i != 0) payload += ',';
      payload += R"({"prompt":"t=)";
      stamp_offsets_.push_back(payload.size());
      payload.append(kStampDigits, '0');
      payload += R"(","tool":"bench"})";
    }
    payload += "]}}";
    plain_ = payload;
    frame_ = car::ws::encode_client_frame(car::ws::Opcode::text, plain_, kMaskKey);
    header_len_ = frame_.size() - plain_.size();
  }

  // Stamps the current time into every turn, re-masks the changed bytes in place and sends.
  void send_batch(Conn& conn) {
    std::uint64_t t = now_ns();
    char digits[kStampDigits + 1];
    std::snprintf(digits, sizeof digits, "%020llu", static_cast<unsigned long long>(t));
    const unsigned char key[4] = {static_cast<unsigned char>(kMaskKey >> 24),
                                  static_cast<unsigned char>(kMaskKey >> 16),
                                  static_cast<unsigned char>(kMaskKey >> 8),
                                  static_cast<unsigned char>(kMaskKey)};
    for (std::size_t off : stamp_offsets_) {
      for (std::size_t k = 0; k < kStampDigits; ++k) {
        std::size_t i = off + k;
        frame_[header_len_ + i] = static_cast<char>(static_cast<unsigned char>(digits[k]) ^
                                                    key[i % 4]);
      }
    }
    if (run_first_send_ns == 0) run_first_send_ns = t;
    record_sent_ns.push_back(t);
    turns_sent += static_cast<std::uint64_t>(options_.batch);
    run_turns_sent += static_cast<std::uint64_t>(options_.batch);
    conn.queue(frame_);
  }

  const Options& options_;
  const Target& target_;
  std::string run_id;
  std::string failed;
  std::string stats_reply;
  Samples producer_latency{1u << 16};
  Samples e2e{4u << 20};
  std::string stats_before;
  std::deque<std::uint64_t> record_sent_ns;  // calls in flight, oldest first
  std::uint64_t run_first_send_ns = 0;  // first record_turns of the current run
  std::uint64_t busy_ns = 0;            // sum over runs of first send → last event
  std::uint64_t run_turns_sent = 0;
  std::uint64_t last_event_ns = 0;
  std::uint64_t turns_sent = 0;
  std::uint64_t delivered = 0;
  std::uint64_t gap_notifications = 0;
  std::uint64_t refused = 0;
  int subscribed = 0;

 private:
  std::string plain_;
  std::string frame_;
  std::size_t header_len_ = 0;
  std::vector<std::size_t> stamp_offsets_;
};

bool write_all_blocking(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

int run_fanout(const Options& o) {
  Target target = parse_target(o.target);
  if (target.kind != Kind::websocket) usage("fanout needs a WebSocket target");
  raise_fd_limit();
  Loop loop;
  Fanout fan(o, target);
  const std::uint64_t hard_stop = now_ns() + static_cast<std::uint64_t>(o.timeout * 1e9);
  std::vector<std::unique_ptr<Conn>> conns;
  auto fail = [&](const std::string& why) {
    std::fprintf(stderr, "car-bench: %s: %s\n", o.scenario.c_str(), why.c_str());
    return 1;
  };
  auto pump_until = [&](auto done) {
    while (!done()) {
      if (now_ns() > hard_stop || !fan.failed.empty()) return false;
      loop.poll_once(10);
      loop.flush_all(conns);
    }
    return true;
  };

  auto stats_request = [&](std::uint64_t id) {
    return frame_for(target, R"({"jsonrpc":"2.0","id":)" + std::to_string(id) +
                                 R"(,"method":"runs.stats","params":{"run_id":")" + fan.run_id +
                                 "\"}}");
  };

  // The producer's connection; subscribers connect once and subscribe to every run.
  auto producer = open_conn(target, o, &fan, 0, nullptr);
  if (!producer) return fail("producer connection failed");
  loop.add(*producer);
  conns.push_back(std::move(producer));
  std::string start = R"({"jsonrpc":"2.0","id":)" + std::to_string(kIdStart) +
                      R"(,"method":"runs.start","params":{"intent":"car-bench fanout",)"
                      R"("agent_id":"car-bench"}})";
  std::vector<int> wedged;
  std::uint64_t missing = 0;
  std::uint64_t complete_runs = 0;  // (subscriber, run) pairs that saw every cursor
  double cpu_s = 0;
  double server_cpu_s = 0;  // the server's CPU over the turns (--server-pid), for CPU per event

  for (int run = 0; run < o.runs; ++run) {
    fan.run_id.clear();
    conns[0]->queue(frame_for(target, start));
    loop.flush_all(conns);
    if (!pump_until([&] { return !fan.run_id.empty(); })) {
      return fail(fan.failed.empty() ? "no runs.start reply" : fan.failed);
    }
    std::string subscribe = frame_for(
        target, R"({"jsonrpc":"2.0","id":)" + std::to_string(kIdSubscribe) +
                    R"(,"method":"runs.subscribe","params":{"run_id":")" + fan.run_id + "\"}}");
    if (run == 0) {
      for (int i = 0; i < o.subscribers; ++i) {
        auto c = open_conn(target, o, &fan, static_cast<std::size_t>(i + 1), nullptr);
        if (!c) return fail("subscriber connection failed");
        loop.add(*c);
        conns.push_back(std::move(c));
      }
    }
    for (std::size_t i = 1; i < conns.size(); ++i) conns[i]->queue(subscribe);
    loop.flush_all(conns);
    // Wedged subscribers: tiny receive buffer, subscribe, never read again. In later runs the
    // daemon may already have cut them off after its drain deadline (PROTOCOL.md §7.4): then the
    // subscribe cannot be written, which is fine.
    for (int i = 0; run == 0 && i < o.wedged; ++i) {
      int fd = connect_to(target.address, o.rcvbuf);
      std::string leftover;
      if (fd < 0 || !websocket_upgrade(fd, leftover)) return fail("wedged subscriber failed");
      wedged.push_back(fd);
    }
    for (int fd : wedged) (void)write_all_blocking(fd, subscribe);
    const int want = o.subscribers * (run + 1);
    if (!pump_until([&] { return fan.subscribed == want; })) {
      return fail(fan.failed.empty() ? "subscriptions not confirmed" : fan.failed);
    }
    // Give the wedged subscriptions time to register before the first turn.
    std::uint64_t settle = now_ns() + (o.wedged > 0 ? 200000000ULL : 0ULL);
    while (now_ns() < settle) loop.poll_once(10);

    if (run == 0) {
      // Fan-out counters before the turns (an error reply from a server without runs.stats).
      conns[0]->queue(stats_request(kIdStatsBefore));
      loop.flush_all(conns);
      if (!pump_until([&] { return !fan.stats_before.empty(); })) {
        return fail(fan.failed.empty() ? "no runs.stats reply" : fan.failed);
      }
    }

    // Produce: D calls in flight; each reply sends the next batch.
    const auto run_turns = static_cast<std::uint64_t>(o.turns);
    fan.build_record_template();
    fan.run_turns_sent = 0;
    fan.run_first_send_ns = 0;
    double cpu0 = self_cpu_s();
    double server_cpu0 = proc_cpu_s(o.server_pid);
    for (int i = 0; i < o.depth && fan.run_turns_sent < run_turns; ++i) {
      fan.send_batch(*conns[0]);
    }
    loop.flush_all(conns);
    if (!pump_until([&] {
          return fan.run_turns_sent >= run_turns && fan.record_sent_ns.empty();
        })) {
      return fail(fan.failed.empty() ? "producer did not finish" : fan.failed);
    }
    std::uint64_t produced_ns = now_ns();
    // Wait until every healthy subscriber has seen the run's last cursor, or until nothing has
    // arrived for 2 s (drops are a result, not a failure).
    auto all_done = [&] {
      for (std::size_t i = 1; i < conns.size(); ++i) {
        if (conns[i]->last_cursor < fan.run_turns_sent) return false;
      }
      return true;
    };
    while (!all_done() && now_ns() < hard_stop) {
      loop.poll_once(10);
      std::uint64_t last = std::max(fan.last_event_ns, produced_ns);
      if (now_ns() - last > 2000000000ULL) break;
    }
    cpu_s += self_cpu_s() - cpu0;
    if (server_cpu0 >= 0) server_cpu_s += proc_cpu_s(o.server_pid) - server_cpu0;
    if (fan.last_event_ns > fan.run_first_send_ns) {
      fan.busy_ns += fan.last_event_ns - fan.run_first_send_ns;
    }
    for (std::size_t i = 1; i < conns.size(); ++i) {
      auto& c = *conns[i];
      missing += c.missing + (fan.run_turns_sent - std::min(fan.run_turns_sent, c.last_cursor));
      c.missing = 0;
      if (c.last_cursor >= fan.run_turns_sent) ++complete_runs;
    }
  }
  // Delivery counters from the server, if it has runs.stats.
  conns[0]->queue(stats_request(kIdStats));
  loop.flush_all(conns);
  std::uint64_t stats_deadline = now_ns() + 3000000000ULL;
  while (fan.stats_reply.empty() && now_ns() < stats_deadline) loop.poll_once(10);

  std::uint64_t duplicates = 0;
  std::uint64_t gaps = fan.gap_notifications;
  for (std::size_t i = 1; i < conns.size(); ++i) {
    duplicates += conns[i]->duplicates;
    gaps += conns[i]->gaps;
  }
  const auto complete = static_cast<int>(complete_runs / static_cast<std::uint64_t>(o.runs));
  for (int fd : wedged) ::close(fd);
  for (auto& c : conns) loop.remove(*c);

  double span = static_cast<double>(fan.busy_ns) / 1e9;
  fan.producer_latency.finish();
  fan.e2e.finish();
  JsonLine line;
  line.str("scenario", o.scenario).str("label", o.label).str("target", target.name);
  line.integer("subscribers", o.subscribers).integer("wedged", o.wedged);
  if (o.stored_runs >= 0) line.integer("stored_runs", o.stored_runs);
  line.integer("batch", o.batch).integer("depth", o.depth).integer("runs", o.runs);
  line.integer("turns", static_cast<long long>(fan.turns_sent));
  line.integer("refused_calls", static_cast<long long>(fan.refused));
  line.integer("events_delivered", static_cast<long long>(fan.delivered));
  line.num("seconds", span).num("events_per_s", span > 0 ? static_cast<double>(fan.delivered) / span : 0);
  line.num("producer_p50_us", fan.producer_latency.pct_us(50));
  line.num("producer_p99_us", fan.producer_latency.pct_us(99));
  line.num("e2e_p50_us", fan.e2e.pct_us(50)).num("e2e_p99_us", fan.e2e.pct_us(99));
  line.num("e2e_max_us", fan.e2e.max_us());
  line.integer("missing", static_cast<long long>(missing));
  line.integer("duplicates", static_cast<long long>(duplicates));
  line.integer("gaps_seen", static_cast<long long>(gaps));
  line.integer("subscribers_complete", complete);
  line.num("client_cpu_pct", span > 0 ? 100.0 * cpu_s / span : 0);
  if (o.server_pid > 0 && fan.delivered > 0) {
    line.num("server_cpu_s", server_cpu_s);
    line.num("server_cpu_us_per_event", 1e6 * server_cpu_s / static_cast<double>(fan.delivered));
  } else {
    line.null("server_cpu_us_per_event");
  }
  // Pool hops: the service-wide counters' growth over the turns (runs.stats "fanout").
  auto fanout_counter = [](const std::string& reply, std::string_view key) {
    std::uint64_t value = 0;
    auto at = reply.find("\"fanout\":");
    if (at == std::string::npos || !find_uint(reply, key, value, at)) return std::uint64_t{0};
    return value;
  };
  std::uint64_t hops = fanout_counter(fan.stats_reply, "\"drain_hops\":") -
                       fanout_counter(fan.stats_before, "\"drain_hops\":");
  std::uint64_t passes = fanout_counter(fan.stats_reply, "\"drain_passes\":") -
                         fanout_counter(fan.stats_before, "\"drain_passes\":");
  std::uint64_t drained = fanout_counter(fan.stats_reply, "\"events_drained\":") -
                          fanout_counter(fan.stats_before, "\"events_drained\":");
  if (hops > 0 && passes > 0) {
    line.integer("drain_hops", static_cast<long long>(hops));
    line.integer("drain_passes", static_cast<long long>(passes));
    line.num("events_per_hop", static_cast<double>(drained) / static_cast<double>(hops));
    line.num("events_per_pass", static_cast<double>(drained) / static_cast<double>(passes));
  } else {
    line.null("events_per_hop").null("events_per_pass");
  }
  line.print();
  return 0;
}

}  // namespace
}  // namespace car_bench

int main(int argc, char** argv) {
  using namespace car_bench;
  signal(SIGPIPE, SIG_IGN);
  Options o = parse(argc, argv);
  if (o.scenario == "echo-server" || o.scenario == "ws-prebuilt-server") {
    o.server.websocket = o.scenario == "ws-prebuilt-server";
    // Without --unix the server listens on 127.0.0.1:--tcp (0 = an ephemeral port).
    return run_server(o.server);
  }
  if (o.scenario == "floor-server") return run_floor_server(o.server);
  pin_to_cpu(o.cpu);
  if (o.target.empty()) usage("missing --target");
  if (o.scenario == "rtt") return run_requests(o, true);
  if (o.scenario == "throughput") return run_requests(o, false);
  if (o.scenario == "idle") return run_idle(o);
  if (o.scenario == "fanout") return run_fanout(o);
  if (o.scenario == "wedged") {
    if (o.wedged == 0) o.wedged = 5;
    return run_fanout(o);
  }
  usage("unknown scenario");
}
