#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "car/export.hpp"

// How the fleet lays runs out on NATS (docs/FLEET.md): one subject per run,
//   <prefix>.runs.<host>.<agent>.<run>      every stored record of the run, in offset order
//   <prefix>.host.<host>.events             the host's host.event notifications
// each message carrying a JetStream message id (Nats-Msg-Id) that names the record, so a publish
// retried after a timeout or a restart is stored once. The exporter (car-daemon --nats) writes
// this layout and the fleet gateway (--fleet) reads it; both use these functions so they cannot
// disagree.
//
// Ids become subject tokens through encode_subject_token: a NATS token may not be empty nor hold
// '.', '*', '>' or whitespace, and `>`/`*` in an agent id must not turn a subscription into a
// wildcard. The encoding is reversible and keeps common ids ([A-Za-z0-9_-]) readable.
namespace car::nats {

// Default stream layout (car-daemon --nats-stream / --nats-prefix).
inline constexpr std::string_view default_stream = "CAR";
inline constexpr std::string_view default_prefix = "car";

// Every byte outside [A-Za-z0-9_-] becomes %XX (upper-case hex); the empty id becomes "%".
CAR_API std::string encode_subject_token(std::string_view id);
// The inverse; nullopt for a token encode_subject_token cannot have produced.
CAR_API std::optional<std::string> decode_subject_token(std::string_view token);

// "<prefix>.runs.<host>.<agent>.<run>", each id encoded.
CAR_API std::string run_subject(std::string_view prefix, std::string_view host_id,
                                std::string_view agent_id, std::string_view run_id);
// Filters: every run of one agent on one host, of one agent on every host, of every host.
// `host_id`/`agent_id` absent means a `*` wildcard token.
CAR_API std::string runs_filter(std::string_view prefix, std::optional<std::string_view> host_id,
                                std::optional<std::string_view> agent_id);
// "<prefix>.host.<host>.events", and the filter for every host's events ("<prefix>.host.*.events").
CAR_API std::string host_events_subject(std::string_view prefix, std::string_view host_id);
CAR_API std::string host_events_filter(std::string_view prefix);

// The ids a run subject names (nullopt for a subject outside the layout).
struct CAR_API RunSubject {
  std::string host_id;
  std::string agent_id;
  std::string run_id;
};
CAR_API std::optional<RunSubject> parse_run_subject(std::string_view prefix, std::string_view subject);
// The host a host-events subject names.
CAR_API std::optional<std::string> parse_host_events_subject(std::string_view prefix,
                                                             std::string_view subject);

// Message ids. A run record: "<host>/<run>/<offset>" (offset = the record's runs.get_trace
// cursor, car/runs/record_exporter.hpp). Host events restart their sequence with every daemon
// process, so theirs also names the process: "<host>/events/<boot>/<sequence>".
CAR_API std::string record_message_id(std::string_view host_id, std::string_view run_id,
                                      std::uint64_t offset);
CAR_API std::string host_event_message_id(std::string_view host_id, std::string_view boot_id,
                                          std::uint64_t sequence);

// Headers every exported message carries besides Nats-Msg-Id, so a reader needs no decoding.
inline constexpr const char* header_host = "Car-Host";
inline constexpr const char* header_agent = "Car-Agent";  // run records only
inline constexpr const char* header_run = "Car-Run";      // run records only
inline constexpr const char* header_offset = "Car-Offset";  // run records: offset; events: sequence

}  // namespace car::nats
