#pragma once

// Everything carcore offers, in one include: the engine, the libuv runtime, the CAR services and
// the bundled transports. Link `carcore` (meson dependency or pkg-config) to use it. Embedders
// who want less include the headers of the layers they link (docs/EMBEDDING.md). The test
// doubles (car/testing/, carcore-testing) are not included.

// The engine (carcore-engine).
#include "car/connection.hpp"
#include "car/error.hpp"
#include "car/event_stream.hpp"
#include "car/event_subscriber.hpp"
#include "car/executor.hpp"
#include "car/export.hpp"
#include "car/frame.hpp"
#include "car/frame_sink.hpp"
#include "car/json.hpp"
#include "car/jsonrpc_text.hpp"
#include "car/log.hpp"
#include "car/method_gate.hpp"
#include "car/method_registry.hpp"
#include "car/outbound_calls.hpp"
#include "car/params.hpp"
#include "car/queued_frame_sink.hpp"
#include "car/random.hpp"
#include "car/reply.hpp"
#include "car/result.hpp"
#include "car/server.hpp"
#include "car/session.hpp"
#include "car/version.hpp"

// The libuv runtime (carcore-uv).
#include "car/uv/guarded.hpp"
#include "car/uv/listener.hpp"
#include "car/uv/stream.hpp"
#include "car/uv/stream_filter.hpp"
#include "car/uv/stream_sink.hpp"
#include "car/uv/uv_executor.hpp"

// The CAR services (carcore-session, carcore-host, carcore-runs).
#include "car/host/approval_core.hpp"
#include "car/host/approval_gate.hpp"
#include "car/host/host_records.hpp"
#include "car/host/host_service.hpp"
#include "car/host/host_state.hpp"
#include "car/host/time_format.hpp"
#include "car/host/tool_broker.hpp"
#include "car/runs/run_record.hpp"
#include "car/runs/run_service.hpp"
#include "car/runs/run_store.hpp"
#include "car/session/agent_bindings.hpp"
#include "car/session/auth.hpp"
#include "car/session/session_service.hpp"
#include "car/session/token_file.hpp"

// The transports (carcore-ws, carcore-stdio, carcore-unix) and their sans-I/O codecs
// (carcore-ws-codec, carcore-tls-codec, carcore-stdio-codec).
#include "car/stdio/content_length_framer.hpp"
#include "car/stdio/framing_events.hpp"
#include "car/stdio/ndjson_framer.hpp"
#include "car/stdio/stdio_transport.hpp"
#include "car/tls/server_context.hpp"
#include "car/tls/server_session.hpp"
#include "car/unix_socket/unix_listener.hpp"
#include "car/ws/close_code.hpp"
#include "car/ws/frame_decoder.hpp"
#include "car/ws/frame_encoder.hpp"
#include "car/ws/handshake.hpp"
#include "car/ws/opcode.hpp"
#include "car/ws/tcp_listener.hpp"
#include "car/ws/utf8_validator.hpp"
#include "car/ws/ws_connection.hpp"
#include "car/ws/ws_options.hpp"
