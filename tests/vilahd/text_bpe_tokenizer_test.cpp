// BpeTokenizer and the Qwen2 chat template against tests/fixtures/bpe_tokenizer/ (written by
// tests/fixtures/make_bpe_tokenizer.py with tokenizers 0.20.3 / transformers 4.46.3): ids must
// equal the `tokenizers` package's exactly, decode must reproduce its lossy UTF-8, and the
// hand-written pre-tokenizer must split and classify code points as its Oniguruma regex does.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "tests/testing/errors.h"
#include "vilahd/text/bpe_tokenizer.h"
#include "vilahd/text/chat_template.h"
#include "vilahd/text/pretokenize.h"

namespace hd::vilahd {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

const fs::path kDir = fs::path(HD_FIXTURE_DIR) / "bpe_tokenizer";

json read_json(const fs::path& p) {
  std::ifstream f(p);
  if (!f) throw std::runtime_error("cannot read " + p.string() + " (make_bpe_tokenizer.py)");
  std::stringstream ss;
  ss << f.rdbuf();
  return json::parse(ss.str());
}

const json& golden() {
  static const json j = read_json(kDir / "golden.json");
  return j;
}

const BpeTokenizer& tok() {
  static const BpeTokenizer t = BpeTokenizer::load(kDir / "tokenizer.json");
  return t;
}

std::vector<int32_t> ids_of(const json& j) {
  return j.get<std::vector<int32_t>>();
}

// Writes `doc` (or raw text) to a fresh file under the test temp dir and returns its path.
fs::path write_temp(const std::string& name, const std::string& text) {
  const fs::path p = fs::path(::testing::TempDir()) / ("hd_bpe_" + name + ".json");
  std::ofstream(p, std::ios::binary) << text;
  return p;
}

TEST(BpeTokenizer, LoadsQwen2Layout) {
  const json& g = golden();
  EXPECT_EQ(tok().vocab_size(), g["vocab_size"].get<int64_t>());
  EXPECT_EQ(tok().max_id_plus_one(), g["vocab_size"].get<int64_t>());
  for (const auto& [s, id] : g["specials"].items()) {
    EXPECT_EQ(tok().token_id(s), id.get<int32_t>()) << s;
    EXPECT_TRUE(tok().is_special(id.get<int32_t>())) << s;
    EXPECT_EQ(tok().id_to_token(id.get<int32_t>()), s);
  }
  // Section 7.3: the byte characters come first, in code point order.
  EXPECT_EQ(tok().token_id("!"), 0);
  EXPECT_EQ(tok().token_id("\xC4\x8A"), 198);  // Ċ = LF
  EXPECT_EQ(tok().token_id("\xC4\xA0"), 220);  // Ġ = space
  EXPECT_FALSE(tok().is_special(0));
  EXPECT_FALSE(tok().find_token("no such token"));
  EXPECT_FALSE(tok().id_to_token(-1));
  EXPECT_FALSE(tok().id_to_token(1 << 30));
  testing::expect_error([] { tok().token_id("no such token"); }, "no such token");
}

TEST(BpeTokenizer, EncodeMatchesTokenizers) {
  const auto& cases = golden()["encode"];
  ASSERT_GE(cases.size(), 300u);
  for (const auto& c : cases) {
    const std::string text = c["text"];
    const auto ids = tok().encode(text);
    ASSERT_EQ(ids, ids_of(c["ids"])) << "text: " << c["text"].dump();
    EXPECT_EQ(tok().decode(ids), c["decoded"].get<std::string>()) << c["text"].dump();
    EXPECT_EQ(tok().decode(ids, true), c["decoded_skip"].get<std::string>()) << c["text"].dump();
    // Byte-level BPE is lossless up to NFC.
    EXPECT_EQ(tok().decode(ids), nfc(text)) << c["text"].dump();
  }
}

TEST(BpeTokenizer, EncodeIntoAppends) {
  std::vector<int32_t> ids = {7};
  tok().encode_into("hello world", ids);
  auto want = tok().encode("hello world");
  want.insert(want.begin(), 7);
  EXPECT_EQ(ids, want);
  EXPECT_TRUE(tok().encode("").empty());
}

TEST(BpeTokenizer, DecodeMatchesTokenizers) {
  for (const auto& c : golden()["decode"]) {
    EXPECT_EQ(tok().decode(ids_of(c["ids"]), c["skip_special"].get<bool>()),
              c["text"].get<std::string>())
        << c["ids"].dump() << " skip_special " << c["skip_special"];
  }
}

// The vocabulary token of one byte: GPT-2's byte character (section 7.3) as UTF-8.
std::string byte_token(unsigned b) {
  const bool same = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
  unsigned c = b;
  if (!same) {
    c = 0x100;
    for (unsigned x = 0; x < b; ++x)
      c += !((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE);
  }
  if (c < 0x80) return std::string(1, char(c));
  return {char(0xC0 | (c >> 6)), char(0x80 | (c & 0x3F))};
}

TEST(BpeTokenizer, DecodeIsLossyUtf8) {
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(byte_token(0x20), "\xC4\xA0");  // Ġ
  EXPECT_EQ(byte_token(0xE4), "\xC3\xA4");  // ä
  // 你 is E4 BD A0: its lead byte alone, or with one continuation byte, is U+FFFD.
  const int32_t e4 = tok().token_id(byte_token(0xE4)), bd = tok().token_id(byte_token(0xBD));
  const int32_t a0 = tok().token_id(byte_token(0xA0));
  EXPECT_EQ(tok().decode({e4}), fffd);
  EXPECT_EQ(tok().decode({e4, bd}), fffd);
  EXPECT_EQ(tok().decode({e4, bd, a0}), "\xE4\xBD\xA0");
  EXPECT_EQ(tok().decode({e4, tok().token_id("a")}), fffd + "a");
  EXPECT_EQ(utf8_lossy("\xC0\x80"), fffd + fffd);             // overlong: two parts
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), fffd + fffd + fffd);  // surrogate
  EXPECT_EQ(utf8_lossy("\xF0\x9F\x98"), fffd);                // truncated at the end
  EXPECT_EQ(utf8_lossy("x\xF4\x90\x80\x80y"), "x" + fffd + fffd + fffd + fffd + "y");
  EXPECT_EQ(find_invalid_utf8("ok \xC3\xA9 \xE4\xBD"), 6u);
  EXPECT_EQ(find_invalid_utf8("ok \xC3\xA9"), std::string_view::npos);
}

