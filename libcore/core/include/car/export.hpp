#pragma once

// CAR_API marks what carcore's libraries export. They are built with hidden visibility, so a
// shared build exports exactly the declarations carrying this mark (classes, free functions) and
// nothing of their internals. On ELF one attribute serves both the library and its users.
#if defined(_WIN32)
#define CAR_API
#else
#define CAR_API __attribute__((visibility("default")))
#endif
