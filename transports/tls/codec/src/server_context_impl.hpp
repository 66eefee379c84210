#pragma once

#include <openssl/ssl.h>

#include "car/tls/server_context.hpp"

namespace car::tls {

// The configured SSL_CTX. Owned here; sessions take their SSL objects from it (SSL_new is safe
// on a shared, no longer modified SSL_CTX).
struct ServerContext::Impl {
  SSL_CTX* ctx = nullptr;
  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() { SSL_CTX_free(ctx); }
};

}  // namespace car::tls
