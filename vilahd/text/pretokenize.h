// Text-level pieces of the Qwen2 tokenizer that do not depend on the vocabulary: UTF-8 checks,
// NFC, the Unicode classes of the pre-tokenizer regex and the regex itself, hand-written
// (qwen2-reference.md section 7.2). std::regex and RE2 cannot express the pattern (Unicode
// classes, a lookahead), and the alternation order matters, so the splitter below follows the
// pattern's alternatives one by one instead of linking a second regex engine.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace hd::vilahd {

// The pre-tokenizer pattern P of every Qwen2 tokenizer.json; load() accepts no other.
inline constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// The class of a code point as the pattern sees it (Oniguruma in `tokenizers`): \p{L} is
// general category L*, \p{N} is N*, \s is the Unicode White_Space property (so U+0085 and U+00A0
// are spaces, U+001C..U+001F and U+200B are not), all as of Unicode 14.0 (Oniguruma's tables;
// characters ICU knows from later versions are unassigned, i.e. symbols). Everything else is a
// "symbol".
enum class CharClass : uint8_t { kSymbol = 0, kLetter = 1, kNumber = 2, kSpace = 3 };
CharClass char_class(char32_t c);

// Byte offset of the first ill-formed UTF-8 sequence in `s` (overlongs, surrogates and code
// points above U+10FFFF are ill-formed), or std::string_view::npos if `s` is valid.
size_t find_invalid_utf8(std::string_view s);

// `s` decoded as UTF-8 with each ill-formed sequence replaced by U+FFFD, exactly as Rust's
// String::from_utf8_lossy does (one U+FFFD per maximal invalid subpart, the Unicode/WHATWG
// rule): this is the last step of the ByteLevel decoder.
std::string utf8_lossy(std::string_view s);

// Unicode NFC of valid UTF-8 text as `tokenizers` computes it: ICU's NFC restricted to the
// characters of Unicode 9.0 (the tables of tokenizers' normalization crate; later characters
// pass through unchanged). ASCII and already-normalized text come back unchanged.
std::string nfc(std::string_view s);

// Splits valid UTF-8 text into the pieces the pattern P matches (Split, behavior Isolated:
// every match is a piece; P matches at every position, so there are no gaps). The pieces are
// appended to `out` as views into `text`.
void pretokenize(std::string_view text, std::vector<std::string_view>& out);
std::vector<std::string_view> pretokenize(std::string_view text);

}  // namespace hd::vilahd
