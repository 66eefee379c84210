#pragma once

#include <string_view>

// The run viewer (viewer/index.html), embedded at build time by viewer/embed.py, so the daemon
// serves it at `GET /` with no file to install and nothing fetched from elsewhere.
namespace car::daemon {

// The page: HTML with its one inline script and style. Static storage; valid for the process.
extern const std::string_view viewer_page_html;
// The Content-Security-Policy to send with it: only the page's own inline script and style (by
// SHA-256), connections back to the host that served it, nothing else.
extern const std::string_view viewer_page_csp;

}  // namespace car::daemon
