// safetensors reader/writer, the import name map and ckpt inspect/export (safetensors and HDF5)
// and import (issue 5 tools). The fixture
// tests/fixtures/tiny_ps3.safetensors comes from an independent writer (make_safetensors.py);
// its values follow a closed form recomputed here. Runs at 1 rank (import needs a world of one)
// and at 2 ranks (only the world-size error).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>

#include <hdf5.h>

#include "parallel/checkpoint/convert.h"
#include "parallel/checkpoint/safetensors.h"
#include "proto/checkpoint.pb.h"
#include "tests/parallel/mpi_main.h"

namespace hd::parallel::ckpt {
namespace {
namespace fs = std::filesystem;
using testing::world;

const fs::path kFixture = fs::path(HD_FIXTURE_DIR) / "tiny_ps3.safetensors";

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

fs::path scratch(const std::string& test) {
  const char* base = std::getenv("HD_CKPT_SCRATCH");
  fs::path dir = fs::path(base ? base : fs::temp_directory_path().string()) / "hd_safetensors" /
                 (test + "_r" + std::to_string(world().rank()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

float fixture_value(int64_t i, const std::string& dtype) {
  return float(i % 17) * 0.25f - 2.0f + (dtype == "BF16" ? 0.5f : 0.0f);
}

// [8-byte length][header][data] with whatever header and data a test wants.
fs::path craft(const fs::path& dir, const std::string& header, size_t data_bytes,
               int64_t claimed_len = -1) {
  const fs::path p = dir / "crafted.safetensors";
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  const uint64_t len = claimed_len < 0 ? header.size() : uint64_t(claimed_len);
  for (int i = 0; i < 8; ++i) out.put(char(uint8_t(len >> (8 * i))));
  out << header << std::string(data_bytes, '\0');
  return p;
}

// A world-size-1 model with a matrix, a nested vector, a 0-d scalar and one optimizer entry,
// filled with awkward bits (subnormals, -0, non-round values) so any conversion shows.
std::vector<ShardRef> awkward_model_shards() {
  std::vector<ShardRef> shards;
  for (auto [name, shape] :
       std::vector<std::pair<std::string, Shape>>{{"embed.weight", {5, 3}},
                                                  {"blocks.0.norm.bias", {3}},
                                                  {"scale", {}},
                                                  {"optim.exp_avg.embed.weight", {5, 3}}}) {
    ShardRef ref{make_shard_info(name, shape, 0, 1), {}};
    ref.shard = Tensor::empty({ref.info.padded_length});
    for (int64_t i = 0; i < ref.info.padded_length; ++i)
      ref.shard.data<float>()[i] = i % 3 == 0   ? 1e-40f * float(i + 1)
                                   : i % 3 == 1 ? -0.0f
                                                : 3.14159f * float(i);
    shards.push_back(ref);
  }
  return shards;
}

TEST(Safetensors, ReadsFixtureFromIndependentWriter) {
  safetensors::Reader r(kFixture);
  ASSERT_EQ(r.entries().size(), 4u);
  EXPECT_EQ(r.metadata().at("format"), "pt");
  EXPECT_EQ(r.entry("vision_model.trunk.blocks.0.attn.qkv.weight").dtype, "BF16");
  EXPECT_EQ(r.entry("vision_model.trunk.patch_embed.proj.weight").shape, (Shape{4, 3, 2, 2}));
  for (const auto& e : r.entries()) {
    const Tensor t = r.read_f32(e.name);
    ASSERT_EQ(t.shape(), e.shape) << e.name;
    for (int64_t i = 0; i < t.numel(); ++i)
      ASSERT_EQ(t.data<float>()[i], fixture_value(i, e.dtype)) << e.name << "[" << i << "]";
  }
}

TEST(Safetensors, ImportLoadsOnAnyWorldSize) {
  if (world().world_size() != 1) GTEST_SKIP() << "import runs as a single process";
  const fs::path dir = scratch("import");
  ImportOptions o;
  o.strip_prefix = "vision_model.";
  o.add_prefix = "ps3.";
  const fs::path step = import_safetensors(kFixture, dir, world(), o);
  EXPECT_EQ(step, step_dir(dir, 0));
  const proto::Manifest man = read_manifest(step);
  EXPECT_FALSE(man.has_trainer_state());
  safetensors::Reader r(kFixture);
  // Every rank of 1, 2 and 3-rank layouts reads its rows (load_checkpoint is not collective, so
  // each layout's ranks are emulated here one after another).
  for (int m = 1; m <= 3; ++m)
    for (int rank = 0; rank < m; ++rank)
      for (const auto& e : r.entries()) {
        const std::string name = "ps3." + e.name.substr(std::string("vision_model.").size());
        ShardRef ref{make_shard_info(name, e.shape, rank, m), {}};
        ref.shard = Tensor::empty({ref.info.padded_length});
        LoadOptions lo;
        lo.allow_unexpected = true;
        load_checkpoint(step, {ref}, lo);
        for (int64_t i = 0; i < ref.info.length; ++i)
          ASSERT_EQ(ref.shard.data<float>()[i], fixture_value(ref.info.offset + i, e.dtype))
              << name << " rank " << rank << " of " << m;
      }
  o.strip_prefix = "text_model.";
  const std::string msg = error_of([&] { import_safetensors(kFixture, dir / "b", world(), o); });
  EXPECT_NE(msg.find("does not start with the prefix 'text_model.' to strip"), std::string::npos)
      << msg;
}

TEST(Safetensors, ExportImportRoundTripIsBitExact) {
  if (world().world_size() != 1) GTEST_SKIP() << "import runs as a single process";
  const fs::path dir = scratch("roundtrip");
  const std::vector<ShardRef> shards = awkward_model_shards();
  const fs::path step = save_checkpoint(dir / "run", 12, shards, world());
  EXPECT_EQ(export_safetensors(step, dir / "model.safetensors", {"m.", false}), 3);
  EXPECT_EQ(export_safetensors(step, dir / "all.safetensors", {"", true}), 4);
  safetensors::Reader model(dir / "model.safetensors"), all(dir / "all.safetensors");
  EXPECT_EQ(model.metadata().at("hdtrain_step"), "12");
  EXPECT_EQ(model.entry("m.scale").shape, Shape{});
  EXPECT_EQ(error_of([&] { model.entry("m.optim.exp_avg.embed.weight"); }),
            "safetensors " + (dir / "model.safetensors").string() +
                ": no tensor named 'm.optim.exp_avg.embed.weight'");
  const fs::path back = import_safetensors(dir / "all.safetensors", dir / "back", world());
  for (const ShardRef& s : shards) {
    const Tensor t = all.read_f32(s.info.name);
    ShardRef again{s.info, Tensor::empty({s.info.padded_length})};
    load_checkpoint(back, {again}, {false, true});
    for (int64_t i = 0; i < s.info.length; ++i) {
      ASSERT_EQ(std::bit_cast<uint32_t>(t.data<float>()[i]),
                std::bit_cast<uint32_t>(s.shard.data<float>()[i]))
          << s.info.name;
      ASSERT_EQ(std::bit_cast<uint32_t>(again.shard.data<float>()[i]),
                std::bit_cast<uint32_t>(s.shard.data<float>()[i]))
          << s.info.name;
    }
  }
  const std::string text = describe_checkpoint(step);
  EXPECT_NE(text.find("step 12, saved on 1 rank(s), format 1"), std::string::npos) << text;
  EXPECT_NE(text.find("embed.weight  f32 [5, 3]  1 chunk(s)  60 bytes"), std::string::npos) << text;
  EXPECT_NE(text.find("trainer state: none"), std::string::npos) << text;
  EXPECT_EQ(verify_checkpoint(step), (15 + 3 + 1 + 15) * 4);
}

TEST(NameMap, ExactPrefixDropFirstMatchWins) {
  const NameMap map = NameMap::parse(
      "# HF -> ours\n"
      "\n"
      "vision_model.trunk.norm.weight   trunk.final_norm.weight  # exact, before the prefix\n"
      "vision_model.trunk.*             trunk.*\n"
      "vision_model.trunk.blocks.*      never.*   # shadowed by the rule above\n"
      "logit_scale                      -\n"
      "optimizer.*                      -\n",
      "map.txt");
  ASSERT_EQ(map.rules().size(), 5u);
  EXPECT_EQ(map.rules()[1].where, "map.txt:4");
  EXPECT_EQ(map.apply("vision_model.trunk.norm.weight"), "trunk.final_norm.weight");
  EXPECT_EQ(map.apply("vision_model.trunk.blocks.0.attn.qkv.weight"),
            "trunk.blocks.0.attn.qkv.weight");
  EXPECT_EQ(map.apply("logit_scale"), std::nullopt);
  EXPECT_EQ(map.apply("optimizer.state.3"), std::nullopt);
  EXPECT_EQ(map.apply("logit_scale_2"), "logit_scale_2");  // exact rules match whole names
  EXPECT_EQ(map.apply("text.proj"), "text.proj");          // no rule: kept
  std::vector<NameMap::Rule> unused;
  const auto out = map.apply_all({"vision_model.trunk.pos", "logit_scale", "other"}, &unused);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0], "trunk.pos");
  EXPECT_EQ(out[1], std::nullopt);
  EXPECT_EQ(out[2], "other");
  ASSERT_EQ(unused.size(), 3u);  // the exact norm rule, the shadowed rule, optimizer.*
  EXPECT_EQ(unused[0].where, "map.txt:3");
  EXPECT_EQ(unused[1].where, "map.txt:5");
  EXPECT_EQ(unused[2].where, "map.txt:7");
}

TEST(NameMap, EveryErrorNamesItsLineOrNames) {
  auto expect_has = [](const std::string& msg, const std::string& want) {
    EXPECT_NE(msg.find(want), std::string::npos) << "'" << msg << "' lacks '" << want << "'";
  };
  expect_has(error_of([] { NameMap::parse("a b\na b c\n", "t.map"); }),
             "t.map:2: expected 'SOURCE TARGET' (or 'SOURCE -' to drop), found 3 field(s)");
  expect_has(error_of([] { NameMap::parse("lonely\n", "t.map"); }), "t.map:1: expected");
  expect_has(error_of([] { NameMap::parse("a.*.b c\n", "t.map"); }),
             "t.map:1: '*' is only allowed at the end of the source (a prefix rule), in 'a.*.b'");
  expect_has(error_of([] { NameMap::parse("a.* c\n", "t.map"); }),
             "t.map:1: a prefix rule maps 'A*' to 'B*' and an exact rule 'A' to 'B'; got 'a.*' -> "
             "'c'");
  expect_has(error_of([] { NameMap::parse("a c*\n", "t.map"); }), "got 'a' -> 'c*'");
  const NameMap clash = NameMap::parse("x.* y.*\n", "t.map");
  expect_has(error_of([&] {
               clash.apply_all({"x.w", "y.w"});
             }),
             "name map: 'x.w' and 'y.w' both map to 'y.w'");
  expect_has(error_of([] { NameMap::load("/no/such/file.map"); }),
             "name map /no/such/file.map: cannot open the file");
}

TEST(Safetensors, ImportThroughANameMap) {
  if (world().world_size() != 1) GTEST_SKIP() << "import runs as a single process";
  const fs::path dir = scratch("import_map");
  {
    std::ofstream(dir / "ps3.map") << "vision_model.trunk.norm.weight  -\n"
                                      "vision_model.trunk.blocks.0.attn.*  trunk.blocks.0.mha.*\n"
                                      "vision_model.*  *\n"
                                      "text_model.*  text.*   # not in this file: a warning\n";
  }
  ImportOptions o;
  o.name_map = NameMap::load(dir / "ps3.map");
  o.add_prefix = "ps3.";
  const fs::path step = import_safetensors(kFixture, dir / "run", world(), o);
  const proto::Manifest man = read_manifest(step);
  std::vector<std::string> names;
  for (const auto& t : man.tensors()) names.push_back(t.name());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"ps3.trunk.blocks.0.mha.qkv.bias",
                                             "ps3.trunk.blocks.0.mha.qkv.weight",
                                             "ps3.trunk.patch_embed.proj.weight"}));
  safetensors::Reader r(kFixture);
  const auto& e = r.entry("vision_model.trunk.blocks.0.attn.qkv.weight");
  ShardRef ref{make_shard_info("ps3.trunk.blocks.0.mha.qkv.weight", e.shape, 0, 1), {}};
  ref.shard = Tensor::empty({ref.info.padded_length});
  load_checkpoint(step, {ref}, {false, true});
  for (int64_t i = 0; i < ref.info.length; ++i)
    ASSERT_EQ(ref.shard.data<float>()[i], fixture_value(i, e.dtype)) << i;
  // Mapping then stripping: a kept name must still carry the prefix to strip, and the message
  // says where the name came from.
  ImportOptions strip;
  strip.name_map = NameMap::parse("vision_model.trunk.norm.weight head.norm.weight\n", "m");
  strip.strip_prefix = "vision_model.";
  EXPECT_NE(error_of([&] { import_safetensors(kFixture, dir / "b", world(), strip); })
                .find("tensor 'head.norm.weight' in " + kFixture.string() +
                      " (mapped from 'vision_model.trunk.norm.weight') does not start with the "
                      "prefix 'vision_model.' to strip"),
            std::string::npos);
}

