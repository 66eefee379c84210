#pragma once

#include <string>
#include <string_view>

#include "car/export.hpp"
#include "car/result.hpp"

// Token files (PROTOCOL.md §9): a token read from a file has surrounding whitespace trimmed; a minted
// token is 32 random bytes as 64 lowercase hex characters in a file of mode 0600.
namespace car::session {

// The token, or an Error whose message names the file and what went wrong.
using TokenResult = Result<std::string>;

// `text` without surrounding whitespace (how every token the daemon is given is read).
CAR_API std::string trim_token(std::string_view text);

// Reads and trims the token in `path`. An empty token is an error.
CAR_API TokenResult read_token_file(const std::string& path);

// Returns the token in `path` if the file exists and holds one; otherwise mints a new token,
// creating parent directories (0700) and the file (0600, exclusive create) — or replacing a file
// that exists but is empty — and returns it.
CAR_API TokenResult load_or_mint_token_file(const std::string& path);

}  // namespace car::session
