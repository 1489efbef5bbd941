// The vocabulary-independent half of the Qwen2 tokenizer (see pretokenize.h).
#include "vilahd/text/pretokenize.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/uniset.h>
#include <unicode/unistr.h>

#include "autograd/error.h"

namespace hd::vilahd {
namespace {

// Length of the well-formed UTF-8 sequence at p[0..avail), or 0 if it is ill-formed; then
// *bad is the length of its maximal invalid subpart (the bytes one U+FFFD replaces in
// from_utf8_lossy: the lead byte plus the continuation bytes that were still acceptable).
size_t utf8_seq(const unsigned char* p, size_t avail, size_t* bad) {
  const unsigned b = p[0];
  if (b < 0x80) return 1;
  size_t len;
  unsigned lo = 0x80, hi = 0xBF;  // range of the second byte (Unicode table 3-7)
  if (b >= 0xC2 && b <= 0xDF) {
    len = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    len = 3;
    if (b == 0xE0) lo = 0xA0;  // no overlongs
    if (b == 0xED) hi = 0x9F;  // no surrogates
  } else if (b >= 0xF0 && b <= 0xF4) {
    len = 4;
    if (b == 0xF0) lo = 0x90;  // no overlongs
    if (b == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    *bad = 1;  // a continuation byte, C0/C1 (always overlong) or F5..FF
    return 0;
  }
  for (size_t k = 1; k < len; ++k) {
    const unsigned c = k < avail ? p[k] : 0;
    if (k >= avail || c < lo || c > hi) {
      *bad = k;
      return 0;
    }
    lo = 0x80, hi = 0xBF;
  }
  return len;
}

// Decodes the well-formed sequence of `len` bytes at p.
char32_t utf8_decode(const unsigned char* p, size_t len) {
  switch (len) {
    case 1:
      return p[0];
    case 2:
      return char32_t(p[0] & 0x1F) << 6 | (p[1] & 0x3F);
    case 3:
      return char32_t(p[0] & 0x0F) << 12 | char32_t(p[1] & 0x3F) << 6 | (p[2] & 0x3F);
    default:
      return char32_t(p[0] & 0x07) << 18 | char32_t(p[1] & 0x3F) << 12 |
             char32_t(p[2] & 0x3F) << 6 | (p[3] & 0x3F);
  }
}

// Classes of ASCII, looked up without ICU (most text is ASCII).
struct AsciiClasses {
  CharClass c[128];
  AsciiClasses() {
    for (int i = 0; i < 128; ++i) {
      c[i] = CharClass::kSymbol;
      if ((i >= 'a' && i <= 'z') || (i >= 'A' && i <= 'Z')) c[i] = CharClass::kLetter;
      if (i >= '0' && i <= '9') c[i] = CharClass::kNumber;
      if (i == ' ' || (i >= 0x09 && i <= 0x0D)) c[i] = CharClass::kSpace;
    }
  }
};
const AsciiClasses kAscii;

// The simple case fold the contractions alternative (?i:...) applies: ASCII letters, and
// U+017F LONG S, whose case fold is 's' (the only non-ASCII code point folding to one of
// s t r e v m l d; Oniguruma matches "'ſ" as a contraction, the fixture checks it).
char32_t fold(char32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if (c == 0x17F) return 's';
  return c;
}

// Unicode version of the regex engine's character tables (see char_class).
constexpr uint8_t kRegexUnicodeMajor = 14;

bool is_crlf(char32_t c) {
  return c == '\r' || c == '\n';
}

// The text decoded once: code points, their classes and byte offsets (off has n + 1 entries).
struct Decoded {
  std::vector<char32_t> cp;
  std::vector<CharClass> cls;
  std::vector<size_t> off;
};

// End (code point index) of the match of P starting at i, trying the alternatives in order:
// the first that matches wins, not the longest (section 7.2).
size_t match_at(const Decoded& d, size_t i) {
  const size_t n = d.cp.size();
  const auto& cp = d.cp;
  const auto& cls = d.cls;
  const char32_t c = cp[i];
  const CharClass k = cls[i];
  auto letters_from = [&](size_t j) {
    while (j < n && cls[j] == CharClass::kLetter) ++j;
    return j;
  };
  // 1. (?i:'s|'t|'re|'ve|'m|'ll|'d)
  if (c == '\'' && i + 1 < n) {
    const char32_t a = fold(cp[i + 1]);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if (i + 2 < n) {
      const char32_t b = fold(cp[i + 2]);
      if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    }
  }
  // 2. [^\r\n\p{L}\p{N}]?\p{L}+ : the optional char is tried first, and only a non-letter can
  // be it, so a letter at i starts the run itself.
  if (k == CharClass::kLetter) return letters_from(i);
  if (k != CharClass::kNumber && !is_crlf(c) && i + 1 < n && cls[i + 1] == CharClass::kLetter)
    return letters_from(i + 1);
  // 3. \p{N}: one number char, never a run.
  if (k == CharClass::kNumber) return i + 1;
  // 4. ' ?[^\s\p{L}\p{N}]+[\r\n]*': an optional U+0020, symbols, trailing CR/LF. If the space
  // is there but no symbol follows, backtracking cannot help (the space is not a symbol).
  const size_t s = c == ' ' ? i + 1 : i;
  if (s < n && cls[s] == CharClass::kSymbol) {
    size_t e = s;
    while (e < n && cls[e] == CharClass::kSymbol) ++e;
    while (e < n && is_crlf(cp[e])) ++e;
    return e;
  }
  // Only whitespace is left here (letters, numbers and symbols matched above).
  size_t r = i, last_crlf = SIZE_MAX;
  for (; r < n && cls[r] == CharClass::kSpace; ++r)
    if (is_crlf(cp[r])) last_crlf = r;
  // 5. \s*[\r\n]+ : backtracking from the whole run stops at its last CR/LF.
  if (last_crlf != SIZE_MAX) return last_crlf + 1;
  // 6. \s+(?!\S) : the whole run at the end of the text, else all but its last char (which is
  // left to join the next piece), if that leaves at least one.
  if (r == n) return n;
  if (r - i >= 2) return r - 1;
  // 7. \s+
  return r;
}

// NFC as tokenizers 0.20 computes it: its normalization crate (unicode-normalization-
// alignments) has Unicode 9.0 tables, so characters assigned later have no combining class and
// no decomposition there. ICU's FilteredNormalizer2 gives exactly that: code points outside the
// set are copied unchanged and act as boundaries, which is what an unassigned starter does.
// (The fixture sweeps every code point; e.g. U+1DF6, assigned in 10.0, is not reordered.)
const icu::Normalizer2& nfc_instance() {
  static const icu::Normalizer2* n = [] {
    UErrorCode st = U_ZERO_ERROR;
    const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(st);
    HD_CHECK(U_SUCCESS(st) && nfc, "ICU: cannot load the NFC normalizer: ", u_errorName(st));
    // Both live for the whole process (function-local statics, never freed on purpose).
    auto* unicode9 = new icu::UnicodeSet(icu::UnicodeString(u"[:age=9.0:]"), st);
    HD_CHECK(U_SUCCESS(st), "ICU: cannot build the Unicode 9.0 set: ", u_errorName(st));
    unicode9->freeze();
    return static_cast<const icu::Normalizer2*>(new icu::FilteredNormalizer2(*nfc, *unicode9));
  }();
  return *n;
}

}  // namespace

CharClass char_class(char32_t c) {
  if (c < 128) return kAscii.c[c];
  // tokenizers 0.20's Oniguruma has Unicode 14.0 tables; ICU is newer (15.0 in ICU 72), so
  // characters assigned later are unassigned (symbols) to the regex. The fixture lists the class
  // of every code point as Oniguruma saw it.
  UVersionInfo age;
  u_charAge(UChar32(c), age);
  if (age[0] > kRegexUnicodeMajor) return CharClass::kSymbol;
  if (u_isUWhiteSpace(UChar32(c))) return CharClass::kSpace;
  const uint32_t gc = U_GET_GC_MASK(UChar32(c));
  if (gc & U_GC_L_MASK) return CharClass::kLetter;
  if (gc & U_GC_N_MASK) return CharClass::kNumber;
  return CharClass::kSymbol;
}

size_t find_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (size_t i = 0; i < s.size();) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    size_t bad = 0;
    const size_t len = utf8_seq(p + i, s.size() - i, &bad);
    if (len == 0) return i;
    i += len;
  }
  return std::string_view::npos;
}

