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

class Tokenizer {
 public:
  // Loads a SentencePiece model file; throws hd::Error naming it.
  Tokenizer(const std::string& model_path, int64_t context_length = 64);
  ~Tokenizer();
  // Pieces + EOS, truncated to the context length (EOS kept last), padded with pad_id.
  std::vector<int32_t> encode(const std::string& text) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  int64_t context_length() const { return ctx_; }
  int32_t pad_id() const { return pad_; }
  int64_t vocab_size() const;

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  int64_t ctx_;
  int32_t pad_, eos_;
};

// Trains a small unigram model on `texts` and writes <prefix>.model / <prefix>.vocab.
// pad = 0, unk = 1, bos = 2, eos = 3. The vocabulary is a soft limit: a small synthetic
// corpus may support fewer pieces.
void train_tokenizer(const std::vector<std::string>& texts, const std::string& prefix,
                     int64_t vocab_size = 1000);

}  // namespace hd::data
