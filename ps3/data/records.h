// The dataset formats (ps3-reference-implementation.md §4.1, §4.2):
//  * PS3 pre-training: an image plus JSON {"text": [...], "box": [[x1,y1,x2,y2], ...],
//    "global_text": "..."} (boxes in pixels of the original image, XYXY, same order as text),
//    either as a folder of <key>.<jpg|png> + <key>.json files or as webdataset tar shards
//    images_NNNNN.tar + text_box_NNNNN.tar with matching member names.
//  * VILA-HD SFT: JSON array or JSON lines of {"image", "box", "conversations"}.
//  * Multiple-choice evaluation: JSON lines of {"image", "question", "options" (4), "answer"
//    ("A".."D"), optional "box"}.
// Readers validate structure up front and report bad records to a BadInputLog (skip or throw).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ps3/data/bad_input.h"

namespace hd::data {

struct Box {
  float x1 = 0, y1 = 0, x2 = 0, y2 = 0;
  bool operator==(const Box&) const = default;
};

// Where an image's bytes live: a plain file, or a member of a tar shard.
struct ImageSource {
  std::string path;
  std::string member;  // empty for a plain file
  int64_t offset = 0;  // header offset of the member in the shard
  int64_t size = 0;
  std::string describe() const { return member.empty() ? path : path + ":" + member; }
};

struct ImageRecord {
  std::string key;
  ImageSource source;
  std::string json_where;  // the JSON file / member, for messages
  std::vector<std::string> texts;
  std::vector<Box> boxes;  // same length as texts
  std::string global_text;
};

struct Dataset {
  std::vector<ImageRecord> records;  // sorted by key: the sampler's image ids are indices here
};

// Parses one PS3 JSON record; nullopt (after reporting) when it is unusable. Boxes that are
// empty or inverted are rejected one by one (message: `where` and the box index).
std::optional<ImageRecord> parse_ps3_json(const std::string& text, const std::string& where,
                                          BadInputLog& log);

Dataset read_folder(const std::string& dir, BadInputLog& log);
Dataset read_shards(const std::string& dir, BadInputLog& log);
// A directory holding images_*.tar shards is read as shards, otherwise as a folder.
Dataset open_dataset(const std::string& dir, BadInputLog& log);
std::vector<uint8_t> read_image_bytes(const ImageSource& src);

struct SftRecord {
  std::string image;
  std::optional<Box> box;
  std::vector<std::pair<std::string, std::string>> conversations;  // (from, value)
};
std::vector<SftRecord> read_sft(const std::string& path, BadInputLog& log);
std::string sft_to_json(const SftRecord& r);

struct McRecord {
  std::string image;
  std::string question;
  std::array<std::string, 4> options;
  int answer = 0;  // 0..3 for "A".."D"
  std::optional<Box> box;
};
std::vector<McRecord> read_mc(const std::string& path, BadInputLog& log);
std::string mc_to_json(const McRecord& r);
std::string ps3_to_json(const ImageRecord& r);

}  // namespace hd::data
