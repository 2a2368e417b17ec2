// SafetensorsFile against small files written here: one valid file with every supported dtype,
// then one file per kind of malformed input, each checked for a message that names the file,
// the tensor and what was expected.
#include "runtime/safetensors.h"

#include <cmath>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/dtype.h"
#include "tests/support/files.h"

namespace {

using moe::DType;
using moe::runtime::SafetensorsFile;
using namespace moe::test;  // tests/support/files.h
using nlohmann::json;

std::vector<float> widen(const moe::runtime::TensorView& t) {
  std::vector<float> out(size_t(t.numel()));
  moe::convert_to_f32(t.data, t.dtype, out.size(), out.data());
  return out;
}

TEST(Safetensors, RoundTripsF32F16Bf16AndMetadata) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  const std::vector<float> f32 = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, 65504.0f};
  // 1.0, smallest subnormal 2^-24, -2.0, largest finite 65504.
  const std::vector<uint16_t> f16 = {0x3c00, 0x0001, 0xc000, 0x7bff};
  // 1.0, -1.0, 3.140625, 0.
  const std::vector<uint16_t> bf16 = {0x3f80, 0xbf80, 0x4049, 0x0000};
  write_safetensors(path,
                    {{"a", "F32", {2, 3}, bytes_of(f32)},
                     {"b", "F16", {4}, bytes_of(f16)},
                     {"c", "BF16", {2, 2}, bytes_of(bf16)},
                     {"empty", "F32", {0, 4}, {}},
                     {"scalar", "F32", {}, bytes_of(std::vector<float>{7.0f})}},
                    {{"format", "pt"}, {"note", "tiny"}});

  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.path(), path);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"a", "b", "c", "empty", "scalar"}));
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"note", "tiny"}}));
  EXPECT_TRUE(f.contains("a"));
  EXPECT_FALSE(f.contains("__metadata__"));

  const auto a = f.get("a");
  EXPECT_EQ(a.name, "a");
  EXPECT_EQ(a.dtype, DType::kF32);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.shape_str(), "[2, 3]");
  EXPECT_EQ(a.numel(), 6);
  EXPECT_EQ(a.nbytes, 24u);
  EXPECT_EQ(widen(a), f32);

  const auto b = f.get("b");
  EXPECT_EQ(b.dtype, DType::kF16);
  EXPECT_EQ(b.nbytes, 8u);
  EXPECT_EQ(widen(b), (std::vector<float>{1.0f, std::ldexp(1.0f, -24), -2.0f, 65504.0f}));

  const auto c = f.get("c");
  EXPECT_EQ(c.dtype, DType::kBF16);
  EXPECT_EQ(c.shape_str(), "[2, 2]");
  EXPECT_EQ(widen(c), (std::vector<float>{1.0f, -1.0f, 3.140625f, 0.0f}));

  const auto empty = f.get("empty");
  EXPECT_EQ(empty.numel(), 0);
  EXPECT_EQ(empty.nbytes, 0u);
  EXPECT_EQ(empty.shape_str(), "[0, 4]");

  const auto scalar = f.get("scalar");
  EXPECT_EQ(scalar.numel(), 1);
  EXPECT_EQ(scalar.shape_str(), "[]");
  EXPECT_EQ(widen(scalar), std::vector<float>{7.0f});
}

TEST(Safetensors, HeaderWithNoTensorsIsLegal) {
  TempDir dir;
  const std::string path = dir.file("empty.safetensors");
  write_raw(path, "{}", {});
  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_TRUE(f.names().empty());
  EXPECT_TRUE(f.metadata().empty());
}

TEST(Safetensors, MoveKeepsTheMappingAlive) {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  write_safetensors(path, {{"w", "F32", {2}, bytes_of(std::vector<float>{4.0f, 5.0f})}});
  SafetensorsFile moved = SafetensorsFile::open(path);
  SafetensorsFile f(std::move(moved));
  EXPECT_EQ(widen(f.get("w")), (std::vector<float>{4.0f, 5.0f}));
  SafetensorsFile g = SafetensorsFile::open(path);
  g = std::move(f);
  EXPECT_EQ(widen(g.get("w")), (std::vector<float>{4.0f, 5.0f}));
}

TEST(Safetensors, MissingFile) {
  TempDir dir;
  const std::string path = dir.file("nope.safetensors");
  EXPECT_TRUE(mentions(input_error([&] { SafetensorsFile::open(path); }), {path}));
}

TEST(Safetensors, FileShorterThanHeaderLength) {
  TempDir dir;
  const std::string path = dir.file("short.safetensors");
  write_text(path, "abcd");
  EXPECT_TRUE(
      mentions(input_error([&] { SafetensorsFile::open(path); }), {path, "4 bytes", "at least 8"}));
}

