// RunConfig.model (a preset name plus overrides) -> ps3::PS3Config. Separate from config.cpp
// because it is the one piece of configuration that needs the model library (ps3/config.cpp's
// presets); parsing and validation stay testable without it.
#pragma once

#include <cstdint>

#include "proto/run_config.pb.h"
#include "ps3/config.h"

namespace hd::launcher {

// `tokenizer_vocab`: pieces of the run's SentencePiece model. The demo preset sizes its text
// embedding to it unless model.text.vocab is set; any model vocabulary smaller than the
// tokenizer's is an error naming both. Validates the result (PS3Config::validate).
ps3::PS3Config to_ps3_config(const proto::ModelConfig& model, int64_t tokenizer_vocab);

}  // namespace hd::launcher
