// canonicalize_text (text.h): the reference tokenizer's prompt cleaning, re-implemented.
//
// The reference cleans every text before tokenizing it (ps3-torch tokenization_ps3.py, from
// open_clip): canonicalize_text(html.unescape(html.unescape(ftfy.fix_text(t))).strip()), where
// canonicalize_text replaces '_' by ' ', drops string.punctuation, lower-cases (str.lower) and
// collapses whitespace (str.split). Each step below names the Python it mirrors; the expected
// outputs come from a Python re-implementation checked against the reference's own pipeline
// (tests/fixtures/make_text_clean.py, tests/ps3/data/text_clean_test.cpp).
//
// Why not all of it: ftfy's mojibake repair (fix_encoding) is a statistical model over many
// encodings, and NFC normalisation and full Unicode case tables are large; captions are ASCII or
// Latin-1 in practice. What is reproduced is everything table-driven that changes ordinary
// captions: HTML entities (ftfy's own pass when the line has no '<', then html.unescape twice),
// curly quotes (which then fall to the punctuation rule: "it's" and "it’s" both become "its"),
// C1 controls, ligatures, fullwidth forms, control characters, and lower-casing of Latin, Greek
// and Cyrillic. The differences that remain are listed in docs/data.md.
#include <algorithm>
#include <string>
#include <unordered_map>

#include "ps3/data/text.h"
#include "ps3/data/text_clean_tables.h"

