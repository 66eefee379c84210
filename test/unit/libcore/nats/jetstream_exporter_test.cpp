// The JetStream exporter without a broker (car/nats/jetstream_exporter.hpp): configuration
// checks, and what it keeps while nothing acknowledges — a cursor file per run, from the run's
// first record, a status saying disconnected with the backlog as `pending`, the runs resumed from
// their cursors by a new exporter on the same directory. With a real nats-server:
// test/integration/test_nats_export.py.
#include "car/nats/jetstream_exporter.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "car/nats/subjects.hpp"

using namespace car;
using namespace car::nats;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "car-nats-unit-XXXXXX").string();
    path = mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// A store of runs in memory: run id -> records (JSON text).
class MemoryReplay : public runs::RecordReplay {
 public:
  std::map<std::string, std::vector<std::string>> runs;
  int reads = 0;

  Result<std::vector<runs::ExportRecord>> replay_run(std::string_view run_id,
                                                     std::uint64_t from) override {
    ++reads;
    auto it = runs.find(std::string(run_id));
    if (it == runs.end()) return Error{ErrorCode::invalid_params, "unknown run"};
    std::vector<runs::ExportRecord> out;
    for (std::size_t i = from; i < it->second.size(); ++i) out.push_back(record(run_id, i));
    return out;
  }

  runs::ExportRecord record(std::string_view run_id, std::uint64_t offset) {
    runs::ExportRecord r;
    r.agent_id = "a1";
    r.run_id = run_id;
    r.offset = offset;
    r.json = std::make_shared<const std::string>(runs[std::string(run_id)].at(offset));
    return r;
  }
};

JetStreamConfig unreachable(const fs::path& dir) {
  JetStreamConfig c;
  c.servers = {"nats://127.0.0.1:1"};  // nothing listens on port 1: refused at once
  c.host_id = "h1";
  c.cursor_dir = (dir / "cursors").string();
  c.backoff_min = std::chrono::milliseconds(1);
  c.backoff_max = std::chrono::milliseconds(2);
  return c;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::string s;
  std::getline(in, s);
  return s;
}

}  // namespace

TEST_SUITE("jetstream_exporter") {
  TEST_CASE("configuration errors are values") {
    TempDir t;
    auto base = unreachable(t.path);
    auto bad = [&](auto change) {
      JetStreamConfig c = base;
      change(c);
      auto r = make_jetstream_exporter(c);
      REQUIRE_FALSE(r);
      return r.error().message;
    };
    CHECK(bad([](JetStreamConfig& c) { c.servers.clear(); }).find("servers") != std::string::npos);
    CHECK(bad([](JetStreamConfig& c) { c.host_id.clear(); }).find("host_id") != std::string::npos);
    CHECK(bad([](JetStreamConfig& c) { c.replicas = 0; }).find("1..5") != std::string::npos);
    CHECK(bad([](JetStreamConfig& c) { c.replicas = 6; }).find("1..5") != std::string::npos);
    CHECK(bad([](JetStreamConfig& c) { c.stream = "A.B"; }).find("stream") != std::string::npos);
    CHECK(bad([](JetStreamConfig& c) { c.cursor_dir.clear(); }).find("cursor_dir") !=
          std::string::npos);
    auto ok = make_jetstream_exporter(base);
    REQUIRE(ok);
    CHECK(ok.value()->name() == "nats");
    CHECK(fs::is_directory(base.cursor_dir));
  }

  TEST_CASE("without a broker: cursors from each run's first record, status, resume") {
    TempDir t;
    auto config = unreachable(t.path);
    MemoryReplay store;
    store.runs["run.1"] = {R"({"record":"started"})", R"({"record":"turn","index":0})",
                           R"({"record":"turn","index":1})"};
    store.runs["r2"] = {R"({"record":"started"})"};
    {
      auto made = make_jetstream_exporter(config);
      REQUIRE(made);
      auto exporter = made.value();
      exporter->start(store);
      auto status = exporter->status();
      REQUIRE(status);
      CHECK_FALSE(status->connected);
      CHECK(status->last_error.find("cannot connect") != std::string::npos);

      std::vector<runs::ExportRecord> batch = {store.record("run.1", 0), store.record("run.1", 1),
                                               store.record("r2", 0)};
      auto error = exporter->deliver(batch, store);
      REQUIRE(error);
      CHECK(error->find("not connected") != std::string::npos);
      status = exporter->status();
      CHECK(status->pending == 3);  // two records of run.1, one of r2, none acknowledged
      // A cursor per run, at its first record; the file name is the encoded run id.
      CHECK(read_file(fs::path(config.cursor_dir) / encode_subject_token("run.1")) == "0");
      CHECK(read_file(fs::path(config.cursor_dir) / "r2") == "0");
      // The run is dirty: a later live record is not kept in memory but counted.
      (void)exporter->deliver(std::vector<runs::ExportRecord>{store.record("run.1", 2)}, store);
      CHECK(exporter->status()->pending == 4);
      // An idle call with the broker still away asks to be called again after a backoff.
      auto again = exporter->idle(store);
      REQUIRE(again);
      CHECK(again->count() >= 0);
      exporter->stop();
      CHECK_FALSE(exporter->idle(store));  // stopped: nothing more to do
    }
    // A new exporter on the same directory resumes both runs from their cursors: they are read
    // back from the store once it can publish, and count as pending meanwhile.
    auto made = make_jetstream_exporter(config);
    REQUIRE(made);
    auto exporter = made.value();
    exporter->start(store);
    CHECK(fs::exists(fs::path(config.cursor_dir) / "r2"));
    auto error = exporter->deliver(std::vector<runs::ExportRecord>{store.record("r2", 0)}, store);
    CHECK(error.has_value() == false);  // r2 is resumed from the store: nothing to publish live
    exporter->stop();
  }
}
