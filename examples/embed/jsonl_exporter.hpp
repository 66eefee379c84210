#pragma once

// A record exporter (car/runs/record_exporter.hpp) that writes every record it is offered as one
// JSON line to a stdio stream: {"source":"run","agent_id":…,"run_id":…,"offset":N,"record":…} or
// {"source":"host","offset":N,"event":…}. It runs on its own delivery thread, so a blocking
// fwrite here (a pipe nobody reads) stalls only this exporter; producers are acknowledged by the
// local store and never wait for it. A real exporter (a message bus) would publish instead, with
// `<host-id>/<run_id>/<offset>` as the message id, and keep its own cursor.
#include <cstdio>
#include <string>

#include <car/json.hpp>
#include <car/runs/record_exporter.hpp>

class JsonlExporter final : public car::runs::RecordExporter {
 public:
  explicit JsonlExporter(std::FILE* out) : out_(out) {}

  std::string name() const override { return "jsonl"; }

  std::optional<std::string> deliver(std::span<const car::runs::ExportRecord> batch,
                                     car::runs::RecordReplay&) override {
    std::string lines;
    for (const auto& r : batch) {
      car::json::Builder b;
      b.begin_object();
      if (r.source == car::runs::ExportSource::run_record) {
        b.key("source").str("run").key("agent_id").str(r.agent_id).key("run_id").str(r.run_id);
        b.key("offset").integer(static_cast<long long>(r.offset)).key("record").raw(*r.json);
      } else {
        b.key("source").str("host").key("offset").integer(static_cast<long long>(r.offset));
        b.key("event").raw(*r.json);
      }
      b.end_object();
      lines += b.take();
      lines += '\n';
    }
    // One write per batch; an error is counted in runs.stats "exporters" and logged.
    if (std::fwrite(lines.data(), 1, lines.size(), out_) != lines.size() || std::fflush(out_) != 0) {
      return std::string("write failed");
    }
    return std::nullopt;
  }

 private:
  std::FILE* out_;
};
