// A name-mapping table for `hdtrain ckpt import`: pretrained weights from elsewhere (SigLIP-style
// towers, LLMs, HF PS3 files) rarely use our parameter names, and a prefix swap is not always
// enough (HF calls a module `mlp.fc1` where we may say `mlp.0`). The table is a text file, one
// rule per line, so a person can read and diff it:
//
//   # comment                            (blank lines and '#' comments are ignored)
//   text_model.head.weight  text.proj.weight     an exact name
//   vision_model.encoder.*  trunk.*              a prefix: the rest of the name is kept
//   logit_scale             -                    drop the tensor ('-' as the target)
//   optimizer.*             -                    drop every tensor under a prefix
//
// The first rule that matches a name wins; names no rule matches keep their name. Applying the
// table to a file's names is checked as a whole: two tensors may not land on one name (both
// sources are named), and a rule that matched nothing is reported (usually a typo), with its
// line, so an import never silently skips a tensor the user meant to map.
#pragma once
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace hd::parallel::ckpt {

class NameMap {
 public:
  struct Rule {
    std::string source;  // without the trailing '*' for a prefix rule
    std::string target;  // "" for a drop rule
    bool prefix = false;
    bool drop = false;
    std::string where;  // "FILE:LINE", for messages
  };

  // `origin` names the text in errors ("FILE" -> "FILE:LINE: ...").
  static NameMap parse(const std::string& text, const std::string& origin);
  static NameMap load(const std::filesystem::path& file);

  // The new name, or nullopt when a drop rule matches. Also returns the index of the rule used
  // (-1: none matched) through `rule_used` when given.
  std::optional<std::string> apply(const std::string& name, int* rule_used = nullptr) const;

  // Maps every name: result[i] is the new name of names[i] (nullopt: dropped). Throws when two
  // names map to one; `unused` receives the rules that matched no name (for a warning).
  std::vector<std::optional<std::string>> apply_all(const std::vector<std::string>& names,
                                                    std::vector<Rule>* unused = nullptr) const;

  const std::vector<Rule>& rules() const { return rules_; }

 private:
  std::vector<Rule> rules_;
};

}  // namespace hd::parallel::ckpt
