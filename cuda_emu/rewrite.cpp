// rewrite: the emulation build's source step. Reads a .cu file and writes it back as host C++
// for cuda_emu.h, changing only what a C++ compiler cannot take:
//   - kernel<<<grid, block, shared, stream>>>(args)
//       -> kernel % ::moe::emu::launch_config(grid, block, shared, stream)(args)
//   - __global__ ... [__launch_bounds__(B)] name(params) {
//       -> ... name(params) { MOE_EMU_KERNEL_ENTRY(B)
//   - __shared__ T a[N], b[M];
//       -> static T a[N], b[M]; MOE_EMU_SHARED(a) MOE_EMU_SHARED(b)
//     (static storage registered with the emulator, which refills it at every block's start,
//     as a GPU's shared memory holds no value from before)
// Comments, strings and character literals are copied untouched; every line stays on its line
// (a #line directive names the original file), so compiler messages, __LINE__, __FILE__ and
// the emulator's reports point into the .cu source itself.
//
// usage: moe-cuda-emu-rewrite INPUT.cu OUTPUT.cpp
#include <cctype>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>
#include <algorithm>

namespace {

bool ident_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

class Rewriter {
 public:
  explicit Rewriter(const std::string& src) : s_(src) {}

  // The rewritten text; throws std::runtime_error naming the line of a construct it cannot
  // follow.
  std::string run() {
    while (i_ < s_.size()) step();
    if (in_launch_) fail("a <<< without its >>>");
    if (kernel_ != Kernel::kNone) fail("a __global__ function without a body or ';'");
    return out_;
  }

 private:
  enum class Kernel { kNone, kBeforeParams, kInParams, kAfterParams };

  [[noreturn]] void fail(const std::string& what) const {
    int line = 1;
    for (size_t k = 0; k < i_ && k < s_.size(); ++k) line += s_[k] == '\n';
    throw std::runtime_error("line " + std::to_string(line) + ": " + what);
  }

  bool at(const char* t) const { return s_.compare(i_, std::char_traits<char>::length(t), t) == 0; }
  bool word_at(const char* w) const {
    const size_t n = std::char_traits<char>::length(w);
    return at(w) && (i_ == 0 || !ident_char(s_[i_ - 1])) &&
           (i_ + n >= s_.size() || !ident_char(s_[i_ + n]));
  }

  // Copies a comment, string or character literal starting at i_ whole; false if none starts.
  bool copy_literal() {
    if (at("//")) {
      const size_t e = s_.find('\n', i_);
      copy_to(e == std::string::npos ? s_.size() : e);
      return true;
    }
    if (at("/*")) {
      const size_t e = s_.find("*/", i_ + 2);
      if (e == std::string::npos) fail("an unterminated comment");
      copy_to(e + 2);
      return true;
    }
    const char c = s_[i_];
    if (c == 'R' && i_ + 1 < s_.size() && s_[i_ + 1] == '"' && (i_ == 0 || !ident_char(s_[i_ - 1]))) {
      const size_t open = s_.find('(', i_ + 2);
      if (open == std::string::npos) fail("a raw string without its (");
      std::string close(")");
      close.append(s_, i_ + 2, open - i_ - 2).append("\"");
      const size_t e = s_.find(close, open);
      if (e == std::string::npos) fail("an unterminated raw string");
      copy_to(e + close.size());
      return true;
    }
    // A ' inside a number is a digit separator (1'000), not a character literal.
    if (c == '"' || (c == '\'' && !in_number())) {
      size_t k = i_ + 1;
      while (k < s_.size() && s_[k] != c) {
        if (s_[k] == '\\') ++k;
        if (s_[k] == '\n') fail("a line break inside a literal");
        ++k;
      }
      if (k >= s_.size()) fail("an unterminated literal");
      copy_to(k + 1);
      return true;
    }
    return false;
  }

  bool in_number() const {
    size_t k = i_;
    while (k > 0 && (ident_char(s_[k - 1]) || s_[k - 1] == '\'' || s_[k - 1] == '.')) --k;
    return k < i_ && std::isdigit(static_cast<unsigned char>(s_[k]));
  }

  void copy_to(size_t end) {
    out_.append(s_, i_, end - i_);
    i_ = end;
  }

  // The text inside the parentheses that open at i_ (balanced), leaving i_ after them.
  std::string take_parenthesized() {
    if (s_[i_] != '(') fail("expected (");
    const size_t start = ++i_;
    int depth = 1;
    while (i_ < s_.size() && depth > 0) {
      if (copy_literal_into_nothing()) continue;
      depth += s_[i_] == '(';
      depth -= s_[i_] == ')';
      ++i_;
    }
    if (depth) fail("unbalanced parentheses");
    return s_.substr(start, i_ - 1 - start);
  }
  bool copy_literal_into_nothing() {
    const size_t mark = out_.size();
    if (!copy_literal()) return false;
    out_.resize(mark);
    return true;
  }

