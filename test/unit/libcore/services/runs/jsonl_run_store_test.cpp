// The JSONL RunStore (jsonl_run_store.cpp): path encoding, torn-line recovery, summaries, write
// failures (PROTOCOL.md §7.7).
#include <fcntl.h>
#include <unistd.h>

#include <fstream>

#include "run_test_support.hpp"

using namespace car;
using namespace car::test;

namespace {

std::string started(const std::string& run, const std::string& agent, const std::string& at) {
  return make_started_record({run, agent, "client-1", "intent " + run, std::nullopt, at});
}

void append_raw(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::app | std::ios::binary);
  out << bytes;
}

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

}  // namespace

TEST_SUITE("jsonl_run_store") {
  TEST_CASE("path components keep [A-Za-z0-9_-] and %-encode every other byte") {
    CHECK(encode_path_component("agent_1-x") == "agent_1-x");
    CHECK(encode_path_component("a/b") == "a%2Fb");
    CHECK(encode_path_component("..") == "%2E%2E");
    CHECK(encode_path_component(".") == "%2E");
    CHECK(encode_path_component("name:my-bot") == "name%3Amy-bot");
    CHECK(encode_path_component("%") == "%25");
    CHECK(encode_path_component("\xC3\xA9") == "%C3%A9");
    CHECK(encode_path_component(std::string("a\0b", 3)) == "a%00b");
    for (std::string id : {"..", "a/b/../c", "x%2Fy", "\xC3\xA9t\xC3\xA9", "plain"}) {
      CAPTURE(id);
      auto enc = encode_path_component(id);
      CHECK(enc.find('/') == std::string::npos);
      CHECK(enc.find('.') == std::string::npos);
      CHECK(decode_path_component(enc) == id);
    }
    CHECK_FALSE(decode_path_component("%4").has_value());
    CHECK_FALSE(decode_path_component("%zz").has_value());
    CHECK_FALSE(decode_path_component("a.b").has_value());
  }

  TEST_CASE("no agent or run id escapes the state directory") {
    TempDir dir;
    auto store = make_jsonl_run_store(dir.str());
    const std::string agent = "../../evil";
    const std::string run = "../../../tmp/owned";
    REQUIRE_FALSE(store->append(agent, run, std::vector<std::string>{started(run, agent, "t")}));
    auto path = std::filesystem::path(jsonl_run_path(dir.str(), agent, run));
    CHECK(std::filesystem::exists(path));
    auto canonical = std::filesystem::weakly_canonical(path).string();
    auto root = std::filesystem::weakly_canonical(dir.path / "runs").string();
    CHECK(canonical.rfind(root + "/", 0) == 0);
    CHECK(path.parent_path().filename() == "%2E%2E%2F%2E%2E%2Fevil");
    // Exactly one agent directory holding one run file was created under runs/ (besides the
    // index: runs/.index and the agent's .summaries log).
    std::size_t entries = 0;
    for (auto& e : std::filesystem::recursive_directory_iterator(dir.path)) {
      std::string rel = std::filesystem::relative(e.path(), dir.path).string();
      if (rel.rfind("runs/.index", 0) == 0 || e.path().filename() == ".summaries") continue;
      ++entries;
    }
    CHECK(entries == 3);  // runs/, runs/<agent>/, the file
    auto found = store->find(run);
    REQUIRE(found);
    CHECK(found->agent_id == agent);
  }

  TEST_CASE("ids whose encoding is too long for a file name are shortened without collisions") {
    TempDir dir;
    auto store = make_jsonl_run_store(dir.str());
    std::string long_id;
    for (int i = 0; i < 128; ++i) long_id += "\xF0\x9F\x98\x80";  // 128 emoji: 1536 encoded bytes
    std::string sibling = long_id;
    sibling.back() = '\x81';
    for (const auto& id : {long_id, sibling}) {
      REQUIRE_FALSE(store->append(long_id, id, std::vector<std::string>{started(id, long_id, "t")}));
    }
    auto path = std::filesystem::path(jsonl_run_path(dir.str(), long_id, long_id));
    CHECK(path.filename().string().size() <= 255);
    CHECK(path.filename().string().find('~') != std::string::npos);
    CHECK(path.parent_path().filename().string().size() <= 200);
    CHECK(jsonl_run_path(dir.str(), long_id, long_id) != jsonl_run_path(dir.str(), long_id, sibling));
    REQUIRE(store->read(long_id));
    CHECK(store->read(long_id)->location.run_id == long_id);
    CHECK(store->read(sibling)->location.run_id == sibling);
    CHECK(store->list(long_id).size() == 2);
    // A short id keeps the plain encoding.
    CHECK(std::filesystem::path(jsonl_run_path(dir.str(), "a", "r.1")).filename() == "r%2E1.jsonl");
  }

  TEST_CASE("append, read, find and list round-trip") {
    TempDir dir;
    auto store = make_jsonl_run_store(dir.str());
    std::vector<std::string> first{started("r1", "a1", "2026-01-01T00:00:00.001Z")};
    REQUIRE_FALSE(store->append("a1", "r1", first));
    std::vector<std::string> turns{R"({"record":"turn","index":0,"prompt":"p"})",
                                   R"({"record":"turn","index":1,"prompt":"q"})"};
    REQUIRE_FALSE(store->append("a1", "r1", turns));
    std::vector<std::string> end{make_ended_record(R"({"status":"ok"})", "2026-01-01T00:00:01.000Z")};
    REQUIRE_FALSE(store->append("a1", "r1", end));
    REQUIRE_FALSE(store->append("a1", "r2", std::vector<std::string>{
                                                started("r2", "a1", "2026-01-02T00:00:00.000Z")}));
    auto trace = store->read("r1");
    REQUIRE(trace);
    CHECK(trace->records.size() == 4);
    CHECK(trace->location.agent_id == "a1");
    CHECK(trace->location.client_id == "client-1");
    CHECK(trace->location.ended);
    CHECK(trace->summary.status == RunStatus::completed);
    CHECK(trace->summary.turn_count == 2);
    CHECK(trace->records[1] == turns[0]);
    CHECK_FALSE(store->read("nope"));
    CHECK_FALSE(store->find("nope"));
    auto runs = store->list("a1");
    REQUIRE(runs.size() == 2);
    std::sort(runs.begin(), runs.end(),
              [](const RunSummary& a, const RunSummary& b) { return a.run_id < b.run_id; });
    CHECK(runs[0].turn_count == 2);
    CHECK(runs[0].status == RunStatus::completed);
    CHECK(runs[0].ended_at == "2026-01-01T00:00:01.000Z");
    CHECK(runs[0].intent == "intent r1");
    CHECK(runs[1].status == RunStatus::in_progress);  // no ending: the service decides
    CHECK_FALSE(runs[1].ended_at.has_value());
    CHECK(store->list("other").empty());
    // One record per line, exactly as given.
    auto lines = lines_of(jsonl_run_path(dir.str(), "a1", "r1"));
    REQUIRE(lines.size() == 4);
    CHECK(lines[2] == turns[1]);
  }

  TEST_CASE("a torn last line is skipped; a corrupt line in the middle too") {
    TempDir dir;
    auto store = make_jsonl_run_store(dir.str());
    REQUIRE_FALSE(store->append("a1", "r1", std::vector<std::string>{started("r1", "a1", "t")}));
    REQUIRE_FALSE(store->append(
        "a1", "r1", std::vector<std::string>{R"({"record":"turn","index":0,"prompt":"p"})"}));
    std::string path = jsonl_run_path(dir.str(), "a1", "r1");
    SUBCASE("torn last line (crash mid-write)") {
      append_raw(path, R"({"record":"turn","index":1,"pro)");
      auto trace = store->read("r1");
      REQUIRE(trace);
      CHECK(trace->records.size() == 2);
      CHECK(trace->summary.turn_count == 1);
      auto runs = store->list("a1");
      REQUIRE(runs.size() == 1);
      CHECK(runs[0].turn_count == 1);
      CHECK(runs[0].status == RunStatus::in_progress);
    }
    SUBCASE("torn ended line: the run reads as not ended") {
      append_raw(path, R"({"record":"ended","termination":"outc)");
      auto trace = store->read("r1");
      REQUIRE(trace);
      CHECK_FALSE(trace->location.ended);
      CHECK(store->list("a1")[0].status == RunStatus::in_progress);
    }
    SUBCASE("garbage line in the middle") {
      append_raw(path, "\x01garbage\n");
      REQUIRE_FALSE(store->append(
          "a1", "r1", std::vector<std::string>{R"({"record":"turn","index":1,"prompt":"q"})"}));
      auto trace = store->read("r1");
      REQUIRE(trace);
      CHECK(trace->records.size() == 3);
      CHECK(trace->summary.turn_count == 2);
    }
  }

  TEST_CASE("a write failure is reported with its reason") {
    TempDir dir;
    // The state "directory" is a file: nothing can be created below it.
    std::string file = (dir.path / "not-a-dir").string();
    append_raw(file, "x");
    auto store = make_jsonl_run_store(file);
    auto error = store->append("a1", "r1", std::vector<std::string>{started("r1", "a1", "t")});
    REQUIRE(error);
    CHECK_FALSE(error->empty());
    CHECK_FALSE(store->find("r1"));
    CHECK(store->list("a1").empty());
  }
}
