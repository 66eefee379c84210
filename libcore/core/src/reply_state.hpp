#pragma once

// Private: the shared state behind Reply, and the collector that turns a batch's member replies
// into one array frame.

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "car/connection.hpp"
#include "car/reply.hpp"
#include "request_log.hpp"

namespace car::detail {

struct BatchCollector {
  BatchCollector(std::shared_ptr<Connection> c, std::size_t members)
      : connection(std::move(c)), remaining(members) {}
  // One member finished; `entry` is empty for members that get no reply (notifications).
  void member_done(std::string entry, std::function<void()> after_queued);

  std::shared_ptr<Connection> connection;
  std::atomic<bool> close_after{false};  // a member hit -32001: close once the reply is out

 private:
  std::mutex mutex_;
  std::size_t remaining;
  std::vector<std::string> entries_;
  std::vector<std::function<void()>> after_queued_;
};

struct ReplyState {
  ReplyState(std::shared_ptr<Connection> c, std::shared_ptr<BatchCollector> b, std::string id,
             bool is_notification)
      : connection(std::move(c)), batch(std::move(b)), id_json(std::move(id)),
        notification(is_notification) {}
  ~ReplyState();
  // First call wins; returns false if the reply was already completed. `error_code` is the
  // error `entry` carries (for the request log line), if any.
  bool finish(std::string entry, std::function<void()> after_queued,
              std::optional<int> error_code = std::nullopt);

  std::shared_ptr<Connection> connection;
  std::shared_ptr<BatchCollector> batch;
  std::string id_json;
  bool notification;
  bool counted = false;  // holds one of the connection's in-flight slots
  std::optional<RequestLog> request_log;  // set at dispatch only when debug records are on
  std::atomic<bool> done{false};
};

}  // namespace car::detail