TEST(Safetensors, HeaderLengthPastEndOfFile) {
  TempDir dir;
  const std::string path = dir.file("trunc.safetensors");
  {
    std::ofstream out(path, std::ios::binary);
    const uint64_t n = 1000;
    out.write(reinterpret_cast<const char*>(&n), 8);  // the test host is little-endian
    out << "{\"a\":1}";
  }
  EXPECT_TRUE(mentions(input_error([&] { SafetensorsFile::open(path); }),
                       {path, "header length 1000", "15 bytes"}));
}

TEST(Safetensors, HeaderNotJson) {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  write_raw(path, "{\"w\": {\"dtype\": ", {});
  EXPECT_TRUE(
      mentions(input_error([&] { SafetensorsFile::open(path); }), {path, "not valid JSON"}));
}

// The JSON parser stops at a NUL byte; what follows it in the header must not be ignored.
TEST(Safetensors, HeaderWithANulByte) {
  TempDir dir;
  const std::string path = dir.file("nul.safetensors");
  write_raw(path, std::string("{}") + '\0' + "garbage", {});
  EXPECT_TRUE(mentions(input_error([&] { SafetensorsFile::open(path); }),
                       {path, "NUL byte at offset 10"}));
}

TEST(Safetensors, HeaderNotObject) {
  TempDir dir;
  const std::string path = dir.file("array.safetensors");
  write_raw(path, "[1, 2]", {});
  EXPECT_TRUE(
      mentions(input_error([&] { SafetensorsFile::open(path); }), {path, "array", "object"}));
}

// JSON keeps the last of two equal keys: the header must not load one tensor of two silently.
TEST(Safetensors, TensorNamedTwice) {
  TempDir dir;
  const std::string path = dir.file("twice.safetensors");
  const std::string entry = R"({"dtype": "F32", "shape": [1], "data_offsets": [0, 4]})";
  write_raw(path, "{\"w\": " + entry + ", \"w\": " + entry + "}", {0, 0, 0, 0});
  EXPECT_TRUE(mentions(input_error([&] { SafetensorsFile::open(path); }), {path, "'w' twice"}));
  // The same name inside an entry's own fields is another matter (and not a tensor).
  write_raw(path, "{\"a\": " + entry + ", \"b\": {\"dtype\": \"F32\", \"shape\": [1], "
                  "\"data_offsets\": [4, 8]}}", {0, 0, 0, 0, 0, 0, 0, 0});
  EXPECT_NO_THROW(SafetensorsFile::open(path));
}

// The JSON parser refuses a number past a double's range with an exception of its own, not a
// parse error (found by tests/fuzz/fuzz_safetensors.cpp): it must end as an InputError too.
TEST(Safetensors, NumberPastADoublesRange) {
  TempDir dir;
  const std::string path = dir.file("big.safetensors");
  for (const char* big : {"1e400", "-4e444"}) {
    write_raw(path,
              std::string("{\"w\": {\"dtype\": \"F32\", \"shape\": [") + big +
                  "], \"data_offsets\": [0, 0]}}",
              {});
    EXPECT_TRUE(mentions(input_error([&] { SafetensorsFile::open(path); }),
                         {path, "header", big, "out of range", "expected"}));
  }
}

TEST(Safetensors, EntryMissingField) {
  TempDir dir;
  const std::string path = dir.file("f.safetensors");
  for (const char* missing : {"dtype", "shape", "data_offsets"}) {
    json entry = {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {0, 4}}};
    entry.erase(missing);
    write_raw(path, json{{"layer.w", entry}}.dump(), {0, 0, 0, 0});
    EXPECT_TRUE(mentions(input_error([&] { SafetensorsFile::open(path); }),
                         {path, "'layer.w'", std::string("'") + missing + "'"}));
  }
}

