// tokenizer.json loading (with the layout checks) and the BPE itself; the text-level steps are
// in pretokenize.cpp. The rules cited are those of tokenizers 0.20.3 (qwen2-reference.md s. 7).
#include "vilahd/text/bpe_tokenizer.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "autograd/error.h"
#include "vilahd/text/pretokenize.h"

namespace hd::vilahd {
namespace {

using nlohmann::json;

// GPT-2's byte -> character map (section 7.3): printable Latin-1 bytes map to themselves, the
// other 68 bytes, in increasing order, to U+0100..U+0143.
struct ByteChars {
  std::array<std::string, 256> utf8;  // the character of each byte, as UTF-8
  std::array<int16_t, 0x144> byte;    // character -> byte, -1 if not a byte character
  ByteChars() {
    byte.fill(-1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool same = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const char32_t c = same ? char32_t(b) : char32_t(0x100 + extra++);
      byte[c] = int16_t(b);
      if (c < 0x80) {
        utf8[b] = std::string(1, char(c));
      } else {
        utf8[b] = {char(0xC0 | (c >> 6)), char(0x80 | (c & 0x3F))};
      }
    }
  }
};
const ByteChars kBytes;

// The bytes a token contributes to decode (ByteLevel decoder): its characters mapped back to
// bytes, or, if any character is not a byte character, the token's own UTF-8 unchanged.
std::string token_bytes(const std::string& token) {
  std::string out;
  for (size_t i = 0; i < token.size();) {
    const auto b0 = static_cast<unsigned char>(token[i]);
    char32_t c = b0;
    size_t len = 1;
    if (b0 >= 0xC0 && b0 < 0xE0 && i + 1 < token.size()) {
      c = char32_t(b0 & 0x1F) << 6 | (static_cast<unsigned char>(token[i + 1]) & 0x3F);
      len = 2;
    } else if (b0 >= 0x80) {
      return token;  // a 3- or 4-byte character: never a byte character
    }
    if (c >= kBytes.byte.size() || kBytes.byte[c] < 0) return token;
    out += char(kBytes.byte[c]);
    i += len;
  }
  return out;
}

std::string brief(const json& j) {
  std::string s = j.dump();
  return s.size() > 160 ? s.substr(0, 157) + "..." : s;
}

// Error helpers: every message names the file and the key at fault.
struct Where {
  std::string file;
  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw Error(detail::concat(file, ": ", key, ": ", what));
  }
  bool absent(const json& obj, const char* key) const {
    return !obj.contains(key) || obj.at(key).is_null();
  }
  // obj[key] is absent, null or false (a flag the implementation does not support).
  void no_flag(const json& obj, const char* key, const std::string& path) const {
    if (absent(obj, key)) return;
    if (!obj.at(key).is_boolean()) fail(path + "." + key, "expected a boolean");
    if (obj.at(key).get<bool>()) fail(path + "." + key, "true is not supported");
  }
  bool flag(const json& obj, const char* key, const std::string& path, bool dflt) const {
    if (absent(obj, key)) return dflt;
    if (!obj.at(key).is_boolean()) fail(path + "." + key, "expected a boolean");
    return obj.at(key).get<bool>();
  }
  std::string type(const json& obj, const std::string& path) const {
    if (!obj.is_object() || !obj.contains("type") || !obj.at("type").is_string())
      fail(path, "expected an object with a \"type\", got " + brief(obj));
    return obj.at("type").get<std::string>();
  }
  void expect_type(const json& obj, const std::string& path, const std::string& want) const {
    const std::string t = type(obj, path);
    if (t != want) fail(path, "unsupported type \"" + t + "\" (the Qwen2 layout has " + want + ")");
  }
};

json read_json(const std::filesystem::path& path) {
  const std::string file = path.string();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    throw Error("cannot open tokenizer file " + file + ": no such file");
  if (!std::filesystem::is_regular_file(path, ec))
    throw Error("cannot open tokenizer file " + file + ": not a regular file");
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  if (!in) throw Error("cannot read tokenizer file " + file);
  try {
    return json::parse(ss.str());
  } catch (const json::exception& e) {
    throw Error(file + ": invalid JSON (" + e.what() + ")");
  }
}

// Added tokens found in text, leftmost-longest (the aho-corasick MatchKind::LeftmostLongest of
// tokenizers' AddedVocabulary): at the first position where any pattern matches, the longest.
class AddedMatcher {
 public:
  void add(std::string pattern, int32_t id) {
    const auto first = static_cast<unsigned char>(pattern[0]);
    patterns_.push_back({std::move(pattern), id});
    auto& bucket = by_first_[first];
    bucket.push_back(patterns_.size() - 1);
    std::stable_sort(bucket.begin(), bucket.end(), [&](size_t a, size_t b) {
      return patterns_[a].first.size() > patterns_[b].first.size();
    });
  }
  bool empty() const { return patterns_.empty(); }

