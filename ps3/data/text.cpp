#include "ps3/data/text.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <unordered_map>

#include "autograd/error.h"
#include "autograd/random.h"

namespace hd::data {

std::vector<std::string> caption_sentences(const std::string& caption) {
  std::string s = caption;
  for (const char* phrase : {"The second image is a close-up of", "The image is a close-up of"}) {
    for (size_t p; (p = s.find(phrase)) != std::string::npos;) s.erase(p, std::strlen(phrase));
  }
  std::vector<std::string> out;
  std::string cur;
  auto flush = [&] {
    size_t a = cur.find_first_not_of(" \t\n\r"), b = cur.find_last_not_of(" \t\n\r");
    if (a != std::string::npos) out.push_back(cur.substr(a, b - a + 1));
    cur.clear();
  };
  for (size_t i = 0; i < s.size(); ++i) {
    cur += s[i];
    // Python's re.split(r'(?<=[.!?])\s+'): the punctuation stays with its sentence.
    if ((s[i] == '.' || s[i] == '!' || s[i] == '?') && i + 1 < s.size() &&
        std::isspace(static_cast<unsigned char>(s[i + 1])))
      flush();
  }
  flush();
  if (!out.empty()) {
    std::string last = out.back();
    std::transform(last.begin(), last.end(), last.begin(), ::tolower);
    if (last.find("text") != std::string::npos && last.find("visible") != std::string::npos)
      out.pop_back();
  }
  return out;
}

std::string process_caption(const std::string& caption, bool sentence_masking, uint64_t key) {
  std::vector<std::string> sent = caption_sentences(caption);
  int64_t n = int64_t(sent.size());
  int64_t start = 0, len = n;
  if (sentence_masking && n > 0) {
    auto w = Generator(key, 0x54455854ull /* "TEXT" */).block(0);
    int64_t max_start = std::min<int64_t>(n - 1, 2);
    start = int64_t(uniform01_f64(w[0], w[1]) * double(max_start + 1));
    int64_t lo = std::min<int64_t>(n, 1), hi = std::max<int64_t>(n - start, 1);
    len = lo + int64_t(uniform01_f64(w[2], w[3]) * double(hi - lo + 1));
  }
  std::string out;
  for (int64_t i = start; i < std::min(n, start + len); ++i)
    out += (out.empty() ? "" : " ") + sent[size_t(i)];
  return out;
}

Tokenizer::Tokenizer(const std::string& model_path, int64_t context_length, TextClean clean)
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()),
      ctx_(context_length),
      clean_(clean) {
  HD_CHECK(context_length >= 1, "Tokenizer: context length must be positive, got ", context_length);
  auto st = sp_->Load(model_path);
  HD_CHECK(st.ok(), "Tokenizer: cannot load SentencePiece model ", model_path, ": ", st.ToString());
  pad_ = std::max(0, sp_->pad_id());
  eos_ = sp_->eos_id();
}

Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  sp_->Encode(clean_ == TextClean::canonicalize ? canonicalize_text(text) : text, &ids);
  if (eos_ >= 0) {
    if (int64_t(ids.size()) >= ctx_) ids.resize(size_t(ctx_ - 1));
    ids.push_back(eos_);
  }
  std::vector<int32_t> out(static_cast<size_t>(ctx_), pad_);
  std::copy_n(ids.begin(), std::min<size_t>(ids.size(), size_t(ctx_)), out.begin());
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::vector<int> keep;
  for (int32_t i : ids)
    if (i != pad_ && i != eos_) keep.push_back(i);
  std::string out;
  sp_->Decode(keep, &out);
  return out;
}

int64_t Tokenizer::vocab_size() const {
  return sp_->GetPieceSize();
}

void train_tokenizer(const std::vector<std::string>& texts, const std::string& prefix,
                     int64_t vocab_size, TextClean clean) {
  HD_CHECK(!texts.empty(), "train_tokenizer: no texts to train on");
  std::string corpus = prefix + ".corpus.txt";
  {
    std::ofstream f(corpus);
    HD_CHECK(f, "train_tokenizer: cannot write ", corpus);
    for (const auto& t : texts) {
      std::string line = clean == TextClean::canonicalize ? canonicalize_text(t) : t;
      // One text per line: a newline inside a text (possible only without cleaning) would split it.
      std::replace(line.begin(), line.end(), '\n', ' ');
      f << line << '\n';
    }
  }
  // Options as a map, not a command line: Train(string) logs "Running command: ..." at INFO
  // before it parses --minloglevel, so that line leaked into every run that trained a tokenizer.
  const std::unordered_map<std::string, std::string> args = {
      {"input", corpus},
      {"model_prefix", prefix},
      {"vocab_size", std::to_string(vocab_size)},
      {"model_type", "unigram"},
      {"hard_vocab_limit", "false"},
      {"character_coverage", "1.0"},
      {"pad_id", "0"},
      {"unk_id", "1"},
      {"bos_id", "2"},
      {"eos_id", "3"},
      {"minloglevel", "2"},
      {"num_threads", "2"}};
  auto st = sentencepiece::SentencePieceTrainer::Train(args);
  std::filesystem::remove(corpus);
  HD_CHECK(st.ok(), "train_tokenizer: SentencePiece training failed: ", st.ToString());
}

}  // namespace hd::data