std::string utf8_lossy(std::string_view s) {
  static constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t bad = 0;
    const size_t len = utf8_seq(p + i, s.size() - i, &bad);
    if (len) {
      out.append(s.data() + i, len);
      i += len;
    } else {
      out += kReplacement;
      i += bad;
    }
  }
  return out;
}

std::string nfc(std::string_view s) {
  bool ascii = true;
  for (const char ch : s) ascii &= static_cast<unsigned char>(ch) < 0x80;
  if (ascii) return std::string(s);
  const icu::Normalizer2& n = nfc_instance();
  const icu::StringPiece piece(s.data(), static_cast<int32_t>(s.size()));
  UErrorCode st = U_ZERO_ERROR;
  if (n.isNormalizedUTF8(piece, st) && U_SUCCESS(st)) return std::string(s);
  st = U_ZERO_ERROR;
  std::string out;
  icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(s.size()));
  n.normalizeUTF8(0, piece, sink, nullptr, st);
  HD_CHECK(U_SUCCESS(st), "NFC normalization failed (ICU: ", u_errorName(st), ")");
  return out;
}

void pretokenize(std::string_view text, std::vector<std::string_view>& out) {
  // Reused per thread: encode() calls this once per text segment.
  thread_local Decoded d;
  d.cp.clear(), d.cls.clear(), d.off.clear();
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  for (size_t i = 0; i < text.size();) {
    size_t bad = 0;
    const size_t len = utf8_seq(p + i, text.size() - i, &bad);
    HD_CHECK(len, "pretokenize: invalid UTF-8 at byte ", i);
    const char32_t c = utf8_decode(p + i, len);
    d.cp.push_back(c);
    d.cls.push_back(char_class(c));
    d.off.push_back(i);
    i += len;
  }
  d.off.push_back(text.size());
  for (size_t i = 0; i < d.cp.size();) {
    const size_t e = match_at(d, i);
    out.push_back(text.substr(d.off[i], d.off[e] - d.off[i]));
    i = e;
  }
  if (d.cp.capacity() > (size_t(1) << 20)) d = Decoded{};  // do not keep a huge text's buffers
}

std::vector<std::string_view> pretokenize(std::string_view text) {
  std::vector<std::string_view> out;
  pretokenize(text, out);
  return out;
}

}  // namespace hd::vilahd