TEST(Safetensors, EntryWithWrongJsonTypes) {
  TempDir dir;
  const std::string path = dir.file("t.safetensors");
  const std::vector<std::pair<json, std::string>> cases = {
      {{{"dtype", 32}, {"shape", {1}}, {"data_offsets", {0, 4}}}, "'dtype'"},
      {{{"dtype", "F32"}, {"shape", "1"}, {"data_offsets", {0, 4}}}, "'shape'"},
      {{{"dtype", "F32"}, {"shape", {1.5}}, {"data_offsets", {0, 4}}}, "dim 0"},
      {{{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {0}}}, "'data_offsets'"},
      {{{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {-4, 0}}}, "'data_offsets'"},
      {{{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", "0-4"}}, "'data_offsets'"},
      {json::array({1, 2}), "expected an object"},
  };
  for (const auto& [entry, what] : cases) {
    write_raw(path, json{{"w", entry}}.dump(), {0, 0, 0, 0});
    EXPECT_TRUE(mentions(input_error([&] { SafetensorsFile::open(path); }), {path, "'w'", what}))
        << entry.dump();
  }
}

TEST(Safetensors, MetadataMustBeStringMap) {
  TempDir dir;
  const std::string path = dir.file("meta.safetensors");
  write_raw(path, json{{"__metadata__", {{"format", 1}}}}.dump(), {});
  EXPECT_TRUE(mentions(input_error([&] { SafetensorsFile::open(path); }),
                       {path, "__metadata__", "'format'", "string"}));
}

TEST(Safetensors, UnknownDtype) {
  TempDir dir;
  const std::string path = dir.file("dt.safetensors");
  for (const char* dtype : {"F64", "I8"}) {
    write_raw(
        path,
        json{{"experts.w1", {{"dtype", dtype}, {"shape", {1}}, {"data_offsets", {0, 8}}}}}.dump(),
        std::vector<uint8_t>(8));
    EXPECT_TRUE(mentions(input_error([&] { SafetensorsFile::open(path); }),
                         {path, "'experts.w1'", dtype, "F32, F16, BF16"}));
  }
}

TEST(Safetensors, NegativeDim) {
  TempDir dir;
  const std::string path = dir.file("neg.safetensors");
  write_raw(path,
            json{{"w", {{"dtype", "F32"}, {"shape", {-1, 4}}, {"data_offsets", {0, 0}}}}}.dump(),
            {});
  EXPECT_TRUE(mentions(input_error([&] { SafetensorsFile::open(path); }),
                       {path, "'w'", "-1", "non-negative"}));
}

TEST(Safetensors, ShapeTimesDtypeNotByteRange) {
  TempDir dir;
  const std::string path = dir.file("size.safetensors");
  write_raw(
      path,
      json{{"attn.q", {{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {0, 20}}}}}.dump(),
      std::vector<uint8_t>(24));
  EXPECT_TRUE(mentions(input_error([&] { SafetensorsFile::open(path); }),
                       {path, "'attn.q'", "[2, 3]", "24 bytes", "span 20"}));
}

TEST(Safetensors, HugeShapeDoesNotWrapAround) {
  TempDir dir;
  const std::string path = dir.file("huge.safetensors");
  // 2^62 * 2^2 elements of 4 bytes wraps a u64 to 0, which would match an empty range.
  write_raw(
      path,
      json{{"w", {{"dtype", "F32"}, {"shape", {uint64_t(1) << 62, 4}}, {"data_offsets", {0, 0}}}}}
          .dump(),
      {});
  EXPECT_TRUE(
      mentions(input_error([&] { SafetensorsFile::open(path); }), {path, "'w'", "more than 2^64"}));
}

TEST(Safetensors, OffsetsEndBeforeBegin) {
  TempDir dir;
  const std::string path = dir.file("rev.safetensors");
  write_raw(path, json{{"w", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {8, 4}}}}}.dump(),
            std::vector<uint8_t>(8));
  EXPECT_TRUE(mentions(input_error([&] { SafetensorsFile::open(path); }),
                       {path, "'w'", "[8, 4]", "begin <= end"}));
}

TEST(Safetensors, OffsetsOutsideDataSection) {
  TempDir dir;
  const std::string path = dir.file("out.safetensors");
  write_raw(path, json{{"w", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {8, 16}}}}}.dump(),
            std::vector<uint8_t>(12));
  EXPECT_TRUE(mentions(input_error([&] { SafetensorsFile::open(path); }),
                       {path, "'w'", "[8, 16]", "data section", "12 bytes"}));
}

TEST(Safetensors, OverlappingOffsets) {
  TempDir dir;
  const std::string path = dir.file("overlap.safetensors");
  const json header = {
      {"first", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}},
      {"second", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {4, 12}}}},
  };
  write_raw(path, header.dump(), std::vector<uint8_t>(12));
  EXPECT_TRUE(mentions(input_error([&] { SafetensorsFile::open(path); }),
                       {path, "'first'", "'second'", "overlap"}));
}

TEST(Safetensors, GetMissingTensor) {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  write_safetensors(path, {{"w", "F32", {1}, bytes_of(std::vector<float>{1.0f})}});
  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_TRUE(
      mentions(input_error([&] { f.get("model.norm.weight"); }), {path, "'model.norm.weight'"}));
}

}  // namespace