  // Calls on_text(span) for the text between matches and on_token(id) for each match.
  template <class OnText, class OnToken>
  void split(std::string_view s, OnText&& on_text, OnToken&& on_token) const {
    size_t start = 0;
    for (size_t p = 0; p < s.size() && !patterns_.empty(); ++p) {
      const auto& bucket = by_first_[static_cast<unsigned char>(s[p])];
      for (const size_t k : bucket) {
        const auto& [pat, id] = patterns_[k];
        if (s.compare(p, pat.size(), pat) != 0) continue;
        if (p > start) on_text(s.substr(start, p - start));
        on_token(id);
        start = p + pat.size();
        p = start - 1;
        break;
      }
    }
    if (start < s.size()) on_text(s.substr(start));
  }

 private:
  std::vector<std::pair<std::string, int32_t>> patterns_;
  std::array<std::vector<size_t>, 256> by_first_;
};

struct MergeInfo {
  int32_t rank;
  int32_t id;
};

uint64_t pair_key(int32_t a, int32_t b) {
  return uint64_t(uint32_t(a)) << 32 | uint32_t(b);
}

}  // namespace

struct BpeTokenizer::Impl {
  std::filesystem::path path;
  bool nfc = false;
  bool ignore_merges = false;
  std::unordered_map<std::string, int32_t> vocab;  // BPE vocabulary (byte-character strings)
  std::unordered_map<std::string, int32_t> added;  // added token content -> id
  std::unordered_map<uint64_t, MergeInfo> merges;  // (left id, right id) -> rank, merged id
  std::array<int32_t, 256> byte_id{};              // -1: byte character missing (dropped)
  std::vector<std::optional<std::string>> tokens;  // id -> token string
  std::vector<std::string> bytes;                  // id -> bytes it decodes to
  std::vector<uint8_t> special;                    // id -> added token marked special
  AddedMatcher raw_added, normalized_added;
  int64_t distinct = 0;

  void load_model(const json& model, const Where& w);
  void load_added(const json& list, const Where& w);
  void bpe(std::string_view piece, std::vector<int32_t>& ids) const;
  void encode_normalized(std::string_view text, std::vector<int32_t>& ids) const;
};

void BpeTokenizer::Impl::load_model(const json& model, const Where& w) {
  w.expect_type(model, "model", "BPE");
  if (!w.absent(model, "dropout")) w.fail("model.dropout", "BPE dropout is not supported");
  if (!w.absent(model, "unk_token"))
    w.fail("model.unk_token", "must be null (byte-level BPE has no unknown token)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (w.absent(model, key)) continue;
    if (!model.at(key).is_string() || !model.at(key).get<std::string>().empty())
      w.fail(std::string("model.") + key, "must be \"\" or null, got " + brief(model.at(key)));
  }
  w.no_flag(model, "byte_fallback", "model");
  ignore_merges = w.flag(model, "ignore_merges", "model", false);

  if (!model.contains("vocab")) w.fail("model.vocab", "missing");
  if (!model.at("vocab").is_object()) w.fail("model.vocab", "expected an object");
  std::unordered_map<int32_t, const std::string*> by_id;
  for (const auto& [token, id] : model.at("vocab").items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
      w.fail("model.vocab", "id of \"" + token + "\" is not an int32 >= 0: " + brief(id));
    const auto [it, fresh] = vocab.emplace(token, id.get<int32_t>());
    if (!by_id.emplace(it->second, &it->first).second)
      w.fail("model.vocab", "id " + std::to_string(it->second) + " is used by both \"" + token +
                                "\" and \"" + *by_id[it->second] + "\"");
  }
  for (int b = 0; b < 256; ++b) {
    const auto it = vocab.find(kBytes.utf8[b]);
    byte_id[b] = it == vocab.end() ? -1 : it->second;  // like tokenizers with unk null: dropped
  }

  if (!model.contains("merges")) w.fail("model.merges", "missing");
  const json& list = model.at("merges");
  if (!list.is_array()) w.fail("model.merges", "expected an array");
  auto id_of = [&](const std::string& s, const std::string& key) {
    const auto it = vocab.find(s);
    if (it == vocab.end()) w.fail(key, "\"" + s + "\" is not in model.vocab");
    return it->second;
  };
  merges.reserve(list.size());
  for (size_t rank = 0; rank < list.size(); ++rank) {
    const json& m = list[rank];
    const std::string key = "model.merges[" + std::to_string(rank) + "]";
    std::string a, b;
    if (m.is_string()) {  // "a b": exactly one space (tokenizers' convert_merges_to_hashmap)
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        w.fail(key, "expected \"a b\" (two tokens, one space), got " + brief(m));
      a = s.substr(0, sp), b = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>(), b = m[1].get<std::string>();
    } else {
      w.fail(key, "expected \"a b\" or [a, b], got " + brief(m));
    }
    // A repeated pair keeps its last rank, as tokenizers' HashMap collect does. The lookups are
    // sequenced (left, right, merged) so that the error names the first missing token on every
    // compiler: as arguments their order is unspecified (the sanitizer build named "zzzq").
    const int32_t left = id_of(a, key), right = id_of(b, key), merged = id_of(a + b, key);
    merges[pair_key(left, right)] = {int32_t(rank), merged};
  }
}

