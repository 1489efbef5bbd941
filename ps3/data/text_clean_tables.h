// Tables of canonicalize_text (ps3/data/text_clean.cpp), from Python 3.11 and ftfy 6.3: the
// entity and lower-case tables are printed by `tests/fixtures/make_text_clean.py --cpp-tables`;
// the Windows-1252 and ligature tables are html._invalid_charrefs and ftfy.chardata.LIGATURES.
// Included by text_clean.cpp only.
#pragma once

namespace hd::data::text_tables {

// The HTML 4 names (html.entities.name2codepoint, 252) plus apos and the upper-case AMP, COPY, GT,
// LT, QUOT, REG, with their html5 values. `legacy`: also valid without the ';' (html5 keys
// without a semicolon), which html.unescape accepts, also as a prefix ("&ampx" -> "&x").
struct Entity {
  const char* name;
  char32_t cp;
  bool legacy;
};
constexpr Entity kEntities[] = {
    {"Aacute", 0xC1, true},     {"aacute", 0xE1, true},     {"Acirc", 0xC2, true},
    {"acirc", 0xE2, true},      {"acute", 0xB4, true},      {"AElig", 0xC6, true},
    {"aelig", 0xE6, true},      {"Agrave", 0xC0, true},     {"agrave", 0xE0, true},
    {"alefsym", 0x2135, false}, {"Alpha", 0x391, false},    {"alpha", 0x3B1, false},
    {"AMP", 0x26, true},        {"amp", 0x26, true},        {"and", 0x2227, false},
    {"ang", 0x2220, false},     {"apos", 0x27, false},      {"Aring", 0xC5, true},
    {"aring", 0xE5, true},      {"asymp", 0x2248, false},   {"Atilde", 0xC3, true},
    {"atilde", 0xE3, true},     {"Auml", 0xC4, true},       {"auml", 0xE4, true},
    {"bdquo", 0x201E, false},   {"Beta", 0x392, false},     {"beta", 0x3B2, false},
    {"brvbar", 0xA6, true},     {"bull", 0x2022, false},    {"cap", 0x2229, false},
    {"Ccedil", 0xC7, true},     {"ccedil", 0xE7, true},     {"cedil", 0xB8, true},
    {"cent", 0xA2, true},       {"Chi", 0x3A7, false},      {"chi", 0x3C7, false},
    {"circ", 0x2C6, false},     {"clubs", 0x2663, false},   {"cong", 0x2245, false},
    {"COPY", 0xA9, true},       {"copy", 0xA9, true},       {"crarr", 0x21B5, false},
    {"cup", 0x222A, false},     {"curren", 0xA4, true},     {"Dagger", 0x2021, false},
    {"dagger", 0x2020, false},  {"dArr", 0x21D3, false},    {"darr", 0x2193, false},
    {"deg", 0xB0, true},        {"Delta", 0x394, false},    {"delta", 0x3B4, false},
    {"diams", 0x2666, false},   {"divide", 0xF7, true},     {"Eacute", 0xC9, true},
    {"eacute", 0xE9, true},     {"Ecirc", 0xCA, true},      {"ecirc", 0xEA, true},
    {"Egrave", 0xC8, true},     {"egrave", 0xE8, true},     {"empty", 0x2205, false},
    {"emsp", 0x2003, false},    {"ensp", 0x2002, false},    {"Epsilon", 0x395, false},
    {"epsilon", 0x3B5, false},  {"equiv", 0x2261, false},   {"Eta", 0x397, false},
    {"eta", 0x3B7, false},      {"ETH", 0xD0, true},        {"eth", 0xF0, true},
    {"Euml", 0xCB, true},       {"euml", 0xEB, true},       {"euro", 0x20AC, false},
    {"exist", 0x2203, false},   {"fnof", 0x192, false},     {"forall", 0x2200, false},
    {"frac12", 0xBD, true},     {"frac14", 0xBC, true},     {"frac34", 0xBE, true},
    {"frasl", 0x2044, false},   {"Gamma", 0x393, false},    {"gamma", 0x3B3, false},
    {"ge", 0x2265, false},      {"GT", 0x3E, true},         {"gt", 0x3E, true},
    {"hArr", 0x21D4, false},    {"harr", 0x2194, false},    {"hearts", 0x2665, false},
    {"hellip", 0x2026, false},  {"Iacute", 0xCD, true},     {"iacute", 0xED, true},
    {"Icirc", 0xCE, true},      {"icirc", 0xEE, true},      {"iexcl", 0xA1, true},
    {"Igrave", 0xCC, true},     {"igrave", 0xEC, true},     {"image", 0x2111, false},
    {"infin", 0x221E, false},   {"int", 0x222B, false},     {"Iota", 0x399, false},
    {"iota", 0x3B9, false},     {"iquest", 0xBF, true},     {"isin", 0x2208, false},
    {"Iuml", 0xCF, true},       {"iuml", 0xEF, true},       {"Kappa", 0x39A, false},
    {"kappa", 0x3BA, false},    {"Lambda", 0x39B, false},   {"lambda", 0x3BB, false},
    {"lang", 0x27E8, false},    {"laquo", 0xAB, true},      {"lArr", 0x21D0, false},
    {"larr", 0x2190, false},    {"lceil", 0x2308, false},   {"ldquo", 0x201C, false},
    {"le", 0x2264, false},      {"lfloor", 0x230A, false},  {"lowast", 0x2217, false},
    {"loz", 0x25CA, false},     {"lrm", 0x200E, false},     {"lsaquo", 0x2039, false},
    {"lsquo", 0x2018, false},   {"LT", 0x3C, true},         {"lt", 0x3C, true},
    {"macr", 0xAF, true},       {"mdash", 0x2014, false},   {"micro", 0xB5, true},
    {"middot", 0xB7, true},     {"minus", 0x2212, false},   {"Mu", 0x39C, false},
    {"mu", 0x3BC, false},       {"nabla", 0x2207, false},   {"nbsp", 0xA0, true},
    {"ndash", 0x2013, false},   {"ne", 0x2260, false},      {"ni", 0x220B, false},
    {"not", 0xAC, true},        {"notin", 0x2209, false},   {"nsub", 0x2284, false},
    {"Ntilde", 0xD1, true},     {"ntilde", 0xF1, true},     {"Nu", 0x39D, false},
    {"nu", 0x3BD, false},       {"Oacute", 0xD3, true},     {"oacute", 0xF3, true},
    {"Ocirc", 0xD4, true},      {"ocirc", 0xF4, true},      {"OElig", 0x152, false},
    {"oelig", 0x153, false},    {"Ograve", 0xD2, true},     {"ograve", 0xF2, true},
    {"oline", 0x203E, false},   {"Omega", 0x3A9, false},    {"omega", 0x3C9, false},
    {"Omicron", 0x39F, false},  {"omicron", 0x3BF, false},  {"oplus", 0x2295, false},
    {"or", 0x2228, false},      {"ordf", 0xAA, true},       {"ordm", 0xBA, true},
    {"Oslash", 0xD8, true},     {"oslash", 0xF8, true},     {"Otilde", 0xD5, true},
    {"otilde", 0xF5, true},     {"otimes", 0x2297, false},  {"Ouml", 0xD6, true},
    {"ouml", 0xF6, true},       {"para", 0xB6, true},       {"part", 0x2202, false},
    {"permil", 0x2030, false},  {"perp", 0x22A5, false},    {"Phi", 0x3A6, false},
    {"phi", 0x3C6, false},      {"Pi", 0x3A0, false},       {"pi", 0x3C0, false},
    {"piv", 0x3D6, false},      {"plusmn", 0xB1, true},     {"pound", 0xA3, true},
    {"Prime", 0x2033, false},   {"prime", 0x2032, false},   {"prod", 0x220F, false},
    {"prop", 0x221D, false},    {"Psi", 0x3A8, false},      {"psi", 0x3C8, false},
    {"QUOT", 0x22, true},       {"quot", 0x22, true},       {"radic", 0x221A, false},
    {"rang", 0x27E9, false},    {"raquo", 0xBB, true},      {"rArr", 0x21D2, false},
    {"rarr", 0x2192, false},    {"rceil", 0x2309, false},   {"rdquo", 0x201D, false},
    {"real", 0x211C, false},    {"REG", 0xAE, true},        {"reg", 0xAE, true},
    {"rfloor", 0x230B, false},  {"Rho", 0x3A1, false},      {"rho", 0x3C1, false},
    {"rlm", 0x200F, false},     {"rsaquo", 0x203A, false},  {"rsquo", 0x2019, false},
    {"sbquo", 0x201A, false},   {"Scaron", 0x160, false},   {"scaron", 0x161, false},
    {"sdot", 0x22C5, false},    {"sect", 0xA7, true},       {"shy", 0xAD, true},
    {"Sigma", 0x3A3, false},    {"sigma", 0x3C3, false},    {"sigmaf", 0x3C2, false},
    {"sim", 0x223C, false},     {"spades", 0x2660, false},  {"sub", 0x2282, false},
    {"sube", 0x2286, false},    {"sum", 0x2211, false},     {"sup", 0x2283, false},
    {"sup1", 0xB9, true},       {"sup2", 0xB2, true},       {"sup3", 0xB3, true},
    {"supe", 0x2287, false},    {"szlig", 0xDF, true},      {"Tau", 0x3A4, false},
    {"tau", 0x3C4, false},      {"there4", 0x2234, false},  {"Theta", 0x398, false},
    {"theta", 0x3B8, false},    {"thetasym", 0x3D1, false}, {"thinsp", 0x2009, false},
    {"THORN", 0xDE, true},      {"thorn", 0xFE, true},      {"tilde", 0x2DC, false},
    {"times", 0xD7, true},      {"trade", 0x2122, false},   {"Uacute", 0xDA, true},
    {"uacute", 0xFA, true},     {"uArr", 0x21D1, false},    {"uarr", 0x2191, false},
    {"Ucirc", 0xDB, true},      {"ucirc", 0xFB, true},      {"Ugrave", 0xD9, true},
    {"ugrave", 0xF9, true},     {"uml", 0xA8, true},        {"upsih", 0x3D2, false},
    {"Upsilon", 0x3A5, false},  {"upsilon", 0x3C5, false},  {"Uuml", 0xDC, true},
    {"uuml", 0xFC, true},       {"weierp", 0x2118, false},  {"Xi", 0x39E, false},
    {"xi", 0x3BE, false},       {"Yacute", 0xDD, true},     {"yacute", 0xFD, true},
    {"yen", 0xA5, true},        {"Yuml", 0x178, false},     {"yuml", 0xFF, true},
    {"Zeta", 0x396, false},     {"zeta", 0x3B6, false},     {"zwj", 0x200D, false},
    {"zwnj", 0x200C, false},
};

// html._invalid_charrefs for 0x80-0x9F: Windows-1252 (undefined bytes stay C1 controls). ftfy's
// fix_c1_controls uses the same mapping ("sloppy-windows-1252").
constexpr char32_t kWindows1252[32] = {
    0x20AC, 0x81,   0x201A, 0x192,  0x201E, 0x2026, 0x2020, 0x2021, 0x2C6,  0x2030, 0x160,
    0x2039, 0x152,  0x8D,   0x17D,  0x8F,   0x90,   0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x2DC,  0x2122, 0x161,  0x203A, 0x153,  0x9D,   0x17E,  0x178};

// fix_latin_ligatures (ftfy's LIGATURES table, in full).
struct Ligature {
  char32_t from;
  const char32_t* to;
};
constexpr Ligature kLigatures[] = {
    {0x132, U"IJ"},       {0x133, U"ij"},  {0x149, U"\u02BCn"}, {0x1F1, U"DZ"},
    {0x1F2, U"Dz"},       {0x1F3, U"dz"},  {0x1C4, U"D\u017D"}, {0x1C5, U"D\u017E"},
    {0x1C6, U"d\u017E"},  {0x1C7, U"LJ"},  {0x1C8, U"Lj"},      {0x1C9, U"lj"},
    {0x1CA, U"NJ"},       {0x1CB, U"Nj"},  {0x1CC, U"nj"},      {0xFB00, U"ff"},
    {0xFB01, U"fi"},      {0xFB02, U"fl"}, {0xFB03, U"ffi"},    {0xFB04, U"ffl"},
    {0xFB05, U"\u017Ft"}, {0xFB06, U"st"}};

// str.lower() of one character in U+0000-024F, U+0370-052F, U+1E00-1FFF (generated from
// Python 3.11's tables): runs {first, last, step, delta}, c in a run when (c - first) % step == 0.
// U+0130 (-> "i" + U+0307) and U+03A3 (final sigma) are handled by text_clean.cpp.
struct LowerRun {
  char32_t first, last;
  int step, delta;
};
constexpr LowerRun kLower[] = {
    {0x41, 0x5A, 1, 32},       {0xC0, 0xD6, 1, 32},       {0xD8, 0xDE, 1, 32},
    {0x100, 0x12E, 2, 1},      {0x132, 0x136, 2, 1},      {0x139, 0x147, 2, 1},
    {0x14A, 0x176, 2, 1},      {0x178, 0x178, 1, -121},   {0x179, 0x17D, 2, 1},
    {0x181, 0x181, 1, 210},    {0x182, 0x184, 2, 1},      {0x186, 0x186, 1, 206},
    {0x187, 0x187, 1, 1},      {0x189, 0x18A, 1, 205},    {0x18B, 0x18B, 1, 1},
    {0x18E, 0x18E, 1, 79},     {0x18F, 0x18F, 1, 202},    {0x190, 0x190, 1, 203},
    {0x191, 0x191, 1, 1},      {0x193, 0x193, 1, 205},    {0x194, 0x194, 1, 207},
    {0x196, 0x196, 1, 211},    {0x197, 0x197, 1, 209},    {0x198, 0x198, 1, 1},
    {0x19C, 0x19C, 1, 211},    {0x19D, 0x19D, 1, 213},    {0x19F, 0x19F, 1, 214},
    {0x1A0, 0x1A4, 2, 1},      {0x1A6, 0x1A6, 1, 218},    {0x1A7, 0x1A7, 1, 1},
    {0x1A9, 0x1A9, 1, 218},    {0x1AC, 0x1AC, 1, 1},      {0x1AE, 0x1AE, 1, 218},
    {0x1AF, 0x1AF, 1, 1},      {0x1B1, 0x1B2, 1, 217},    {0x1B3, 0x1B5, 2, 1},
    {0x1B7, 0x1B7, 1, 219},    {0x1B8, 0x1B8, 1, 1},      {0x1BC, 0x1BC, 1, 1},
    {0x1C4, 0x1C4, 1, 2},      {0x1C5, 0x1C5, 1, 1},      {0x1C7, 0x1C7, 1, 2},
    {0x1C8, 0x1C8, 1, 1},      {0x1CA, 0x1CA, 1, 2},      {0x1CB, 0x1DB, 2, 1},
    {0x1DE, 0x1EE, 2, 1},      {0x1F1, 0x1F1, 1, 2},      {0x1F2, 0x1F4, 2, 1},
    {0x1F6, 0x1F6, 1, -97},    {0x1F7, 0x1F7, 1, -56},    {0x1F8, 0x21E, 2, 1},
    {0x220, 0x220, 1, -130},   {0x222, 0x232, 2, 1},      {0x23A, 0x23A, 1, 10795},
    {0x23B, 0x23B, 1, 1},      {0x23D, 0x23D, 1, -163},   {0x23E, 0x23E, 1, 10792},
    {0x241, 0x241, 1, 1},      {0x243, 0x243, 1, -195},   {0x244, 0x244, 1, 69},
    {0x245, 0x245, 1, 71},     {0x246, 0x24E, 2, 1},      {0x370, 0x372, 2, 1},
    {0x376, 0x376, 1, 1},      {0x37F, 0x37F, 1, 116},    {0x386, 0x386, 1, 38},
    {0x388, 0x38A, 1, 37},     {0x38C, 0x38C, 1, 64},     {0x38E, 0x38F, 1, 63},
    {0x391, 0x3A1, 1, 32},     {0x3A4, 0x3AB, 1, 32},     {0x3CF, 0x3CF, 1, 8},
    {0x3D8, 0x3EE, 2, 1},      {0x3F4, 0x3F4, 1, -60},    {0x3F7, 0x3F7, 1, 1},
    {0x3F9, 0x3F9, 1, -7},     {0x3FA, 0x3FA, 1, 1},      {0x3FD, 0x3FF, 1, -130},
    {0x400, 0x40F, 1, 80},     {0x410, 0x42F, 1, 32},     {0x460, 0x480, 2, 1},
    {0x48A, 0x4BE, 2, 1},      {0x4C0, 0x4C0, 1, 15},     {0x4C1, 0x4CD, 2, 1},
    {0x4D0, 0x52E, 2, 1},      {0x1E00, 0x1E94, 2, 1},    {0x1E9E, 0x1E9E, 1, -7615},
    {0x1EA0, 0x1EFE, 2, 1},    {0x1F08, 0x1F0F, 1, -8},   {0x1F18, 0x1F1D, 1, -8},
    {0x1F28, 0x1F2F, 1, -8},   {0x1F38, 0x1F3F, 1, -8},   {0x1F48, 0x1F4D, 1, -8},
    {0x1F59, 0x1F5F, 2, -8},   {0x1F68, 0x1F6F, 1, -8},   {0x1F88, 0x1F8F, 1, -8},
    {0x1F98, 0x1F9F, 1, -8},   {0x1FA8, 0x1FAF, 1, -8},   {0x1FB8, 0x1FB9, 1, -8},
    {0x1FBA, 0x1FBB, 1, -74},  {0x1FBC, 0x1FBC, 1, -9},   {0x1FC8, 0x1FCB, 1, -86},
    {0x1FCC, 0x1FCC, 1, -9},   {0x1FD8, 0x1FD9, 1, -8},   {0x1FDA, 0x1FDB, 1, -100},
    {0x1FE8, 0x1FE9, 1, -8},   {0x1FEA, 0x1FEB, 1, -112}, {0x1FEC, 0x1FEC, 1, -7},
    {0x1FF8, 0x1FF9, 1, -128}, {0x1FFA, 0x1FFB, 1, -126}, {0x1FFC, 0x1FFC, 1, -9},
};

}  // namespace hd::data::text_tables
