// The JSONL store's index (run_index.cpp) and its one reader (parse_trace): lookups and pages come
// from the index, which is rebuilt from the run files when deleted or corrupt; retention; one
// status for a run whatever reads it (PROTOCOL.md §7.7).
#include <fstream>

#include "car/runs/run_trace_reader.hpp"
#include "run_test_support.hpp"

using namespace car;
using namespace car::test;

namespace {

std::string started_at(int i) {
  return format_timestamp(std::chrono::system_clock::now() - std::chrono::hours(1) +
                          std::chrono::milliseconds(i));
}

void add_run(RunStore& store, const std::string& agent, const std::string& run,
             const std::string& at, bool end = true, int turns = 1) {
  REQUIRE_FALSE(store.append(agent, run, std::vector<std::string>{make_started_record(
                                             {run, agent, "client-1", "i " + run, std::nullopt, at})}));
  std::vector<std::string> t;
  for (int i = 0; i < turns; ++i) {
    t.push_back(R"({"record":"turn","index":)" + std::to_string(i) + R"(,"prompt":"p"})");
  }
  if (!t.empty()) REQUIRE_FALSE(store.append(agent, run, t));
  if (end) {
    REQUIRE_FALSE(store.append(agent, run, std::vector<std::string>{make_ended_record(
                                               R"({"status":"ok"})", at)}));
  }
}

void append_raw(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::app | std::ios::binary);
  out << bytes;
}

void overwrite(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::trunc | std::ios::binary);
  out << bytes;
}

std::vector<std::string> ids_of(const std::vector<RunSummary>& runs) {
  std::vector<std::string> out;
  for (const auto& r : runs) out.push_back(r.run_id);
  return out;
}

}  // namespace

