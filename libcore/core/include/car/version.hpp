#pragma once

// The library's version and the protocol version it speaks (PROTOCOL.md §3, server.handshake).
namespace car {

inline constexpr const char* version_string = "0.1.0";
inline constexpr int protocol_version = 2;

}  // namespace car