void BpeTokenizer::Impl::load_added(const json& list, const Where& w) {
  if (!list.is_array()) w.fail("added_tokens", "expected an array");
  const auto model_size = int64_t(vocab.size());
  int64_t max_added = -1;
  for (size_t i = 0; i < list.size(); ++i) {
    const json& t = list[i];
    const std::string key = "added_tokens[" + std::to_string(i) + "]";
    if (!t.is_object() || !t.contains("content") || !t.at("content").is_string())
      w.fail(key, "expected an object with a string \"content\"");
    const std::string content = t.at("content").get<std::string>();
    for (const char* f : {"lstrip", "rstrip", "single_word"}) w.no_flag(t, f, key);
    const bool is_special = w.flag(t, "special", key, false);
    const bool normalized = w.flag(t, "normalized", key, !is_special);
    if (content.empty()) continue;  // tokenizers ignores empty added tokens
    if (added.count(content)) w.fail(key, "\"" + content + "\" is listed twice");
    if (find_invalid_utf8(content) != std::string_view::npos) w.fail(key, "invalid UTF-8");
    // The id field is not used: like tokenizers' AddedVocabulary::add_tokens, a token in the
    // vocabulary keeps its id, a new one gets the next id after the vocabulary / last added.
    int64_t id;
    const auto in_vocab = vocab.find(content);
    if (in_vocab != vocab.end()) {
      id = in_vocab->second;
    } else if (max_added < 0) {
      id = model_size;
    } else {
      id = (max_added >= model_size || model_size == 0) ? max_added + 1 : model_size;
    }
    if (in_vocab == vocab.end() && id < int64_t(tokens.size()) && tokens[id])
      w.fail(key, "\"" + content + "\" gets id " + std::to_string(id) +
                      " (the next free one as tokenizers counts), which is taken by \"" +
                      *tokens[id] + "\"");
    if (id > INT32_MAX) w.fail(key, "id overflows int32");
    max_added = std::max(max_added, id);
    added.emplace(content, int32_t(id));
    if (int64_t(tokens.size()) <= id) {
      tokens.resize(id + 1), bytes.resize(id + 1), special.resize(id + 1);
    }
    tokens[id] = content;
    bytes[id] = token_bytes(content);
    special[id] = is_special;
    if (normalized) {
      normalized_added.add(nfc ? vilahd::nfc(content) : content, int32_t(id));
    } else {
      raw_added.add(content, int32_t(id));
    }
  }
}

