// libFuzzer harness: the YAML run config (RunConfig::from_yaml_file, validate(), and for an
// explicit placement the map checked against a 2-rank world as a rank does), and the same
// bytes read as a placement file (moe-plan's YAML: placement_map and placement_shares, which
// --placement-file or placement_file: names).
#include <cstddef>
#include <cstdint>
#include <filesystem>

#include "common/error.h"
#include "runtime/placement.h"
#include "runtime/placement_file.h"
#include "runtime/run_config.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path path = moe::fuzz::scratch_dir() / "run.yaml";
  moe::fuzz::write_file(path, data, size);
  try {
    const auto c = moe::runtime::RunConfig::from_yaml_file(path.string());
    c.validate();
    (void)c.resolved_dtype();
    moe::runtime::Placement::parse_kind(c.placement);
    if (c.placement == "explicit") moe::runtime::Placement::from_map(c.placement_map, 2);
  } catch (const moe::InputError&) {
  }
  try {
    const auto t = moe::runtime::read_placement_yaml(path.string());
    moe::runtime::Placement::from_map(t.map, 2);
  } catch (const moe::InputError&) {
  }
  return 0;
}
