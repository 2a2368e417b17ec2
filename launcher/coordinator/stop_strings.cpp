#include "launcher/coordinator/stop_strings.h"

#include <algorithm>

namespace moe::coordinator {

std::optional<size_t> find_stop(const std::string& text, const std::vector<std::string>& stop) {
  std::optional<size_t> at;
  for (const auto& s : stop)
    if (const size_t p = text.find(s); p != std::string::npos && (!at || p < *at)) at = p;
  return at;
}

size_t stop_safe_length(const std::string& text, const std::vector<std::string>& stop) {
  size_t hold = 0;
  for (const auto& s : stop)
    for (size_t k = std::min(s.empty() ? 0 : s.size() - 1, text.size()); k > hold; --k)
      if (text.compare(text.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
  return text.size() - hold;
}

}  // namespace moe::coordinator