BpeTokenizer BpeTokenizer::load(const std::filesystem::path& tokenizer_json) {
  const json root = read_json(tokenizer_json);
  const Where w{tokenizer_json.string()};
  if (!root.is_object()) w.fail("(root)", "expected a JSON object");
  auto t = std::make_unique<Impl>();
  t->path = tokenizer_json;

  if (!w.absent(root, "version") && root.at("version") != "1.0")
    w.fail("version", "unknown tokenizer.json version " + brief(root.at("version")));
  for (const char* key : {"truncation", "padding"})
    if (!w.absent(root, key)) w.fail(key, "must be null (encode() neither truncates nor pads)");

  // Normalizer: NFC (Qwen2) or none.
  if (!w.absent(root, "normalizer")) {
    w.expect_type(root.at("normalizer"), "normalizer", "NFC");
    t->nfc = true;
  }

  // Pre-tokenizer: Sequence[Split(Regex P, Isolated), ByteLevel(no prefix space, no regex)].
  if (!root.contains("pre_tokenizer")) w.fail("pre_tokenizer", "missing");
  const json& pre = root.at("pre_tokenizer");
  w.expect_type(pre, "pre_tokenizer", "Sequence");
  if (!pre.contains("pretokenizers") || !pre.at("pretokenizers").is_array() ||
      pre.at("pretokenizers").size() != 2)
    w.fail("pre_tokenizer.pretokenizers", "expected [Split, ByteLevel], got " + brief(pre));
  const json& split = pre.at("pretokenizers")[0];
  const json& byte_level = pre.at("pretokenizers")[1];
  const std::string sk = "pre_tokenizer.pretokenizers[0]";
  w.expect_type(split, sk, "Split");
  if (!split.contains("pattern") || !split.at("pattern").is_object() ||
      !split.at("pattern").contains("Regex") || !split.at("pattern").at("Regex").is_string())
    w.fail(sk + ".pattern",
           "expected {\"Regex\": ...}, got " + brief(split.value("pattern", json())));
  if (split.at("pattern").at("Regex").get<std::string>() != kQwen2Pattern)
    w.fail(sk + ".pattern.Regex", "unsupported regex " + brief(split.at("pattern").at("Regex")) +
                                      " (only Qwen2's pattern is implemented)");
  if (split.value("behavior", json()) != "Isolated")
    w.fail(sk + ".behavior", "must be \"Isolated\", got " + brief(split.value("behavior", json())));
  w.no_flag(split, "invert", sk);
  const std::string bk = "pre_tokenizer.pretokenizers[1]";
  w.expect_type(byte_level, bk, "ByteLevel");
  w.no_flag(byte_level, "add_prefix_space", bk);
  w.no_flag(byte_level, "use_regex", bk);

  // Post-processor: ByteLevel only adjusts offsets, so it may also be absent.
  if (!w.absent(root, "post_processor"))
    w.expect_type(root.at("post_processor"), "post_processor", "ByteLevel");
  if (!root.contains("decoder")) w.fail("decoder", "missing");
  w.expect_type(root.at("decoder"), "decoder", "ByteLevel");

  if (!root.contains("model")) w.fail("model", "missing");
  t->load_model(root.at("model"), w);
  t->distinct = int64_t(t->vocab.size());
  int64_t max_id = -1;
  for (const auto& [token, id] : t->vocab) max_id = std::max<int64_t>(max_id, id);
  t->tokens.resize(max_id + 1), t->bytes.resize(max_id + 1), t->special.resize(max_id + 1);
  for (const auto& [token, id] : t->vocab) t->tokens[id] = token, t->bytes[id] = token_bytes(token);
  if (!w.absent(root, "added_tokens")) t->load_added(root.at("added_tokens"), w);
  for (const auto& [content, id] : t->added) t->distinct += t->vocab.count(content) ? 0 : 1;
  return BpeTokenizer(std::move(t));
}

