// The CSPRNG helpers of random.hpp: UUID v4 shape.
#include "../../test_support.hpp"

using namespace car;

TEST_SUITE("random") {
  TEST_CASE("uuid_v4 shape") {
    auto id = uuid_v4();
    REQUIRE(id.size() == 36);
    CHECK(id[14] == '4');
    CHECK(std::string("89ab").find(id[19]) != std::string::npos);
    CHECK(uuid_v4() != id);
  }
}
