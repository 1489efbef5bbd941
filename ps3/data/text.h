// Caption processing (ps3-reference-implementation.md §2.1) and the SentencePiece tokenizer.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace hd::data {

// Drops the "close-up" phrases, splits into sentences on [.!?] followed by whitespace, and
// drops a final sentence mentioning both "text" and "visible".
std::vector<std::string> caption_sentences(const std::string& caption);
// With sentence masking: start uniform in [0, min(n-1, 2)], length uniform in
// [min(n, 1), max(n - start, 1)], the contiguous slice joined by spaces. Randomness from `key`.
std::string process_caption(const std::string& caption, bool sentence_masking, uint64_t key);

// The reference tokenizer's text cleaning, "canonicalize" (§1.9; open_clip's
// canonicalize_text(basic_clean(text))): ftfy.fix_text, html.unescape twice, strip, '_' -> ' ',
// ASCII punctuation (string.punctuation) removed, lower-cased, whitespace runs collapsed to one
// space. Input and output are UTF-8. Of ftfy only the table-driven fixes are reproduced (HTML
// entities, curly quotes, C1 controls, ligatures, fullwidth forms, control characters), not its
// mojibake repair or NFC; lower-casing covers Latin, Greek and Cyrillic (text_clean.cpp,
// docs/data.md).
std::string canonicalize_text(const std::string& text);

// What Tokenizer::encode does to a text before SentencePiece sees it. The reference cleans every
// PS3 text (training captions, evaluation captions, prompts) with canonicalize; `none` is for
// texts that are already clean or for tests of the raw pieces.
enum class TextClean { none, canonicalize };

class Tokenizer {
 public:
  // Loads a SentencePiece model file; throws hd::Error naming it.
  Tokenizer(const std::string& model_path, int64_t context_length = 64,
            TextClean clean = TextClean::canonicalize);
  ~Tokenizer();
  // clean(text) -> pieces + EOS, truncated to the context length (EOS kept last), padded with
  // pad_id.
  std::vector<int32_t> encode(const std::string& text) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  int64_t context_length() const { return ctx_; }
  int32_t pad_id() const { return pad_; }
  int64_t vocab_size() const;

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  int64_t ctx_;
  TextClean clean_;
  int32_t pad_, eos_;
};

// Trains a small unigram model on `texts`, each cleaned as Tokenizer::encode will clean it
// (`clean`), and writes <prefix>.model / <prefix>.vocab: pieces for capitals or punctuation that
// encode never produces would only waste the vocabulary. pad = 0, unk = 1, bos = 2, eos = 3. The
// vocabulary is a soft limit: a small synthetic corpus may support fewer pieces.
void train_tokenizer(const std::vector<std::string>& texts, const std::string& prefix,
                     int64_t vocab_size = 1000, TextClean clean = TextClean::canonicalize);

}  // namespace hd::data
