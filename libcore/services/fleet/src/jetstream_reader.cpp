#include "jetstream_reader.hpp"

#include <fmt/format.h>

#include <charconv>
#include <set>

#include "car/log.hpp"
#include "car/nats/subjects.hpp"

namespace car::fleet::detail {

namespace {

Error nats_error(std::string_view what, natsStatus status, jsErrCode js_error = static_cast<jsErrCode>(0)) {
  std::string text = fmt::format("{}: {}", what, natsStatus_GetText(status));
  if (js_error != 0) text += fmt::format(" (JetStream error {})", static_cast<int>(js_error));
  return Error::internal(std::move(text));
}

std::optional<std::uint64_t> parse_u64(const char* text) {
  if (text == nullptr) return std::nullopt;
  std::string_view s(text);
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return value;
}

struct Metadata {
  std::uint64_t sequence = 0;
  std::uint64_t pending = 0;
  std::int64_t timestamp = 0;
};

std::optional<Metadata> metadata_of(natsMsg* msg) {
  jsMsgMetaData* meta = nullptr;
  if (natsMsg_GetMetaData(&meta, msg) != NATS_OK || meta == nullptr) return std::nullopt;
  Metadata out{meta->Sequence.Stream, meta->NumPending, meta->Timestamp};
  jsMsgMetaData_Destroy(meta);
  return out;
}

// What an async subscription's callback needs; freed by libnats' on-complete callback, after
// which no message callback runs. It holds copies, not the reader: a callback already running
// when Consumer::stop() returns (unsubscribing does not wait for it) may outlive the reader.
struct Handler {
  std::string prefix;
  Consumer::OnMessage on_message;
};

}  // namespace

Consumer::~Consumer() { stop(); }

void Consumer::stop() {
  if (sub_ == nullptr) return;
  natsSubscription_Unsubscribe(sub_);  // deletes the ephemeral consumer; errors change nothing
  natsSubscription_Destroy(sub_);
  sub_ = nullptr;
}

Result<std::unique_ptr<JetStreamReader>> JetStreamReader::connect(JetStreamOptions options) {
  if (options.servers.empty()) return Error::internal("no NATS server given");
  std::unique_ptr<JetStreamReader> reader(new JetStreamReader(std::move(options)));
  const auto& o = reader->options_;
  natsStatus s = natsOptions_Create(&reader->nats_options_);
  std::vector<const char*> servers;
  for (const auto& url : o.servers) servers.push_back(url.c_str());
  if (s == NATS_OK) {
    s = natsOptions_SetServers(reader->nats_options_, servers.data(),
                               static_cast<int>(servers.size()));
  }
  // A gateway outlives broker restarts: reconnect forever, quickly, to any server of the list.
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(reader->nats_options_, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(reader->nats_options_, 250);
  if (s == NATS_OK) s = natsOptions_SetTimeout(reader->nats_options_, o.request_timeout.count());
  // Subscriptions share libnats' delivery pool instead of a thread each.
  if (s == NATS_OK) s = natsOptions_UseGlobalMessageDelivery(reader->nats_options_, true);
  if (s == NATS_OK) s = natsConnection_Connect(&reader->connection_, reader->nats_options_);
  if (s != NATS_OK) {
    return nats_error(fmt::format("cannot connect to NATS {}", fmt::join(o.servers, ",")), s);
  }
  jsOptions js_options;
  jsOptions_Init(&js_options);
  js_options.Wait = o.request_timeout.count();
  s = natsConnection_JetStream(&reader->js_, reader->connection_, &js_options);
  if (s != NATS_OK) return nats_error("cannot open JetStream", s);
  return reader;
}

JetStreamReader::~JetStreamReader() {
  if (js_ != nullptr) jsCtx_Destroy(js_);
  if (connection_ != nullptr) {
    natsConnection_Close(connection_);
    natsConnection_Destroy(connection_);
  }
  if (nats_options_ != nullptr) natsOptions_Destroy(nats_options_);
}

bool JetStreamReader::connected() const {
  return connection_ != nullptr && natsConnection_Status(connection_) == NATS_CONN_STATUS_CONNECTED;
}

std::string JetStreamReader::connected_url() const {
  if (!connected()) return {};
  char buffer[512] = {};
  if (natsConnection_GetConnectedUrl(connection_, buffer, sizeof buffer) != NATS_OK) return {};
  return buffer;
}

std::string JetStreamReader::all_runs_filter() const {
  return car::nats::runs_filter(options_.prefix, std::nullopt, std::nullopt);
}

std::string JetStreamReader::run_filter(const std::string& run_id,
                                        const std::optional<std::string>& host_id) const {
  return fmt::format("{}.runs.{}.*.{}", options_.prefix,
                     host_id ? car::nats::encode_subject_token(*host_id) : "*",
                     car::nats::encode_subject_token(run_id));
}

// The ids, offset, sequence and JSON of a run message; nullopt for one outside the layout.
std::optional<StreamMessage> decode_message(std::string_view prefix, natsMsg* msg);

std::optional<StreamMessage> JetStreamReader::decode(natsMsg* msg) const {
  return decode_message(options_.prefix, msg);
}

std::optional<StreamMessage> decode_message(std::string_view prefix, natsMsg* msg) {
  const char* subject = natsMsg_GetSubject(msg);
  if (subject == nullptr) return std::nullopt;
  auto ids = car::nats::parse_run_subject(prefix, subject);
  if (!ids) return std::nullopt;
  const char* offset_text = nullptr;
  natsMsgHeader_Get(msg, car::nats::header_offset, &offset_text);
  auto offset = parse_u64(offset_text);
  auto meta = metadata_of(msg);
  if (!offset || !meta) return std::nullopt;
  StreamMessage out;
  out.host_id = std::move(ids->host_id);
  out.agent_id = std::move(ids->agent_id);
  out.run_id = std::move(ids->run_id);
  out.offset = *offset;
  out.sequence = meta->sequence;
  out.stored_at_ns = meta->timestamp;
  const char* data = natsMsg_GetData(msg);
  out.json.assign(data == nullptr ? "" : data, static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
  return out;
}

Result<std::unique_ptr<Consumer>> JetStreamReader::consume(const std::string& filter,
                                                           std::uint64_t start,
                                                           Consumer::OnMessage on_message,
                                                           int max_pending_bytes) {
  jsSubOptions sub_options;
  jsSubOptions_Init(&sub_options);
  sub_options.Stream = options_.stream.c_str();
  sub_options.Ordered = true;
  sub_options.Config.Heartbeat = std::chrono::nanoseconds(options_.heartbeat).count();
  if (start > 0) {
    sub_options.Config.DeliverPolicy = js_DeliverByStartSequence;
    sub_options.Config.OptStartSeq = start;
  } else {
    sub_options.Config.DeliverPolicy = js_DeliverAll;
  }
  auto* handler = new Handler{options_.prefix, std::move(on_message)};
  auto trampoline = [](natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    auto* h = static_cast<Handler*>(closure);
    // No exception may cross into libnats' thread.
    try {
      if (auto decoded = decode_message(h->prefix, msg)) h->on_message(std::move(*decoded));
    } catch (const std::exception& e) {
      log_error("fleet: a stream message handler threw: {}", e.what());
    } catch (...) {
      log_error("fleet: a stream message handler threw");
    }
    natsMsg_Destroy(msg);
  };
  auto consumer = std::make_unique<Consumer>();
  jsErrCode js_error = static_cast<jsErrCode>(0);
  natsStatus s = js_Subscribe(&consumer->sub_, js_, filter.c_str(), trampoline, handler, nullptr,
                              &sub_options, &js_error);
  if (s != NATS_OK) {
    delete handler;
    consumer->sub_ = nullptr;
    return nats_error(fmt::format("cannot consume {} from stream {}", filter, options_.stream), s,
                      js_error);
  }
  natsSubscription_SetOnCompleteCB(consumer->sub_, [](void* closure) {
    delete static_cast<Handler*>(closure);
  }, handler);
  // A consumer catching up on a long stream may run ahead of its callback: flow control bounds
  // what the server sends, this bounds what libnats buffers (see the header).
  natsSubscription_SetPendingLimits(consumer->sub_, 65536, max_pending_bytes);
  return consumer;
}

Result<std::optional<StoredTrace>> JetStreamReader::fetch_run(
    const std::string& run_id, const std::optional<std::string>& host_id) {
  jsSubOptions sub_options;
  jsSubOptions_Init(&sub_options);
  sub_options.Stream = options_.stream.c_str();
  sub_options.Ordered = true;
  sub_options.Config.DeliverPolicy = js_DeliverAll;
  std::string filter = run_filter(run_id, host_id);
  natsSubscription* sub = nullptr;
  jsErrCode js_error = static_cast<jsErrCode>(0);
  natsStatus s = js_SubscribeSync(&sub, js_, filter.c_str(), nullptr, &sub_options, &js_error);
  if (s != NATS_OK) return nats_error(fmt::format("cannot read {}", filter), s, js_error);
  struct Closer {
    natsSubscription* sub;
    ~Closer() {
      natsSubscription_Unsubscribe(sub);
      natsSubscription_Destroy(sub);
    }
  } closer{sub};

  // How much there is to read: what the consumer delivered already plus what it still holds.
  jsConsumerInfo* info = nullptr;
  s = natsSubscription_GetConsumerInfo(&info, sub, nullptr, &js_error);
  if (s != NATS_OK) return nats_error(fmt::format("cannot read {}", filter), s, js_error);
  const bool empty = info->NumPending == 0 && info->Delivered.Consumer == 0;
  jsConsumerInfo_Destroy(info);
  if (empty) return std::optional<StoredTrace>();

  StoredTrace trace;
  std::set<std::string> hosts;
  const auto timeout = options_.request_timeout.count();
  for (;;) {
    natsMsg* msg = nullptr;
    s = natsSubscription_NextMsg(&msg, sub, timeout);
    if (s != NATS_OK) return nats_error(fmt::format("reading {}", filter), s);
    auto meta = metadata_of(msg);
    auto decoded = decode(msg);
    natsMsg_Destroy(msg);
    if (decoded) {
      hosts.insert(decoded->host_id);
      if (trace.records.empty() && trace.host_id.empty()) {
        trace.host_id = decoded->host_id;
        trace.agent_id = decoded->agent_id;
        trace.run_id = decoded->run_id;
      }
      if (decoded->host_id == trace.host_id) {
        trace.add(decoded->offset, std::move(decoded->json), decoded->sequence);
      }
    }
    if (!meta || meta->pending == 0) break;
  }
  if (hosts.size() > 1) {
    return Error(ErrorCode::invalid_params,
                 fmt::format("run '{}' is on several hosts ({}): give host_id", run_id,
                             fmt::join(hosts, ", ")));
  }
  if (trace.records.empty()) return std::optional<StoredTrace>();
  return std::optional<StoredTrace>(std::move(trace));
}

}  // namespace car::fleet::detail
