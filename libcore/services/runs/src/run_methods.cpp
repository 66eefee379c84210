// install_run_services: the runs.* methods (PROTOCOL.md §7.2) over the run ledger and the trace
// fan-out, and their teardown steps. A binding only reads its params, calls the service and turns
// the value or error it gets back into the reply; the rules live in the services and the JSON
// shapes in run_json.cpp.
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "car/connection.hpp"
#include "car/method_registry.hpp"
#include "car/runs/run_service.hpp"
#include "car/server.hpp"
#include "run_access.hpp"
#include "run_json.hpp"
#include "run_ledger.hpp"
#include "trace_fanout.hpp"

namespace car::runs {

namespace {

// What the bindings call; the method table holds it, so the services live as long as the Server.
struct Services {
  Server& server;
  std::shared_ptr<detail::RunLedger> ledger;
  std::shared_ptr<detail::TraceFanout> fanout;
};

std::optional<std::string> opt_string(const json::Value& params, std::string_view name) {
  if (auto s = param::string(params, name)) return std::string(*s);
  return std::nullopt;
}

void runs_start(const Services& s, const Request& request, Reply reply) {
  const json::Value& p = request.params();
  detail::StartSpec spec;
  spec.intent = *opt_string(p, "intent");
  spec.agent_id = opt_string(p, "agent_id");
  spec.agent_name = opt_string(p, "agent_name");
  spec.outcome_description = opt_string(p, "outcome_description");
  spec.idempotency_key = opt_string(p, "idempotency_key");
  s.ledger->start(request.connection_ptr(), std::move(spec),
                  [reply](Result<detail::StartedRun> started) {
                    if (!started) {
                      reply.error(started.error());
                      return;
                    }
                    reply.ok(detail::start_result(started->run_id, started->agent_id));
                  });
}

void runs_complete(const Services& s, const Request& request, Reply reply) {
  const json::Value& p = request.params();
  std::string run_id = *opt_string(p, "run_id");
  std::string outcome_json = json::stringify(*param::member(p, "outcome"));
  s.ledger->complete(request.connection_ptr(), run_id, std::move(outcome_json),
                     [reply, run_id](std::optional<Error> error) {
                       if (error) {
                         reply.error(std::move(*error));
                         return;
                       }
                       reply.ok(detail::complete_result(run_id));
                     });
}

// runs.record_turns checks its own params (it is registered without a schema) so that every
// failure carries the method's usage text (PROTOCOL.md §7.3) instead of the generic §2 one.
std::optional<Error> check_record_turns_params(const json::Value& p) {
  const json::Value* id = param::member(p, "run_id");
  if (id == nullptr || id->IsNull()) return detail::record_turns_params_error("run_id is required");
  if (!id->IsString() || id->GetStringLength() == 0) {
    return detail::record_turns_params_error("run_id must be a non-empty string");
  }
  const json::Value* turns = param::member(p, "turns");
  if (turns == nullptr || turns->IsNull()) return detail::record_turns_params_error("turns is required");
  if (!turns->IsArray()) return detail::record_turns_params_error("turns must be an array");
  return std::nullopt;
}

void runs_record_turns(const Services& s, const Request& request, Reply reply) {
  const json::Value& p = request.params();
  if (auto error = check_record_turns_params(p)) {
    reply.error(std::move(*error));
    return;
  }
  std::string run_id = *opt_string(p, "run_id");
  auto batch = s.ledger->prepare_turns(*param::member(p, "turns"));
  if (!batch) {
    reply.error(batch.error());
    return;
  }
  s.ledger->record_turns(
      request.connection_ptr(), run_id, std::move(batch.value()),
      [reply, run_id](Result<detail::RecordedTurns> recorded) {
        if (!recorded) {
          reply.error(recorded.error());
        } else if (recorded->refused) {
          reply.ok(detail::turns_refused_result(run_id, detail::to_string(*recorded->refused)));
        } else {
          reply.ok(detail::turns_recorded_result(run_id, recorded->base_index, recorded->count));
        }
      });
}

void runs_subscribe(const Services& s, const Request& request, Reply reply) {
  std::string run_id = *opt_string(request.params(), "run_id");
  s.ledger->subscribe(
      request.connection_ptr(), run_id, [reply, run_id](Result<detail::TraceSnapshot> snapshot) {
        if (!snapshot) {
          reply.error(snapshot.error());
          return;
        }
        // The subscription delivers nothing before its snapshot reply is queued on the sink.
        reply.ok(detail::snapshot_result(run_id, snapshot->agent_id, snapshot->turns,
                                         snapshot->cursor, snapshot->status,
                                         snapshot->turns_from),
                 [subscriber = snapshot->subscriber] {
                   if (subscriber) subscriber->resume();
                 });
      });
}

void runs_unsubscribe(const Services& s, const Request& request, Reply reply) {
  std::string run_id = *opt_string(request.params(), "run_id");
  bool removed = s.fanout->unsubscribe(run_id, request.connection().client_id());
  reply.ok(detail::unsubscribe_result(run_id, removed));
}

void runs_list(const Services& s, const Request& request, Reply reply) {
  const json::Value& p = request.params();
  std::string agent_id = *opt_string(p, "agent_id");
  // [ext] paging (PROTOCOL.md §7.2): without `limit` every retained run, as before.
  std::optional<std::size_t> limit;
  if (auto l = param::integer(p, "limit")) {
    if (*l < 1) {
      reply.error(Error::invalid_params("limit", "must be a positive integer"));
      return;
    }
    limit = static_cast<std::size_t>(*l);
  }
  s.ledger->list(request.connection(), agent_id, limit, opt_string(p, "before"),
                 [reply, agent_id](Result<RunPage> page) {
                   if (!page) {
                     reply.error(page.error());
                     return;
                   }
                   std::optional<std::string_view> next;
                   if (page->next_before) next = *page->next_before;
                   reply.ok(detail::list_result(agent_id, page->runs, next));
                 });
}

void runs_get_trace(const Services& s, const Request& request, Reply reply) {
  const json::Value& p = request.params();
  std::string run_id = *opt_string(p, "run_id");
  auto cursor = static_cast<std::size_t>(param::integer(p, "cursor").value_or(0));
  s.ledger->get_trace(request.connection_ptr(), run_id, cursor,
                      [reply, run_id](Result<std::optional<detail::TracePage>> page) {
                        if (!page) {
                          reply.error(page.error());
                        } else if (!page.value()) {
                          reply.ok(detail::trace_not_found_result(run_id));
                        } else {
                          const detail::TracePage& found = *page.value();
                          reply.ok(detail::trace_page_result(run_id, found.agent_id, found.records,
                                                             found.cursor, found.next_cursor));
                        }
                      });
}

void runs_stats(const Services& s, const Request& request, Reply reply) {
  if (!detail::may_read_stats(s.server, request.session())) {
    reply.error(Error::internal("not authorized for stats"));
    return;
  }
  std::optional<std::string_view> filter;
  if (auto r = param::string(request.params(), "run_id"); r && !r->empty()) filter = *r;
  auto subscribers = s.fanout->stats(filter);
  auto exporters = s.ledger->exports().stats();
  reply.ok(detail::stats_result(subscribers, s.ledger->counters(), exporters));
}

}  // namespace

std::shared_ptr<RunService> install_run_services(Server& server, RunConfig config) {
  auto service = std::make_shared<RunService>(server, std::move(config));
  auto services =
      std::make_shared<const Services>(Services{server, service->ledger_, service->fanout_});
  auto bind = [&services](void (*fn)(const Services&, const Request&, Reply)) {
    return [services, fn](const Request& request, Reply reply) {
      fn(*services, request, std::move(reply));
    };
  };
  auto& methods = server.methods();
  methods.add(
      "runs.start",
      {required("intent", ParamType::string), optional("agent_id", ParamType::non_empty_string),
       optional("agent_name", ParamType::string),
       optional("outcome_description", ParamType::string),
       optional("idempotency_key", ParamType::string)},
      bind(runs_start));
  methods.add(
      "runs.complete",
      {required("run_id", ParamType::non_empty_string), required("outcome", ParamType::object)},
      bind(runs_complete));
  methods.add("runs.record_turns", {}, bind(runs_record_turns));  // checks its own params
  methods.add("runs.subscribe", {required("run_id", ParamType::non_empty_string)},
              bind(runs_subscribe));
  methods.add("runs.unsubscribe", {required("run_id", ParamType::non_empty_string)},
              bind(runs_unsubscribe));
  methods.add("runs.list",
              {required("agent_id", ParamType::non_empty_string),
               optional("limit", ParamType::non_negative_integer),
               optional("before", ParamType::non_empty_string)},
              bind(runs_list));
  methods.add("runs.get_trace",
              {required("run_id", ParamType::non_empty_string),
               optional("cursor", ParamType::non_negative_integer)},
              bind(runs_get_trace));
  methods.add("runs.stats", {optional("run_id", ParamType::string)}, bind(runs_stats));

  // Hooks hold the services weakly: a hook must not keep them alive past the method table.
  std::weak_ptr<detail::TraceFanout> fanout = service->fanout_;
  server.add_teardown_step(teardown_order::run_subscriptions, [fanout](Connection& c) {
    if (auto f = fanout.lock()) f->remove_client(c.client_id());
  });
  service->ledger_->prune_store();  // retention at start-up, on the pool
  std::weak_ptr<detail::RunLedger> ledger = service->ledger_;
  server.add_teardown_step(teardown_order::run_grace, [ledger](Connection& c) {
    if (auto l = ledger.lock()) l->start_grace(c.client_id());
  });
  return service;
}

}  // namespace car::runs
