// Stop strings (launcher/coordinator/stop_strings), as Generate and the OpenAI API apply them.
#include <gtest/gtest.h>

#include "launcher/coordinator/stop_strings.h"

namespace moe::coordinator {
namespace {

TEST(StopStrings, TheEarliestOfThemIsFound) {
  EXPECT_EQ(find_stop("hello world. bye", {"bye", "."}), 11u);
  EXPECT_EQ(find_stop("hello world. bye", {"."}), 11u);
  EXPECT_EQ(find_stop("hello", {"world"}), std::nullopt);
  EXPECT_EQ(find_stop("", {"x"}), std::nullopt);
  EXPECT_EQ(find_stop("abc", {}), std::nullopt);
}

TEST(StopStrings, TheLongestEndThatBeginsOneIsHeldBack) {
  // "wor" may become "world": 3 bytes wait; "o" alone may begin "oops" but "wor" is longer.
  EXPECT_EQ(stop_safe_length("hello wor", {"world", "oops"}), 6u);
  EXPECT_EQ(stop_safe_length("hello wo", {"world"}), 6u);
  EXPECT_EQ(stop_safe_length("hello", {"world"}), 5u);   // nothing begins it
  EXPECT_EQ(stop_safe_length("ab", {"abcdef"}), 0u);     // all of it may be the start
  EXPECT_EQ(stop_safe_length("xyz", {"z"}), 3u);         // a whole stop string is find_stop's
  EXPECT_EQ(stop_safe_length("", {"abc"}), 0u);
  EXPECT_EQ(stop_safe_length("abc", {}), 3u);
}

}  // namespace
}  // namespace moe::coordinator