// Reads a dataset of an exported HDF5 file as f32 with its dims (the test's own reader, through
// the HDF5 C API, independent of the checkpoint code).
std::pair<std::vector<hsize_t>, std::vector<float>> read_h5(const fs::path& file,
                                                            const std::string& path) {
  const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  EXPECT_GE(f, 0) << file;
  const hid_t ds = H5Dopen2(f, path.c_str(), H5P_DEFAULT);
  EXPECT_GE(ds, 0) << path;
  const hid_t space = H5Dget_space(ds);
  const int rank = H5Sget_simple_extent_ndims(space);
  std::vector<hsize_t> dims(size_t(std::max(rank, 0)));
  if (rank > 0) H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  const hssize_t n = H5Sget_simple_extent_npoints(space);
  std::vector<float> values(static_cast<size_t>(n));
  EXPECT_GE(H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()), 0);
  H5Sclose(space);
  H5Dclose(ds);
  H5Fclose(f);
  return {dims, values};
}

TEST(Safetensors, ExportToHdf5IsBitExactWithAGroupPerModule) {
  if (world().world_size() != 1) GTEST_SKIP() << "one writer is enough";
  const fs::path dir = scratch("export_h5");
  const std::vector<ShardRef> shards = awkward_model_shards();
  const fs::path step = save_checkpoint(dir / "run", 7, shards, world());
  EXPECT_EQ(export_hdf5(step, dir / "model.h5", {"m.", false}), 3);
  EXPECT_EQ(export_hdf5(step, dir / "all.h5", {"", true}), 4);
  EXPECT_FALSE(fs::exists(dir / "model.h5.tmp"));
  for (const ShardRef& s : shards) {
    const bool optim = s.info.name.rfind("optim.", 0) == 0;
    std::string path = "/" + s.info.name;
    std::replace(path.begin(), path.end(), '.', '/');
    for (const auto& [file, p] :
         {std::pair{dir / "all.h5", path}, std::pair{dir / "model.h5", "/m" + path}}) {
      if (optim && file.filename() == "model.h5") continue;
      const auto [dims, values] = read_h5(file, p);
      EXPECT_EQ(Shape(dims.begin(), dims.end()), s.info.global_shape) << p;
      ASSERT_EQ(int64_t(values.size()), s.info.length) << p;
      for (int64_t i = 0; i < s.info.length; ++i)
        ASSERT_EQ(std::bit_cast<uint32_t>(values[size_t(i)]),
                  std::bit_cast<uint32_t>(s.shard.data<float>()[i]))
            << p << "[" << i << "]";
    }
  }
  const hid_t f = H5Fopen((dir / "model.h5").c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  EXPECT_EQ(H5Lexists(f, "/m/optim", H5P_DEFAULT), 0) << "optimizer state without the flag";
  int64_t step_attr = -1;
  const hid_t a = H5Aopen(f, "hdtrain_step", H5P_DEFAULT);
  ASSERT_GE(a, 0);
  H5Aread(a, H5T_NATIVE_INT64, &step_attr);
  H5Aclose(a);
  H5Fclose(f);
  EXPECT_EQ(step_attr, 7);
}

TEST(Safetensors, EveryReaderErrorIsNamed) {
  const fs::path dir = scratch("errors");
  auto msg_of = [&](const std::string& header, size_t data, int64_t claimed = -1) {
    const fs::path p = craft(dir, header, data, claimed);
    return error_of([&] { safetensors::Reader r(p); });
  };
  auto expect_has = [](const std::string& msg, const std::string& want) {
    EXPECT_NE(msg.find(want), std::string::npos) << "'" << msg << "' lacks '" << want << "'";
  };
  {
    std::ofstream(dir / "short.safetensors") << "abc";
    expect_has(error_of([&] { safetensors::Reader r(dir / "short.safetensors"); }),
               "file is 3 bytes, too short for the 8-byte header length");
  }
  expect_has(error_of([&] { safetensors::Reader r(dir / "absent.safetensors"); }),
             "absent.safetensors: cannot open the file");
  expect_has(msg_of("{}", 0, 1000), "header length 1000 runs past the end of the file (10 bytes)");
  expect_has(msg_of("{nope", 0), "header is not valid JSON");
  expect_has(msg_of("[1, 2]", 0), "header is not a JSON object");
  expect_has(msg_of(R"({"__metadata__": 3})", 0), "__metadata__ is not an object");
  expect_has(msg_of(R"({"__metadata__": {"a": 1}})", 0),
             "__metadata__ value of 'a' is not a string");
  expect_has(msg_of(R"({"w": {"dtype": "F32"}})", 0),
             "tensor 'w': needs dtype (string), shape (array) and data_offsets");
  expect_has(msg_of(R"({"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}})", 8),
             "tensor 'w': unknown dtype 'Q4'");
  expect_has(msg_of(R"({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", 8),
             "shape entries must be non-negative integers");
  expect_has(msg_of(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, -8]}})", 8),
             "data_offsets must be non-negative integers");
  expect_has(msg_of(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8),
             "tensor 'w': data_offsets [0, 16] out of range: the data section has 8 bytes");
  expect_has(msg_of(R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8),
             "data_offsets [0, 8] hold 8 bytes but F32 [3] needs 12");
  expect_has(msg_of(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                    12),
             "tensors 'a' [0, 8] and 'b' [4, 12] overlap");
  const fs::path ints =
      craft(dir, R"({"i": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}})", 8);
  safetensors::Reader r(ints);
  expect_has(error_of([&] { r.read_f32("i"); }), "tensor 'i' is I64, which cannot be read as f32");
  expect_has(error_of([&] {
               safetensors::write(dir / "x.safetensors",
                                  {{"a", Tensor::empty({1})}, {"a", Tensor::empty({1})}});
             }),
             "duplicate or reserved tensor name 'a'");
  expect_has(error_of([&] {
               safetensors::write(dir / "x.safetensors", {{"i", Tensor::empty({1}, DType::i64)}});
             }),
             "dtype i64 is not supported (f32, bf16, f16, f64)");
  expect_has(error_of([&] { safetensors::write(dir / "no/such/dir/x.safetensors", {}); }),
             "safetensors write: cannot create");
  if (world().world_size() > 1)
    expect_has(error_of([&] { import_safetensors(kFixture, dir, world()); }),
               "ckpt import: run it as a single process (world size 1), got ");
}

}  // namespace
}  // namespace hd::parallel::ckpt