namespace hd::data {
namespace {

using namespace text_tables;
using U32 = std::u32string;
constexpr char32_t kReplacement = 0xFFFD;

// ---- UTF-8 ----
// Invalid or truncated sequences become U+FFFD, one per offending byte (a lenient decode: a
// caption file with a stray Latin-1 byte still cleans the rest of its text).
U32 utf8_decode(const std::string& s) {
  U32 out;
  out.reserve(s.size());
  static constexpr char32_t kMin[4] = {0, 0x80, 0x800, 0x10000};
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    const int n = b < 0x80           ? 0
                  : (b >> 5) == 0x6  ? 1
                  : (b >> 4) == 0xE  ? 2
                  : (b >> 3) == 0x1E ? 3
                                     : -1;
    char32_t cp = n <= 0 ? b : n == 1 ? (b & 0x1F) : n == 2 ? (b & 0x0F) : (b & 0x07);
    bool ok = n >= 0 && i + size_t(n) < s.size();
    for (int k = 1; ok && k <= n; ++k) {
      const auto c = static_cast<unsigned char>(s[i + size_t(k)]);
      ok = (c & 0xC0) == 0x80;
      cp = (cp << 6) | (c & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are invalid too.
    if (ok && (cp < kMin[n] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)) ok = false;
    if (!ok) {
      out += kReplacement, ++i;
      continue;
    }
    out += cp;
    i += size_t(n) + 1;
  }
  return out;
}

std::string utf8_encode(const U32& s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    if (c < 0x80) {
      out += char(c);
    } else if (c < 0x800) {
      out += char(0xC0 | (c >> 6)), out += char(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      out += char(0xE0 | (c >> 12)), out += char(0x80 | ((c >> 6) & 0x3F));
      out += char(0x80 | (c & 0x3F));
    } else {
      out += char(0xF0 | (c >> 18)), out += char(0x80 | ((c >> 12) & 0x3F));
      out += char(0x80 | ((c >> 6) & 0x3F)), out += char(0x80 | (c & 0x3F));
    }
  }
  return out;
}

// ---- HTML entities ----
// (The table, kEntities, is in text_clean_tables.h.)
const Entity* find_entity(const U32& name) {
  static const std::unordered_map<std::string, const Entity*> table = [] {
    std::unordered_map<std::string, const Entity*> t;
    for (const Entity& e : kEntities) t[e.name] = &e;
    return t;
  }();
  std::string key;
  for (char32_t c : name) {
    if (c >= 0x80) return nullptr;  // every name is ASCII
    key += char(c);
  }
  auto it = table.find(key);
  return it == table.end() ? nullptr : it->second;
}

// html._replace_charref for a numeric reference of value `num` (saturated: anything past
// U+10FFFF behaves the same).
U32 numeric_charref(uint64_t num) {
  if (num == 0x00) return U32(1, kReplacement);
  if (num == 0x0D) return U32(1, U'\r');
  if (num >= 0x80 && num <= 0x9F) return U32(1, kWindows1252[num - 0x80]);
  if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) return U32(1, kReplacement);
  // html._invalid_codepoints: C0 controls but tab/LF/FF/CR, DEL, noncharacters.
  if ((num >= 0x1 && num <= 0x8) || num == 0xB || (num >= 0xE && num <= 0x1F) || num == 0x7F ||
      (num >= 0xFDD0 && num <= 0xFDEF) || (num & 0xFFFE) == 0xFFFE)
    return U32();
  return U32(1, char32_t(num));
}

bool is_digit(char32_t c) {
  return c >= U'0' && c <= U'9';
}
bool is_hex(char32_t c) {
  return is_digit(c) || (c >= U'a' && c <= U'f') || (c >= U'A' && c <= U'F');
}
bool is_alnum(char32_t c) {
  return is_digit(c) || (c >= U'a' && c <= U'z') || (c >= U'A' && c <= U'Z');
}
int hex_value(char32_t c) {
  return is_digit(c) ? int(c - U'0') : c >= U'a' ? int(c - U'a' + 10) : int(c - U'A' + 10);
}

// Python's html.unescape: '&' followed by #digits;? | #[xX]hexdigits;? | 1-32 characters
// other than \t \n \f space < & # ; then an optional ';' (html._charref).
U32 html_unescape(const U32& s) {
  if (s.find(U'&') == U32::npos) return s;
  U32 out;
  size_t i = 0;
  while (i < s.size()) {
    if (s[i] != U'&') {
      out += s[i++];
      continue;
    }
    size_t j = i + 1;
    if (j < s.size() && s[j] == U'#') {
      const bool hex = j + 1 < s.size() && (s[j + 1] == U'x' || s[j + 1] == U'X');
      size_t k = j + 1 + (hex ? 1 : 0), start = k;
      uint64_t num = 0;
      while (k < s.size() && (hex ? is_hex(s[k]) : is_digit(s[k]))) {
        num = std::min<uint64_t>(
            num * (hex ? 16 : 10) + uint64_t(hex ? hex_value(s[k]) : int(s[k] - U'0')),
            0x7FFFFFFF);  // saturate: > 0x10FFFF is all the same
        ++k;
      }
      if (k == start) {  // "&#" or "&#x" without digits: not a reference
        out += s[i++];
        continue;
      }
      if (k < s.size() && s[k] == U';') ++k;
      out += numeric_charref(num);
      i = k;
      continue;
    }
    size_t k = j;
    while (k < s.size() && k - j < 32 &&
           !(s[k] == U'\t' || s[k] == U'\n' || s[k] == U'\f' || s[k] == U' ' || s[k] == U'<' ||
             s[k] == U'&' || s[k] == U'#' || s[k] == U';'))
      ++k;
    if (k == j) {
      out += s[i++];
      continue;
    }
    const bool semi = k < s.size() && s[k] == U';';
    const U32 name = s.substr(j, k - j);
    const size_t end = k + (semi ? 1 : 0);
    if (const Entity* e = find_entity(name); e && (semi || e->legacy)) {
      out += e->cp;
      i = end;
      continue;
    }
    // The longest legacy name that is a prefix (at least 2 characters), the rest kept.
    bool done = false;
    for (size_t x = name.size() - (semi ? 0 : 1); x >= 2 && !done; --x) {
      const Entity* e = find_entity(name.substr(0, x));
      if (e && e->legacy) {
        out += e->cp;
        out += s.substr(j + x, end - (j + x));
        done = true;
      }
    }
    if (!done) out += s.substr(i, end - i);
    i = end;
  }
  return out;
}

// ftfy's unescape_html: &#?[0-9A-Za-z]{1,24}; only, named ones from the table (';' form),
// numeric ones through html.unescape unless that leaves a ';' (an incomplete decode).
U32 ftfy_unescape(const U32& s) {
  U32 out;
  size_t i = 0;
  while (i < s.size()) {
    if (s[i] == U'&') {
      const bool num = i + 1 < s.size() && s[i + 1] == U'#';
      size_t k = i + 1 + (num ? 1 : 0), start = k;
      while (k < s.size() && is_alnum(s[k]) && k - start < 24) ++k;
      if (k > start && k < s.size() && s[k] == U';') {
        const U32 match = s.substr(i, k + 1 - i);
        if (num) {
          U32 dec = html_unescape(match);
          out += dec.find(U';') == U32::npos ? dec : match;
        } else {
          const Entity* e = find_entity(s.substr(start, k - start));
          out += e ? U32(1, e->cp) : match;
        }
        i = k + 1;
        continue;
      }
    }
    out += s[i++];
  }
  return out;
}

// ---- ftfy's character fixes ----
const char32_t* ligature(char32_t c) {
  if (c < 0x132) return nullptr;
  for (const Ligature& l : kLigatures)
    if (l.from == c) return l.to;
  return nullptr;
}

// remove_control_chars' ranges.
bool is_removed_control(char32_t c) {
  return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F ||
         (c >= 0x206A && c <= 0x206F) || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

// fix_c1_controls, fix_latin_ligatures, fix_character_width (the fullwidth ASCII block and the
// ideographic space only), uncurl_quotes, remove_control_chars: each is character-local, so one
// pass applying them in ftfy's order is the same as ftfy's five passes.
U32 char_fixes(const U32& s) {
  U32 out;
  out.reserve(s.size());
  for (char32_t c : s) {
    if (c >= 0x80 && c <= 0x9F) c = kWindows1252[c - 0x80];
    const char32_t* lig = ligature(c);
    const char32_t one[2] = {c, 0};
    for (const char32_t* p = lig ? lig : one; *p; ++p) {
      char32_t d = *p;
      if (d == 0x3000) d = U' ';
      if (d >= 0xFF01 && d <= 0xFF5E) d -= 0xFEE0;
      if (d == 0x2BC || (d >= 0x2018 && d <= 0x201B)) d = U'\'';
      if (d >= 0x201C && d <= 0x201F) d = U'"';
      if (!is_removed_control(d)) out += d;
    }
  }
  return out;
}

// ftfy.fix_text's loop: segments end after each '\n'; once a segment holds '<', HTML is not
// unescaped in it or any later segment; each segment is fixed until nothing changes.
U32 ftfy_subset(const U32& s) {
  U32 out;
  bool unescape = true;
  for (size_t pos = 0; pos < s.size();) {
    size_t brk = s.find(U'\n', pos);
    brk = brk == U32::npos ? s.size() : brk + 1;
    U32 seg = s.substr(pos, brk - pos);
    if (seg.find(U'<') != U32::npos) unescape = false;
    for (;;) {
      U32 fixed = char_fixes(unescape ? ftfy_unescape(seg) : seg);
      if (fixed == seg) break;
      seg = std::move(fixed);
    }
    out += seg;
    pos = brk;
  }
  return out;
}

// ---- canonicalize_text ----
// str.isspace().
bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

char32_t lower_cp(char32_t c) {
  if (c < 0x80) return c >= U'A' && c <= U'Z' ? c + 32 : c;
  for (const LowerRun& r : kLower)
    if (c >= r.first && c <= r.last && (c - r.first) % char32_t(r.step) == 0)
      return char32_t(int64_t(c) + r.delta);
  return c;
}

bool is_lower_image(char32_t c) {
  for (const LowerRun& r : kLower) {
    const int64_t lo = int64_t(r.first) + r.delta, hi = int64_t(r.last) + r.delta;
    if (int64_t(c) >= lo && int64_t(c) <= hi && (int64_t(c) - lo) % r.step == 0) return true;
  }
  return false;
}

// A letter with a case pair in the covered ranges (Unicode's "Cased", restricted).
bool is_cased(char32_t c) {
  return c == 0x3A3 || c == 0x130 || lower_cp(c) != c || is_lower_image(c);
}
bool is_combining(char32_t c) {
  return c >= 0x300 && c < 0x370;
}

U32 lower(const U32& s) {
  U32 out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const char32_t c = s[i];
    if (c == 0x130) {
      out += U"i\u0307";
    } else if (c == 0x3A3) {
      // Python's Final_Sigma: after a cased letter and not before one, combining marks skipped.
      size_t j = i, k = i + 1;
      while (j > 0 && is_combining(s[j - 1])) --j;
      while (k < s.size() && is_combining(s[k])) ++k;
      const bool final = j > 0 && is_cased(s[j - 1]) && !(k < s.size() && is_cased(s[k]));
      out += final ? char32_t(0x3C2) : char32_t(0x3C3);
    } else {
      out += lower_cp(c);
    }
  }
  return out;
}

bool is_ascii_punctuation(char32_t c) {  // string.punctuation
  return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
         (c >= 0x7B && c <= 0x7E);
}

}  // namespace

std::string canonicalize_text(const std::string& text) {
  // basic_clean: ftfy.fix_text, html.unescape twice, strip.
  U32 t = html_unescape(html_unescape(ftfy_subset(utf8_decode(text))));
  // canonicalize_text: '_' -> ' ', punctuation dropped, lower(), " ".join(split()). The strips
  // of basic_clean and canonicalize_text are implied by the split/join.
  U32 kept;
  kept.reserve(t.size());
  for (char32_t c : t) {
    if (c == U'_') c = U' ';
    if (!is_ascii_punctuation(c)) kept += c;
  }
  const U32 low = lower(kept);
  U32 out;
  bool pending_space = false;
  for (char32_t c : low) {
    if (is_space(c)) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out += U' ';
    pending_space = false;
    out += c;
  }
  return utf8_encode(out);
}

}  // namespace hd::data