// One pre-tokenized piece through the BPE model: tokenizers' Word::merge_all without dropout.
// A min-heap of (rank, position) candidate merges; entries made stale by an earlier merge are
// recognised when popped (their left symbol is gone or the pair there now merges differently).
void BpeTokenizer::Impl::bpe(std::string_view piece, std::vector<int32_t>& ids) const {
  if (ignore_merges) {  // tokenizers: a piece that is itself a vocabulary token skips the merges
    std::string word;
    for (const char ch : piece) word += kBytes.utf8[static_cast<unsigned char>(ch)];
    if (const auto it = vocab.find(word); it != vocab.end()) return ids.push_back(it->second);
  }
  struct Symbol {
    int32_t id, prev, next;
    bool alive;
  };
  struct Cand {
    int32_t rank, pos, id;
    bool operator<(const Cand& o) const {  // "less" = lower priority (std heaps are max-heaps)
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  thread_local std::vector<Symbol> sym;
  thread_local std::vector<Cand> heap;
  sym.clear(), heap.clear();
  for (const char ch : piece) {
    const int32_t id = byte_id[static_cast<unsigned char>(ch)];
    if (id < 0) continue;
    const auto n = int32_t(sym.size());
    if (n > 0) sym.back().next = n;
    sym.push_back({id, n - 1, -1, true});
  }
  if (sym.size() == 1) return ids.push_back(sym[0].id);
  auto find = [&](int32_t a, int32_t b) -> const MergeInfo* {
    const auto it = merges.find(pair_key(a, b));
    return it == merges.end() ? nullptr : &it->second;
  };
  for (size_t i = 0; i + 1 < sym.size(); ++i)
    if (const MergeInfo* m = find(sym[i].id, sym[i + 1].id))
      heap.push_back({m->rank, int32_t(i), m->id});
  std::make_heap(heap.begin(), heap.end());
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const Cand top = heap.back();
    heap.pop_back();
    Symbol& left = sym[top.pos];
    if (!left.alive || left.next < 0) continue;
    const Symbol right = sym[left.next];
    const MergeInfo* now = find(left.id, right.id);
    if (!now || now->id != top.id) continue;  // stale entry
    sym[left.next].alive = false;
    left.id = top.id;
    left.next = right.next;
    if (right.next >= 0) sym[right.next].prev = top.pos;
    if (left.prev >= 0)
      if (const MergeInfo* m = find(sym[left.prev].id, left.id)) {
        heap.push_back({m->rank, left.prev, m->id});
        std::push_heap(heap.begin(), heap.end());
      }
    if (left.next >= 0)
      if (const MergeInfo* m = find(left.id, sym[left.next].id)) {
        heap.push_back({m->rank, top.pos, m->id});
        std::push_heap(heap.begin(), heap.end());
      }
  }
  for (const Symbol& s : sym)
    if (s.alive) ids.push_back(s.id);
}

// After the raw added tokens are split off: NFC, the normalized added tokens, regex, BPE.
void BpeTokenizer::Impl::encode_normalized(std::string_view text, std::vector<int32_t>& ids) const {
  const std::string normal = nfc ? vilahd::nfc(text) : std::string(text);
  thread_local std::vector<std::string_view> pieces;
  normalized_added.split(
      normal,
      [&](std::string_view span) {
        pieces.clear();
        pretokenize(span, pieces);
        for (const std::string_view p : pieces) bpe(p, ids);
      },
      [&](int32_t id) { ids.push_back(id); });
}

void BpeTokenizer::encode_into(std::string_view text, std::vector<int32_t>& ids) const {
  const size_t bad = find_invalid_utf8(text);
  HD_CHECK(bad == std::string_view::npos, "BpeTokenizer::encode: invalid UTF-8 at byte ", bad,
           " (tokenizer ", impl_->path.string(), ")");
  impl_->raw_added.split(
      text, [&](std::string_view span) { impl_->encode_normalized(span, ids); },
      [&](int32_t id) { ids.push_back(id); });
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  encode_into(text, ids);
  return ids;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string raw;
  for (const int32_t id : ids) {
    if (id < 0 || size_t(id) >= impl_->tokens.size() || !impl_->tokens[id]) continue;
    if (skip_special && impl_->special[id]) continue;
    raw += impl_->bytes[id];
  }
  return utf8_lossy(raw);
}

std::optional<int32_t> BpeTokenizer::find_token(std::string_view token) const {
  const std::string key(token);
  if (const auto it = impl_->added.find(key); it != impl_->added.end()) return it->second;
  if (const auto it = impl_->vocab.find(key); it != impl_->vocab.end()) return it->second;
  return std::nullopt;
}

int32_t BpeTokenizer::token_id(std::string_view token) const {
  const auto id = find_token(token);
  HD_CHECK(id, "BpeTokenizer: no token \"", token, "\" in ", impl_->path.string());
  return *id;
}

std::optional<std::string> BpeTokenizer::id_to_token(int32_t id) const {
  if (id < 0 || size_t(id) >= impl_->tokens.size()) return std::nullopt;
  return impl_->tokens[id];
}

bool BpeTokenizer::is_special(int32_t id) const {
  return id >= 0 && size_t(id) < impl_->special.size() && impl_->special[id];
}

int64_t BpeTokenizer::vocab_size() const {
  return impl_->distinct;
}
int64_t BpeTokenizer::max_id_plus_one() const {
  return int64_t(impl_->tokens.size());
}
const std::filesystem::path& BpeTokenizer::path() const {
  return impl_->path;
}

BpeTokenizer::BpeTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BpeTokenizer::BpeTokenizer(BpeTokenizer&&) noexcept = default;
BpeTokenizer& BpeTokenizer::operator=(BpeTokenizer&&) noexcept = default;
BpeTokenizer::~BpeTokenizer() = default;

}  // namespace hd::vilahd
