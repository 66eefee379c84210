#include "trace_fanout.hpp"

#include "car/connection.hpp"
#include "car/frame.hpp"
#include "car/server.hpp"
#include "run_json.hpp"

namespace car::runs::detail {

TraceFanout::TraceFanout(Executor& executor, StreamSubscriber::Options options,
                         std::shared_ptr<std::mutex> runs_lock)
    : executor_(executor),
      options_(options),
      totals_(std::make_shared<StreamTotals>()),
      lock_(std::move(runs_lock)) {}

void TraceFanout::publish_locked(const std::string& run_id, std::string_view agent_id,
                                 std::string_view record, std::uint64_t cursor, RunStatus status,
                                 Claimed& ready) {
  auto it = subs_.find(run_id);
  if (it == subs_.end() || it->second.empty()) return;
  // Serialized once; every subscriber's queue holds the same Frame.
  StreamEvent event{make_frame(trace_event_text(run_id, agent_id, record, cursor, status)), cursor};
  events_published_ += 1;
  for (auto& [client, subscriber] : it->second) {
    if (subscriber->push_claiming(event)) ready.push_back(subscriber);
  }
}

std::shared_ptr<StreamSubscriber> TraceFanout::attach_locked(
    const std::shared_ptr<Connection>& connection, const std::string& run_id,
    std::uint64_t cursor) {
  std::weak_ptr<TraceFanout> weak = shared_from_this();
  std::weak_ptr<Connection> weak_connection = connection;
  const std::string& client_id = connection->client_id();
  auto gap_notice = [run_id](const StreamGap& gap) {
    return make_frame(trace_gap_text(run_id, gap.from, gap.to, gap.dropped));
  };
  auto subscriber = std::make_shared<StreamSubscriber>(
      executor_, connection->sink_ptr(), cursor, options_, totals_, std::move(gap_notice),
      [weak, weak_connection, run_id, client_id](StreamSubscriber& failed, SinkError) {
        if (auto self = weak.lock()) {
          std::lock_guard lock(*self->lock_);
          self->remove_locked(run_id, client_id, &failed);
        }
        // The sink has failed, so the core is already ending the connection; make sure of it
        // (idempotent), from the loop rather than inside the sink's completion.
        if (auto c = weak_connection.lock()) {
          c->server().executor().post([weak_connection] {
            if (auto conn = weak_connection.lock()) conn->end();
          });
        }
      });
  auto& by_client = subs_[run_id];
  auto [it, inserted] = by_client.try_emplace(client_id, subscriber);
  if (!inserted) {
    it->second->stop();  // a re-subscribe replaces the previous subscription
    it->second = subscriber;
  }
  subs_by_client_[client_id].insert(run_id);
  return subscriber;
}

void TraceFanout::add_counters_locked(RunCounters& out) const {
  out.drain_hops = totals_->drain_hops.load(std::memory_order_relaxed);
  out.drain_passes = totals_->drain_passes.load(std::memory_order_relaxed);
  out.events_drained = totals_->events_drained.load(std::memory_order_relaxed);
  out.events_dropped = totals_->events_dropped.load(std::memory_order_relaxed);
  out.gaps_sent = totals_->gaps_sent.load(std::memory_order_relaxed);
  out.events_published = events_published_;
  out.subscribers = 0;
  for (const auto& [run_id, by_client] : subs_) out.subscribers += by_client.size();
}

bool TraceFanout::run_claimed(Claimed& ready) {
  if (ready.empty()) return false;
  if (options_.drain_thread == DrainThread::loop) {
    totals_->drain_hops.fetch_add(1, std::memory_order_relaxed);  // one loop task per call
    executor_.post([batch = std::move(ready)] {
      for (const auto& subscriber : batch) subscriber->drain_claimed();
    });
    ready = {};
    return true;
  }
  for (const auto& subscriber : ready) subscriber->drain_claimed();
  ready.clear();
  return true;
}

void TraceFanout::count_store_job_hop() {
  if (options_.drain_thread == DrainThread::pool) {
    totals_->drain_hops.fetch_add(1, std::memory_order_relaxed);
  }
}

bool TraceFanout::unsubscribe(const std::string& run_id, const std::string& client_id) {
  std::lock_guard lock(*lock_);
  return remove_locked(run_id, client_id);
}

bool TraceFanout::remove_locked(const std::string& run_id, const std::string& client_id,
                                const StreamSubscriber* only) {
  auto it = subs_.find(run_id);
  if (it == subs_.end()) return false;
  auto sub = it->second.find(client_id);
  if (sub == it->second.end()) return false;
  if (only != nullptr && sub->second.get() != only) return false;  // already replaced
  sub->second->stop();
  it->second.erase(sub);
  if (it->second.empty()) subs_.erase(it);
  auto c = subs_by_client_.find(client_id);
  if (c != subs_by_client_.end()) {
    c->second.erase(run_id);
    if (c->second.empty()) subs_by_client_.erase(c);
  }
  return true;
}

void TraceFanout::remove_client(const std::string& client_id) {
  std::lock_guard lock(*lock_);
  auto c = subs_by_client_.find(client_id);
  if (c == subs_by_client_.end()) return;
  std::set<std::string> run_ids = std::move(c->second);
  subs_by_client_.erase(c);
  for (const auto& run_id : run_ids) {
    auto it = subs_.find(run_id);
    if (it == subs_.end()) continue;
    auto sub = it->second.find(client_id);
    if (sub != it->second.end()) {
      sub->second->stop();
      it->second.erase(sub);
    }
    if (it->second.empty()) subs_.erase(it);
  }
}

std::vector<SubscriberStats> TraceFanout::stats(std::optional<std::string_view> run_id) const {
  struct Listed {
    std::string run_id;
    std::string client_id;
    std::shared_ptr<StreamSubscriber> subscriber;
  };
  std::vector<Listed> subs;
  {
    std::lock_guard lock(*lock_);
    for (const auto& [id, by_client] : subs_) {
      if (run_id && id != *run_id) continue;
      for (const auto& [client, sub] : by_client) subs.push_back({id, client, sub});
    }
  }
  // Each subscriber's own lock, outside the runs lock.
  std::vector<SubscriberStats> out;
  out.reserve(subs.size());
  for (auto& s : subs) {
    SubscriberStats stats;
    static_cast<StreamStats&>(stats) = s.subscriber->stats();
    stats.run_id = std::move(s.run_id);
    stats.client_id = std::move(s.client_id);
    out.push_back(std::move(stats));
  }
  return out;
}

}  // namespace car::runs::detail
