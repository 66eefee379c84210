#include "line_queue.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <string>
#include <thread>

using car::daemon::LineQueue;

TEST_CASE("LineQueue hands lines over in order and reports what it dropped with the next one") {
  LineQueue queue;
  for (std::size_t i = 0; i < LineQueue::max_lines; ++i) {
    REQUIRE(queue.push(std::to_string(i)));
  }
  CHECK_FALSE(queue.push("one too many"));
  CHECK_FALSE(queue.push("two too many"));

  LineQueue::Item first = queue.take();
  CHECK(first.line == "0");
  CHECK_FALSE(first.control);
  CHECK(first.dropped == 2);
  queue.done();
  CHECK(queue.push("room again"));

  LineQueue::Item second = queue.take();
  CHECK(second.line == "1");
  CHECK(second.dropped == 0);  // reported once only
  queue.done();
}

TEST_CASE("LineQueue bounds the bytes as well as the lines") {
  LineQueue queue;
  REQUIRE(queue.push(std::string(LineQueue::max_bytes - 10, 'x')));
  CHECK_FALSE(queue.push(std::string(11, 'y')));
  CHECK(queue.push(std::string(10, 'z')));
  LineQueue::Item big = queue.take();
  CHECK(big.line.size() == LineQueue::max_bytes - 10);
  CHECK(big.dropped == 1);
  queue.done();
  LineQueue::Item next = queue.take();
  CHECK(next.line == std::string(10, 'z'));
  CHECK(next.dropped == 0);
  queue.done();
}

TEST_CASE("a control item is never dropped and one waiting covers many requests") {
  LineQueue queue;
  for (std::size_t i = 0; i < LineQueue::max_lines; ++i) REQUIRE(queue.push("line"));
  queue.push_control();  // a full queue still takes it
  queue.push_control();  // coalesced with the first
  std::size_t lines = 0;
  std::size_t controls = 0;
  for (std::size_t i = 0; i < LineQueue::max_lines + 1; ++i) {
    LineQueue::Item item = queue.take();
    (item.control ? controls : lines) += 1;
    queue.done();
  }
  CHECK(lines == LineQueue::max_lines);
  CHECK(controls == 1);
  queue.push_control();  // none waiting any more: queued again
  CHECK(queue.take().control);
  queue.done();
}

TEST_CASE("flush waits until the writer finished the item in its hands") {
  LineQueue queue;
  std::atomic<int> written{0};
  std::thread writer([&] {
    for (int i = 0; i < 3; ++i) {
      LineQueue::Item item = queue.take();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      written.fetch_add(1);
      queue.done();
    }
  });
  queue.push("a");
  queue.push("b");
  queue.push("c");
  queue.flush(std::chrono::seconds(10));
  CHECK(written.load() == 3);
  writer.join();
}