TEST(BpeTokenizer, SkipSpecialAndUnknownIds) {
  const int32_t start = tok().token_id("<|im_start|>"), end = tok().token_id("<|im_end|>");
  const auto user = tok().encode("user\nhi");
  std::vector<int32_t> ids = {start};
  ids.insert(ids.end(), user.begin(), user.end());
  ids.push_back(end);
  EXPECT_EQ(tok().decode(ids), "<|im_start|>user\nhi<|im_end|>");
  EXPECT_EQ(tok().decode(ids, /*skip_special=*/true), "user\nhi");
  // Ids without a token (padding rows of the embedding, negatives) are dropped silently.
  const auto n = int32_t(tok().max_id_plus_one());
  EXPECT_EQ(tok().decode({n, -1, tok().token_id("a"), n + 1000}), "a");
}

TEST(BpeTokenizer, InvalidUtf8IsAnError) {
  testing::expect_error([] { tok().encode("ok \xC3"); }, "invalid UTF-8 at byte 3");
}

TEST(BpeTokenizer, ConcurrentEncode) {
  const auto& cases = golden()["encode"];
  auto run = [&](std::vector<std::vector<int32_t>>* out) {
    for (const auto& c : cases) out->push_back(tok().encode(c["text"].get<std::string>()));
  };
  std::vector<std::vector<int32_t>> a, b;
  std::thread t1(run, &a), t2(run, &b);
  t1.join(), t2.join();
  ASSERT_EQ(a.size(), cases.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], ids_of(cases[i]["ids"]));
  EXPECT_EQ(a, b);
}

