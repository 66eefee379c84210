#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "car/export.hpp"

// The server-side state of one connection (PROTOCOL.md §3): its client_id, whether it may call
// methods that require authentication, whether it completed server.handshake, and the typed state
// services attach to it.
//
// Lifetime: owned by its Connection. Threading: every member may be called from any thread.
namespace car {

// Base of the per-session state a service attaches (session service: what session.auth granted;
// a host service could keep its own). Derived types guard their own fields.
class CAR_API SessionSlot {
 public:
  virtual ~SessionSlot() = default;
};

// Names one kind of slot. A service defines one key as a static object and keeps it private; the
// key's address is its identity, so two keys never collide even across shared libraries.
struct CAR_API SessionSlotKey {
  const char* name;  // for diagnostics only
};

class CAR_API Session {
 public:
  explicit Session(std::string client_id) : client_id_(std::move(client_id)) {}

  const std::string& client_id() const { return client_id_; }

  // Methods marked requires_auth answer -32001 until a service (session.auth) sets this.
  bool authenticated() const { return authenticated_.load(std::memory_order_acquire); }
  void set_authenticated() { authenticated_.store(true, std::memory_order_release); }

  bool handshake_done() const { return handshake_.load(std::memory_order_acquire); }
  void set_handshake_done() { handshake_.store(true, std::memory_order_release); }

  // Closed sessions refuse new work (first step of teardown).
  bool closed() const { return closed_.load(std::memory_order_acquire); }
  void mark_closed() { closed_.store(true, std::memory_order_release); }

  // The slot for `key`, created with `T{}` on first use and kept until the session is destroyed.
  // Every call with one key must name the same T (the key's owner wraps this in a typed accessor).
  // Bound: one slot per key, and keys are static objects, so a peer cannot grow this table.
  template <class T>
  T& slot(const SessionSlotKey& key) {
    return static_cast<T&>(slot_or_create(key, [] { return std::unique_ptr<SessionSlot>(new T()); }));
  }
  // The slot for `key` if one was created, else nullptr.
  SessionSlot* find_slot(const SessionSlotKey& key) const;

 private:
  SessionSlot& slot_or_create(const SessionSlotKey& key, std::unique_ptr<SessionSlot> (*make)());

  const std::string client_id_;
  std::atomic<bool> authenticated_{false};
  std::atomic<bool> handshake_{false};
  std::atomic<bool> closed_{false};
  mutable std::mutex slots_mutex_;
  std::vector<std::pair<const SessionSlotKey*, std::unique_ptr<SessionSlot>>> slots_;
};

}  // namespace car
