#pragma once

#include <atomic>
#include <mutex>
#include <optional>
#include <string>

// The server-side state of one connection (spec §3): its client_id and what session.auth granted.
// Thread-safe: handlers on any thread may read it while session.auth updates it.
namespace car {

struct SessionAuth {
  bool authenticated = false;
  bool host = false;
  std::optional<std::string> agent_id;  // the agent this session is bound to
  std::optional<std::string> memory_namespace;
};

class Session {
 public:
  explicit Session(std::string client_id) : client_id_(std::move(client_id)) {}

  const std::string& client_id() const { return client_id_; }

  bool authenticated() const { return authenticated_.load(std::memory_order_acquire); }
  bool is_host() const { return host_.load(std::memory_order_acquire); }
  std::optional<std::string> agent_id() const;
  SessionAuth auth() const;
  // Replaces the auth state as a whole (session.auth succeeded).
  void set_auth(SessionAuth auth);

  bool handshake_done() const { return handshake_.load(std::memory_order_acquire); }
  void set_handshake_done() { handshake_.store(true, std::memory_order_release); }

  // Closed sessions refuse new work (first step of teardown).
  bool closed() const { return closed_.load(std::memory_order_acquire); }
  void mark_closed() { closed_.store(true, std::memory_order_release); }

 private:
  const std::string client_id_;
  std::atomic<bool> authenticated_{false};
  std::atomic<bool> host_{false};
  std::atomic<bool> handshake_{false};
  std::atomic<bool> closed_{false};
  mutable std::mutex mutex_;
  std::optional<std::string> agent_id_;
  std::optional<std::string> memory_namespace_;
};

}  // namespace car