TEST(Pretokenize, MatchesRegexSplits) {
  const auto& cases = golden()["pieces"];
  ASSERT_GE(cases.size(), 200u);
  for (const auto& c : cases) {
    const std::string text = nfc(c["text"].get<std::string>());
    std::vector<std::string> got;
    for (const auto p : pretokenize(text)) got.emplace_back(p);
    EXPECT_EQ(got, c["pieces"].get<std::vector<std::string>>()) << c["text"].dump();
  }
  // Section 7.2's verified table.
  using V = std::vector<std::string_view>;
  EXPECT_EQ(pretokenize("I'm here, they'LL go. 'dog"),
            (V{"I", "'m", " here", ",", " they", "'LL", " go", ".", " '", "dog"}));
  EXPECT_EQ(pretokenize("a  b   \n\n  c\t\td"),
            (V{"a", " ", " b", "   \n\n", " ", " c", "\t", "\td"}));
  EXPECT_EQ(pretokenize("def f(x):\n    return x**2\n"),
            (V{"def", " f", "(x", "):\n", "   ", " return", " x", "**", "2", "\n"}));
}

// Every code point's class as the regex engine of `tokenizers` saw it (Unicode versions of ICU
// and Oniguruma could disagree on newly assigned characters: this lists any difference).
TEST(Pretokenize, UnicodeClassesMatchOniguruma) {
  std::vector<CharClass> want(0x110000, CharClass::kSymbol);
  for (const auto& r : golden()["classes"]) {
    const std::string k = r[2];
    const CharClass c = k == "L"   ? CharClass::kLetter
                        : k == "N" ? CharClass::kNumber
                                   : CharClass::kSpace;
    for (uint32_t cp = r[0]; cp <= r[1].get<uint32_t>(); ++cp) want[cp] = c;
  }
  int bad = 0;
  for (char32_t cp = 0; cp < 0x110000; ++cp) {
    if (cp >= 0xD800 && cp < 0xE000) continue;
    if (char_class(cp) != want[cp] && ++bad <= 10)
      ADD_FAILURE() << "U+" << std::hex << uint32_t(cp) << ": class " << int(char_class(cp))
                    << ", Oniguruma " << int(want[cp]);
  }
  EXPECT_EQ(bad, 0);
}

std::string utf8(char32_t c) {
  if (c < 0x80) return std::string(1, char(c));
  if (c < 0x800) return {char(0xC0 | (c >> 6)), char(0x80 | (c & 0x3F))};
  if (c < 0x10000)
    return {char(0xE0 | (c >> 12)), char(0x80 | ((c >> 6) & 0x3F)), char(0x80 | (c & 0x3F))};
  return {char(0xF0 | (c >> 18)), char(0x80 | ((c >> 12) & 0x3F)), char(0x80 | ((c >> 6) & 0x3F)),
          char(0x80 | (c & 0x3F))};
}

// tokenizers' NFC has Unicode 9.0 tables: every code point in three probe strings changes under
// our NFC exactly where it changed under theirs, and the listed outputs are equal.
TEST(Nfc, MatchesTokenizersOnEveryCodePoint) {
  const json& g = golden()["nfc"];
  for (const auto& c : g["cases"])
    EXPECT_EQ(nfc(c[0].get<std::string>()), c[1].get<std::string>()) << c[0].dump();
  ASSERT_GE(g["cases"].size(), 500u);
  for (const auto& [tmpl, ranges] : g["changed"].items()) {
    std::vector<bool> changed(0x110000, false);
    for (const auto& r : ranges)
      for (uint32_t cp = r[0]; cp <= r[1].get<uint32_t>(); ++cp) changed[cp] = true;
    const size_t hole = tmpl.find("{}");
    int bad = 0;
    for (char32_t cp = 0; cp < 0x110000; ++cp) {
      if (cp >= 0xD800 && cp < 0xE000) continue;
      const std::string probe = tmpl.substr(0, hole) + utf8(cp) + tmpl.substr(hole + 2);
      if ((nfc(probe) != probe) != changed[cp] && ++bad <= 10)
        ADD_FAILURE() << "template " << tmpl << ", U+" << std::hex << uint32_t(cp)
                      << (changed[cp] ? ": tokenizers changes it, we do not"
                                      : ": we change it, tokenizers does not");
    }
    EXPECT_EQ(bad, 0) << tmpl;
  }
}

TEST(Nfc, ComposesAndKeepsNormalText) {
  EXPECT_EQ(nfc("e\xCC\x81"), "\xC3\xA9");                     // e + U+0301 -> é
  EXPECT_EQ(nfc("\xE2\x84\xAB"), "\xC3\x85");                  // U+212B ANGSTROM SIGN -> Å
  EXPECT_EQ(nfc("\xE1\x84\x80\xE1\x85\xA1"), "\xEA\xB0\x80");  // Hangul jamo -> 가
  EXPECT_EQ(nfc("plain ascii"), "plain ascii");
  EXPECT_EQ(tok().encode("cafe\xCC\x81"), tok().encode("caf\xC3\xA9"));
}

