#pragma once

#include <string>

// OpenSSL reports failures on a per-thread error queue. Every entry point of this layer clears
// it before calling OpenSSL and turns what it holds afterwards into one line of text, so an error
// left behind by one connection (or by another user of libcrypto on the thread) never surfaces
// as another's.
namespace car::tls::detail {

// Empties the calling thread's OpenSSL error queue.
void clear_openssl_errors();

// The reasons on the queue, oldest first, joined by "; " (at most a few: the first is the cause,
// the rest is context); `fallback` when the queue is empty. Empties the queue.
std::string take_openssl_errors(const char* fallback);

}  // namespace car::tls::detail