  void step() {
    if (copy_literal()) return;
    const char c = s_[i_];
    if (at("<<<")) {
      if (in_launch_) fail("a <<< inside a launch configuration");
      in_launch_ = true;
      launch_depth_ = depth_;
      out_ += " % ::moe::emu::launch_config(";
      i_ += 3;
      return;
    }
    if (in_launch_ && at(">>>") && depth_ == launch_depth_) {
      in_launch_ = false;
      out_ += ")";
      i_ += 3;
      return;
    }
    if (word_at("__shared__") && !shared_) {
      const size_t semi = statement_end();
      const std::string decl = s_.substr(i_ + 10, semi - i_ - 10);
      if (decl.find("extern") == std::string::npos) {
        shared_ = true;
        shared_names_ = declarator_names(decl);
        shared_end_ = semi;
      }
      out_ += "static";
      i_ += 10;
      return;
    }
    if (shared_ && i_ == shared_end_) {
      shared_ = false;
      out_ += ';';
      for (const std::string& n : shared_names_) out_ += " MOE_EMU_SHARED(" + n + ")";
      ++i_;
      return;
    }
    if (word_at("__global__")) {
      if (kernel_ != Kernel::kNone) fail("__global__ twice before a kernel's body");
      kernel_ = Kernel::kBeforeParams;
      bounds_.clear();
      i_ += 10;
      return;
    }
    if (kernel_ == Kernel::kBeforeParams && word_at("__launch_bounds__")) {
      i_ += 17;
      while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) copy_to(i_ + 1);
      const std::string inner = take_parenthesized();
      for (char ch : inner) {  // the lines it spanned stay lines
        if (ch == '\n') out_ += '\n';
        bounds_ += ch == '\n' ? ' ' : ch;
      }
      return;
    }
    if (c == '(') {
      ++depth_;
      if (kernel_ == Kernel::kBeforeParams) {
        kernel_ = Kernel::kInParams;
        params_depth_ = depth_;
      }
    } else if (c == ')') {
      if (kernel_ == Kernel::kInParams && depth_ == params_depth_) kernel_ = Kernel::kAfterParams;
      --depth_;
    } else if (kernel_ == Kernel::kAfterParams && c == ';') {
      kernel_ = Kernel::kNone;  // a declaration
    } else if (kernel_ == Kernel::kAfterParams && c == '{') {
      kernel_ = Kernel::kNone;
      out_ += "{ MOE_EMU_KERNEL_ENTRY(" + bounds_ + ")";
      ++i_;
      return;
    }
    out_ += c;
    ++i_;
  }

  // The ';' that ends the statement starting at i_ (outside brackets and literals).
  size_t statement_end() const {
    int d = 0;
    for (size_t k = i_; k < s_.size(); ++k) {
      const char ch = s_[k];
      if (ch == '(' || ch == '[' || ch == '{') ++d;
      if (ch == ')' || ch == ']' || ch == '}') --d;
      if (ch == ';' && d == 0) return k;
    }
    fail("a __shared__ declaration without its ';'");
  }

  // The names a declaration declares: in each top-level comma-separated part, the last
  // identifier before its first '[' or '=' ("float a[4], b[8]" -> a, b).
  std::vector<std::string> declarator_names(const std::string& decl) const {
    std::vector<std::string> names;
    std::vector<std::string> parts(1);
    int d = 0;
    for (char ch : decl) {
      if (ch == '(' || ch == '[' || ch == '{') ++d;
      if (ch == ')' || ch == ']' || ch == '}') --d;
      if (ch == ',' && d == 0)
        parts.emplace_back();
      else
        parts.back() += ch;
    }
    for (const std::string& p : parts) {
      const size_t stop = std::min(p.find('['), p.find('='));
      const std::string head = p.substr(0, stop);
      size_t e = head.size();
      while (e > 0 && !ident_char(head[e - 1])) --e;
      size_t b = e;
      while (b > 0 && ident_char(head[b - 1])) --b;
      if (b == e) fail("a __shared__ declaration whose name cannot be read");
      names.push_back(head.substr(b, e - b));
    }
    return names;
  }

  const std::string& s_;
  std::string out_;
  size_t i_ = 0;
  int depth_ = 0;
  bool in_launch_ = false;
  int launch_depth_ = 0;
  Kernel kernel_ = Kernel::kNone;
  int params_depth_ = 0;
  std::string bounds_;
  bool shared_ = false;
  size_t shared_end_ = 0;
  std::vector<std::string> shared_names_;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: moe-cuda-emu-rewrite INPUT.cu OUTPUT.cpp\n";
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  if (!in) {
    std::cerr << "moe-cuda-emu-rewrite: cannot read " << argv[1] << "\n";
    return 2;
  }
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string src = buf.str();
  std::string out;
  try {
    out = "#line 1 \"" + std::string(argv[1]) + "\"\n" + Rewriter(src).run();
  } catch (const std::exception& e) {
    std::cerr << argv[1] << ": " << e.what() << "\n";
    return 1;
  }
  std::ofstream o(argv[2], std::ios::binary | std::ios::trunc);
  o << out;
  if (!o) {
    std::cerr << "moe-cuda-emu-rewrite: cannot write " << argv[2] << "\n";
    return 1;
  }
  return 0;
}
