// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json in the Qwen2 layout
// (qwen2-reference.md section 7): ids equal those of the `tokenizers` package (0.20.x).
//
// encode(text):
//   1. split off the added tokens whose "normalized" is false, leftmost-longest, anywhere in the
//      raw text (Qwen2's <|endoftext|>, <|im_start|>, <|im_end|>): they become their ids;
//   2. NFC each remaining span, then split off the added tokens with "normalized": true (matched
//      against their NFC form; VILA-style media tokens such as <image> are added this way);
//   3. split each span with the pre-tokenizer regex (pretokenize.h), map its UTF-8 bytes to
//      GPT-2's byte characters and apply the BPE merges (lowest rank first, leftmost on ties).
// No BOS/EOS is added (Qwen2's post-processor adds nothing).
//
// decode(ids): token strings concatenated, byte characters mapped back to bytes (a token with
// any other character contributes its own UTF-8), then lossy UTF-8 (U+FFFD for every invalid
// part, so a lone lead byte decodes to U+FFFD). Ids without a token are dropped silently.
//
// load() accepts only what it can reproduce exactly; anything else (another pre-tokenizer or
// regex, a non-BPE model, unk/dropout/byte_fallback, truncation/padding, added tokens with
// lstrip/rstrip/single_word) is an hd::Error naming the file and the key.
//
// Thread safety: a loaded tokenizer is immutable; encode/decode may run concurrently.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hd::vilahd {

class BpeTokenizer {
 public:
  // Reads and checks `tokenizer_json`; throws hd::Error naming the file (and key) at fault.
  static BpeTokenizer load(const std::filesystem::path& tokenizer_json);

  // Ids of `text` (UTF-8; ill-formed UTF-8 is an error naming the byte offset).
  std::vector<int32_t> encode(std::string_view text) const;
  // Appends the ids of `text` to `ids` (no BOS/EOS either).
  void encode_into(std::string_view text, std::vector<int32_t>& ids) const;

  // Text of `ids`; skip_special drops the added tokens marked "special" (the `tokenizers`
  // default is true, transformers' decode defaults to false).
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;

  // Id of a token string as it appears in the vocabulary (byte characters, e.g. "Ġworld") or of
  // an added token ("<|im_end|>"); token_id throws naming the token if there is none.
  int32_t token_id(std::string_view token) const;
  std::optional<int32_t> find_token(std::string_view token) const;
  // The token string of an id (vocabulary form), or nullopt for ids without a token.
  std::optional<std::string> id_to_token(int32_t id) const;
  // Whether `id` is an added token marked "special" (what decode(skip_special) drops).
  bool is_special(int32_t id) const;

  // Number of distinct tokens, BPE vocabulary plus added tokens: len(get_vocab(True)) in
  // `tokenizers`, 151646 for Qwen2 (the model's embedding is padded beyond it, to 151936).
  int64_t vocab_size() const;
  // One past the largest id that has a token (== vocab_size() when ids are contiguous).
  int64_t max_id_plus_one() const;

  const std::filesystem::path& path() const;

  BpeTokenizer(BpeTokenizer&&) noexcept;
  BpeTokenizer& operator=(BpeTokenizer&&) noexcept;
  ~BpeTokenizer();

 private:
  struct Impl;
  explicit BpeTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace hd::vilahd