TEST_SUITE("run_store_index") {
  TEST_CASE("parse_trace: a torn line after `ended` does not undo the ending") {
    std::string text = make_started_record({"r", "a", "c", "i", std::nullopt, "t"}) + "\n" +
                       R"({"record":"turn","index":0})" + "\n" +
                       make_ended_record(R"({"status":"ok"})", "t2") + "\n" +
                       R"({"record":"turn","ind)";
    auto trace = parse_trace(text);
    REQUIRE(trace);
    CHECK(trace->summary.status == RunStatus::completed);
    CHECK(trace->summary.ended_at == "t2");
    CHECK(trace->summary.turn_count == 1);
    CHECK(trace->records.size() == 3);
    CHECK_FALSE(parse_trace(R"({"record":"turn","index":0})"));
    CHECK_FALSE(parse_trace(""));
  }

  TEST_CASE("runs.list and get_trace agree on a run whose `ended` is followed by a torn line") {
    TempDir dir;
    auto store = make_jsonl_run_store(dir.str());
    add_run(*store, "a1", "r1", started_at(0));
    append_raw(jsonl_run_path(dir.str(), "a1", "r1"), R"({"record":"turn","pro)");
    auto check = [&](RunStore& s) {
      auto runs = s.list("a1");
      REQUIRE(runs.size() == 1);
      CHECK(runs[0].status == RunStatus::completed);
      CHECK(runs[0].ended_at.has_value());
      auto trace = s.read("r1");
      REQUIRE(trace);
      CHECK(trace->summary.status == runs[0].status);
      CHECK(trace->summary.turn_count == runs[0].turn_count);
    };
    check(*store);
    // And after a rebuild from the files.
    std::filesystem::remove_all(dir.path / "runs" / ".index");
    check(*make_jsonl_run_store(dir.str()));
  }

  TEST_CASE("pages: newest first, strictly before `before`, next_before until the end") {
    TempDir dir;
    auto store = make_jsonl_run_store(dir.str());
    for (int i = 0; i < 25; ++i) add_run(*store, "a1", "r" + std::to_string(i), started_at(i));
    std::vector<std::string> seen;
    std::optional<std::string> before;
    for (int pages = 0; pages < 10; ++pages) {
      auto page = store->list_page("a1", 10, before);
      REQUIRE(page);
      for (auto& id : ids_of(page->runs)) seen.push_back(id);
      before = page->next_before;
      if (!before) break;
    }
    REQUIRE(seen.size() == 25);
    for (int i = 0; i < 25; ++i) CHECK(seen[static_cast<std::size_t>(i)] == "r" + std::to_string(24 - i));
    CHECK_FALSE(store->list_page("a1", 10, std::string_view("nope")));
    CHECK_FALSE(store->list_page("a1", 10, std::string_view("r1"))->next_before);
    CHECK(store->list_page("a1", 10, std::string_view("r1"))->runs.size() == 1);
    CHECK(store->list_page("a2", 10, std::nullopt)->runs.empty());
  }

  TEST_CASE("a deleted index is rebuilt from the run files, with the same answers") {
    TempDir dir;
    {
      auto store = make_jsonl_run_store(dir.str());
      for (int i = 0; i < 5; ++i) add_run(*store, "a" + std::to_string(i % 2), "r" + std::to_string(i), started_at(i));
      add_run(*store, "a0", "open", started_at(9), false, 2);
    }
    std::filesystem::remove_all(dir.path / "runs" / ".index");
    std::filesystem::remove(dir.path / "runs" / "a1" / ".summaries");
    auto store = make_jsonl_run_store(dir.str());
    auto found = store->find("r3");
    REQUIRE(found);
    CHECK(found->agent_id == "a1");
    CHECK_FALSE(store->find("nope"));
    auto a0 = store->list("a0");
    CHECK(ids_of(a0) == std::vector<std::string>{"open", "r4", "r2", "r0"});
    CHECK(a0[0].status == RunStatus::in_progress);  // no ending; the service decides
    CHECK(a0[0].turn_count == 2);
    CHECK(a0[1].status == RunStatus::completed);
    CHECK(ids_of(store->list("a1")) == std::vector<std::string>{"r3", "r1"});
  }

  TEST_CASE("corrupt index files are detected and repaired") {
    TempDir dir;
    auto store = make_jsonl_run_store(dir.str());
    for (int i = 0; i < 4; ++i) add_run(*store, "a1", "r" + std::to_string(i), started_at(i));
    SUBCASE("a by-id entry pointing elsewhere or unreadable") {
      overwrite(dir.path / "runs" / ".index" / "by-id" / "r1", "\x01garbage");
      auto r2 = dir.path / "runs" / ".index" / "by-id" / "r2";
      overwrite(r2, R"({"run_id":"r2","agent_id":"elsewhere","client_id":"x"})");
      // A young entry without its file is a start in progress (a miss, no scan); an old one is
      // scanned for and repaired.
      CHECK_FALSE(make_jsonl_run_store(dir.str())->find("r2"));
      std::filesystem::last_write_time(r2, std::filesystem::file_time_type::clock::now() -
                                               std::chrono::minutes(5));
      auto fresh = make_jsonl_run_store(dir.str());
      REQUIRE(fresh->find("r1"));
      CHECK(fresh->find("r1")->agent_id == "a1");
      REQUIRE(fresh->read("r2"));
      CHECK(fresh->read("r2")->location.agent_id == "a1");
    }
    SUBCASE("a summaries log with a corrupt line") {
      overwrite(dir.path / "runs" / "a1" / ".summaries", "{\"op\":\"start\"\n\x01\x02\n");
      auto fresh = make_jsonl_run_store(dir.str());
      auto runs = fresh->list("a1");
      CHECK(ids_of(runs) == std::vector<std::string>{"r3", "r2", "r1", "r0"});
      for (auto& r : runs) CHECK(r.status == RunStatus::completed);
    }
  }

  TEST_CASE("retention keeps the newest N and drops old runs, never an open one") {
    TempDir dir;
    auto store = make_jsonl_run_store(dir.str());
    auto now = std::chrono::system_clock::now();
    add_run(*store, "a1", "ancient", format_timestamp(now - std::chrono::hours(24 * 40)));
    add_run(*store, "a1", "open-old", format_timestamp(now - std::chrono::hours(24 * 41)), false);
    for (int i = 0; i < 12; ++i) add_run(*store, "a1", "r" + std::to_string(i), started_at(i));
    RetentionPolicy policy;
    policy.max_runs_per_agent = 10;
    policy.max_age_days = 30;
    std::size_t removed = store->prune(std::nullopt, policy, {}, now);
    CHECK(removed == 3);  // ancient, r0, r1; open-old is open in this process
    auto runs = store->list("a1");
    CHECK(runs.size() == 11);
    CHECK(runs.back().run_id == "open-old");
    CHECK_FALSE(store->find("ancient"));
    CHECK_FALSE(store->find("r0"));
    CHECK(store->find("r2"));
    CHECK_FALSE(std::filesystem::exists(jsonl_run_path(dir.str(), "a1", "r0")));
    // A fresh process no longer has it open: the embedder's predicate protects it instead.
    auto later = make_jsonl_run_store(dir.str());
    CHECK(later->prune("a1", policy, [](std::string_view id) { return id == "open-old"; }, now) == 0);
    CHECK(later->prune("a1", policy, {}, now) == 1);
    CHECK(later->list("a1").size() == 10);
    // 0 disables both limits.
    CHECK(later->prune(std::nullopt, RetentionPolicy{0, 0}, {}, now) == 0);
  }

  TEST_CASE("a miss costs no directory walk: many agents, lookups stay on the index") {
    TempDir dir;
    auto store = make_jsonl_run_store(dir.str());
    add_run(*store, "a0", "r0", started_at(0));
    for (int i = 0; i < 200; ++i) {
      std::filesystem::create_directories(dir.path / "runs" / ("empty" + std::to_string(i)));
    }
    CHECK_FALSE(store->find("missing"));
    CHECK(store->find("r0"));
  }
}