TEST(ChatTemplate, MatchesTransformers) {
  const auto& cases = golden()["chat"];
  ASSERT_GE(cases.size(), 8u);
  for (const auto& c : cases) {
    std::vector<ChatMessage> messages;
    for (const auto& m : c["messages"]) messages.push_back({m["role"], m["content"]});
    const std::string rendered = apply_chat_template(messages, c["add_generation_prompt"]);
    EXPECT_EQ(rendered, c["rendered"].get<std::string>()) << c["messages"].dump();
    EXPECT_EQ(tok().encode(rendered), ids_of(c["ids"])) << c["messages"].dump();
  }
}

TEST(ChatTemplate, SpecExamples) {
  const std::vector<ChatMessage> user = {{"user", "Describe the image."}};
  EXPECT_EQ(apply_chat_template(user, true),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            "Describe the image.<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(apply_chat_template(user, false),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            "Describe the image.<|im_end|>\n");
  EXPECT_EQ(apply_chat_template({{"system", "Be terse."}, {"user", "Describe the image."}}, true),
            "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nDescribe the image."
            "<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(apply_chat_template({{"system", ""}, {"user", "Hi"}}, true),
            "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n");
}

// Section 7.9: the hand-made tokenizer (merges as [a, b] pairs) and its verified ids.
TEST(BpeTokenizer, HandMadeSection79Table) {
  const BpeTokenizer t = BpeTokenizer::load(kDir / "tiny.json");
  EXPECT_EQ(t.vocab_size(), 271);
  EXPECT_EQ(t.encode("hello world"), (std::vector<int32_t>{260, 264}));
  EXPECT_EQ(t.encode("Hello world"), (std::vector<int32_t>{39, 68, 257, 78, 264}));
  EXPECT_EQ(t.encode("abc"), (std::vector<int32_t>{64, 265}));
  EXPECT_EQ(t.encode("world 2024!\n\n"),
            (std::vector<int32_t>{86, 261, 263, 220, 17, 15, 17, 19, 0, 198, 198}));
  EXPECT_EQ(t.encode("<|im_start|>user\nhello world<|im_end|>\n"),
            (std::vector<int32_t>{269, 84, 82, 68, 81, 198, 260, 264, 270, 198}));
  EXPECT_EQ(t.vocab_size(), golden()["tiny"]["vocab_size"].get<int64_t>());
  for (const auto& c : golden()["tiny"]["encode"]) {
    EXPECT_EQ(t.encode(c["text"].get<std::string>()), ids_of(c["ids"])) << c["text"].dump();
    EXPECT_EQ(t.decode(ids_of(c["ids"])), c["decoded"].get<std::string>());
  }
}

// Other tokenizer.json settings the loader supports: more added tokens (normalized or not,
// special or not, one already in the vocabulary) and ignore_merges.
TEST(BpeTokenizer, VariantsMatchTokenizers) {
  const json base = read_json(kDir / "tokenizer.json");
  for (const auto& v : golden()["variants"]) {
    json doc = base;
    doc.merge_patch(v["patch"]);
    const std::string name = v["name"];
    const BpeTokenizer t = BpeTokenizer::load(write_temp(name, doc.dump()));
    EXPECT_EQ(t.vocab_size(), v["vocab_size"].get<int64_t>()) << name;
    for (const auto& [s, id] : v["added"].items()) EXPECT_EQ(t.token_id(s), id.get<int32_t>());
    for (const auto& c : v["encode"]) {
      const auto ids = t.encode(c["text"].get<std::string>());
      EXPECT_EQ(ids, ids_of(c["ids"])) << name << ": " << c["text"].dump();
      EXPECT_EQ(t.decode(ids), c["decoded"].get<std::string>()) << name << c["text"].dump();
      EXPECT_EQ(t.decode(ids, true), c["decoded_skip"].get<std::string>()) << name;
    }
  }
}

TEST(BpeTokenizerErrors, MissingAndMalformedFilesNameTheFile) {
  const fs::path missing = fs::path(::testing::TempDir()) / "hd_bpe_no_such_tokenizer.json";
  testing::expect_error([&] { BpeTokenizer::load(missing); }, missing.string());
  testing::expect_error([&] { BpeTokenizer::load(missing); }, "no such file");
  const fs::path bad = write_temp("malformed", "{\"model\": {\"vocab\": ");
  testing::expect_error([&] { BpeTokenizer::load(bad); }, bad.string());
  testing::expect_error([&] { BpeTokenizer::load(bad); }, "invalid JSON");
  testing::expect_error([&] { BpeTokenizer::load(fs::path(::testing::TempDir())); },
                        "not a regular file");
}

// Each edit of the fixture must fail to load with a message naming the file and the key.
TEST(BpeTokenizerErrors, LayoutProblemsNameTheKey) {
  const json base = read_json(kDir / "tokenizer.json");
  struct Case {
    const char* name;
    std::function<void(json&)> edit;
    const char* needle;
  };
  const std::vector<Case> cases = {
      {"no_vocab", [](json& d) { d["model"].erase("vocab"); }, "model.vocab: missing"},
      {"no_merges", [](json& d) { d["model"].erase("merges"); }, "model.merges: missing"},
      {"merge_oov", [](json& d) { d["model"]["merges"][3] = "zzz q"; },
       "model.merges[3]: \"zzz\" is not in model.vocab"},
      {"merge_product_oov", [](json& d) { d["model"]["merges"].push_back("ÿ ÿ"); },
       "\"ÿÿ\" is not in model.vocab"},
      {"merge_format", [](json& d) { d["model"]["merges"][0] = "a b c"; }, "model.merges[0]"},
      {"model_type", [](json& d) { d["model"]["type"] = "WordPiece"; },
       "model: unsupported type \"WordPiece\""},
      {"unk", [](json& d) { d["model"]["unk_token"] = "<unk>"; }, "model.unk_token"},
      {"byte_fallback", [](json& d) { d["model"]["byte_fallback"] = true; }, "model.byte_fallback"},
      {"dropout", [](json& d) { d["model"]["dropout"] = 0.1; }, "model.dropout"},
      {"regex",
       [](json& d) { d["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\p{N}{1,3}"; },
       "pre_tokenizer.pretokenizers[0].pattern.Regex: unsupported regex"},
      {"pre_type",
       [](json& d) {
         d["pre_tokenizer"] = {{"type", "Metaspace"}};
       },
       "pre_tokenizer: unsupported type \"Metaspace\""},
      {"use_regex", [](json& d) { d["pre_tokenizer"]["pretokenizers"][1]["use_regex"] = true; },
       "pre_tokenizer.pretokenizers[1].use_regex"},
      {"prefix_space",
       [](json& d) { d["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = true; },
       "add_prefix_space"},
      {"behavior", [](json& d) { d["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; },
       "pretokenizers[0].behavior"},
      {"no_pre", [](json& d) { d.erase("pre_tokenizer"); }, "pre_tokenizer: missing"},
      {"normalizer",
       [](json& d) {
         d["normalizer"] = {{"type", "NFKC"}};
       },
       "normalizer: unsupported type \"NFKC\""},
      {"decoder",
       [](json& d) {
         d["decoder"] = {{"type", "WordPiece"}};
       },
       "decoder"},
      {"truncation",
       [](json& d) {
         d["truncation"] = {{"max_length", 8}};
       },
       "truncation"},
      {"lstrip", [](json& d) { d["added_tokens"][1]["lstrip"] = true; },
       "added_tokens[1].lstrip: true is not supported"},
      {"twice", [](json& d) { d["added_tokens"].push_back(d["added_tokens"][0]); },
       "added_tokens[3]: \"<|endoftext|>\" is listed twice"},
      {"bad_id", [](json& d) { d["model"]["vocab"]["!"] = -4; }, "model.vocab"},
  };
  for (const auto& c : cases) {
    json doc = base;
    c.edit(doc);
    const fs::path p = write_temp(c.name, doc.dump());
    SCOPED_TRACE(c.name);
    testing::expect_error([&] { BpeTokenizer::load(p); }, p.string());
    testing::expect_error([&] { BpeTokenizer::load(p); }, c.needle);
  }
}

}  // namespace
}  // namespace hd::vilahd
