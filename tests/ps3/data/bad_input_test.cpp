// Bad input is skipped, counted and logged by default, and an error naming the file with strict.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "autograd/error.h"
#include "ps3/data/loader.h"
#include "ps3/data/synth.h"
#include "ps3/data/tar.h"
#include "tests/ps3/data/test_util.h"

namespace hd::data {
namespace {
namespace fs = std::filesystem;
using testing::temp_dir;

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string make_folder(int64_t n, bool tar = false) {
  SynthOptions o;
  o.out = temp_dir(tar ? "tar" : "folder").string();
  o.images = n, o.eval_images = 0, o.resolution = 140, o.seed = 9, o.tar = tar, o.shard_size = 4;
  synth_dataset(o);
  return o.out + "/train";
}

void write_text(const fs::path& p, const std::string& s) {
  std::ofstream(p) << s;
}

TEST(BadInput, RecordProblemsAreSkippedCountedOrStrict) {
  std::string dir = make_folder(6);
  write_text(fs::path(dir) / "00000001.json", "{\"text\": [\"a\"], \"box\": [[1,2,3");  // malformed
  write_text(fs::path(dir) / "00000002.json", "{\"text\": [\"a\"], \"global_text\": \"g\"}");
  write_text(fs::path(dir) / "00000003.json",
             "{\"text\": [\"a\", \"b\", \"c\"], \"box\": [[1,2,30,40], [5,5,5,9], [9,9,2,20]]}");
  fs::remove(fs::path(dir) / "00000004.jpg");                   // JSON without image
  write_text(fs::path(dir) / "extra.png", "not really a png");  // image without JSON
  BadInputLog log;
  log.set_quiet(true);
  Dataset ds = open_dataset(dir, log);
  // 0, 3 (one good box of three) and 5 survive.
  ASSERT_EQ(ds.records.size(), 3u);
  EXPECT_EQ(ds.records[1].key, "00000003");
  EXPECT_EQ(ds.records[1].boxes.size(), 1u);
  EXPECT_EQ(log.count(), 6);  // malformed, missing key, empty box, inverted box, 2 missing pairs

  auto strict = [&] {
    BadInputLog s(true);
    open_dataset(dir, s);
  };
  std::string msg = error_of(strict);
  EXPECT_NE(msg.find("00000001.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("malformed JSON"), std::string::npos) << msg;
  fs::remove(fs::path(dir) / "00000001.json");
  msg = error_of(strict);
  EXPECT_NE(msg.find("00000002.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing key \"box\""), std::string::npos) << msg;
  fs::remove(fs::path(dir) / "00000002.json");
  msg = error_of(strict);
  EXPECT_NE(msg.find("00000003.json box 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("empty box"), std::string::npos) << msg;
}

TEST(BadInput, CorruptImagesAndOutsideBoxesAreDroppedFromBatches) {
  std::string dir = make_folder(8);
  auto jpg = read_file(dir + "/00000002.jpg");
  jpg.resize(jpg.size() / 2);
  write_file(dir + "/00000002.jpg", jpg);  // truncated JPEG
  fs::remove(dir + "/00000005.jpg");
  write_file(dir + "/00000005.png", {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 1, 2, 3});
  write_text(fs::path(dir) / "00000006.json",
             "{\"text\": [\"far away\"], \"box\": [[500, 500, 600, 600]], \"global_text\": \"\"}");
  BadInputLog log;
  log.set_quiet(true);
  Dataset ds = open_dataset(dir, log);
  ASSERT_EQ(ds.records.size(), 8u);
  std::vector<int64_t> nb;
  for (const auto& r : ds.records) nb.push_back(int64_t(r.texts.size()));
  std::vector<bool> global;
  for (const auto& r : ds.records) global.push_back(r.texts.empty());
  Sampler sampler(nb, global, 8, 1);  // local captions only (where there are any)
  LoaderOptions o;
  o.image_size = 140, o.low_res = 28, o.selection_res = 56;
  {
    Loader loader(ds, sampler, nullptr, o, log);
    for (int epoch = 0; epoch < 2; ++epoch) {
      Batch b = loader.next();
      EXPECT_EQ(b.batch_size(), 5);
      EXPECT_EQ(b.low_res.size(0), 5);
      for (int64_t id : b.image_ids) EXPECT_TRUE(id != 2 && id != 5 && id != 6);
    }
  }
  // 3 per epoch (logged once each); prefetching may already have met some in a later epoch.
  EXPECT_GE(log.count(), 6);
  BadInputLog strict(true);
  Loader loader(ds, sampler, nullptr, o, strict);
  std::string msg = error_of([&] { loader.next(); });
  EXPECT_TRUE(msg.find("00000002.jpg") != std::string::npos ||
              msg.find("00000005.png") != std::string::npos ||
              msg.find("00000006.json box 0") != std::string::npos)
      << msg;
}

TEST(BadInput, TruncatedShardKeepsEarlierMembers) {
  std::string dir = make_folder(8, true);  // two shards of 4
  std::string shard = dir + "/images_00001.tar";
  auto bytes = read_file(shard);
  std::string err;
  auto members = list_tar(shard, err);
  ASSERT_EQ(members.size(), 4u);
  // Cut inside the third member's data: members 0-1 stay readable.
  bytes.resize(size_t(members[2].offset + 512 + members[2].size / 2));
  write_file(shard, bytes);
  EXPECT_THROW(read_tar_member(shard, members[2]), Error);
  BadInputLog log;
  log.set_quiet(true);
  Dataset ds = open_dataset(dir, log);
  EXPECT_GE(ds.records.size(), 6u);
  EXPECT_LE(ds.records.size(), 7u);
  EXPECT_GE(log.count(), 1);
  // Members wholly before the cut read fine; the cut one is an error the loader skips.
  for (const auto& r : ds.records) {
    if (r.source.path != shard) continue;
    if (r.source.member == members[0].name || r.source.member == members[1].name)
      EXPECT_NO_THROW(read_image_bytes(r.source));
    else
      EXPECT_THROW(read_image_bytes(r.source), Error);
  }
  // Missing text shard: the image shard is reported as a missing pair.
  fs::remove(dir + "/text_box_00000.tar");
  BadInputLog strict(true);
  std::string msg = error_of([&] { open_dataset(dir, strict); });
  EXPECT_NE(msg.find("images_00000.tar"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing pair"), std::string::npos) << msg;
}

TEST(BadInput, GarbageFilesNeverCrash) {
  std::vector<std::vector<uint8_t>> inputs = {{},
                                              {0xFF, 0xD8, 0xFF},
                                              {0xFF, 0xD8, 0xFF, 0xE0, 0, 16, 'J', 'F', 'I', 'F'},
                                              {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'},
                                              std::vector<uint8_t>(5000, 0xAB)};
  for (const auto& in : inputs) EXPECT_THROW(decode_image(in, "garbage"), Error);
  auto dir = temp_dir("json");
  write_text(dir / "mc.jsonl",
             "{\"image\": \"a\", \"question\": \"q\"}\n[1,2\n"
             "{\"image\": \"a\", \"question\": \"q\", \"options\": [\"1\",\"2\",\"3\",\"4\"], "
             "\"answer\": \"E\"}\n");
  BadInputLog log;
  log.set_quiet(true);
  EXPECT_TRUE(read_mc((dir / "mc.jsonl").string(), log).empty());
  EXPECT_EQ(log.count(), 3);
  BadInputLog strict(true);
  std::string msg = error_of([&] { read_mc((dir / "mc.jsonl").string(), strict); });
  EXPECT_NE(msg.find("mc.jsonl line 1"), std::string::npos) << msg;
}

}  // namespace
}  // namespace hd::data
