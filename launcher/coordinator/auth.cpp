#include "launcher/coordinator/auth.h"

#include <sys/random.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "common/error.h"

namespace moe::coordinator {

std::optional<std::string> read_secret(const std::string& file, const char* env) {
  std::string s;
  if (!file.empty()) {
    std::ifstream in(file);
    if (!in) throw InputError("secret file " + file + ": cannot read it");
    std::getline(in, s);
    if (s.empty()) throw InputError("secret file " + file + ": its first line is empty");
  } else if (const char* v = std::getenv(env); v && *v) {
    s = v;
  } else {
    return std::nullopt;
  }
  while (!s.empty() && (s.back() == '\r' || s.back() == ' ')) s.pop_back();
  if (s.size() < 16)
    throw InputError(std::string("the worker secret (") + (file.empty() ? env : file) + ") has " +
                     std::to_string(s.size()) + " characters, expected at least 16");
  return s;
}

std::vector<std::string> read_api_keys(const std::string& file) {
  std::vector<std::string> keys;
  auto add = [&](std::string k, const std::string& where) {
    while (!k.empty() && (k.back() == '\r' || k.back() == ' ')) k.pop_back();
    while (!k.empty() && k.front() == ' ') k.erase(0, 1);
    if (k.empty() || k[0] == '#') return;
    if (k.size() < 8)
      throw InputError("API key in " + where + " has " + std::to_string(k.size()) +
                       " characters, expected at least 8");
    keys.push_back(std::move(k));
  };
  if (!file.empty()) {
    std::ifstream in(file);
    if (!in) throw InputError("API key file " + file + ": cannot read it");
    for (std::string line; std::getline(in, line);) add(line, file);
    if (keys.empty()) throw InputError("API key file " + file + ": holds no key");
  } else if (const char* v = std::getenv(kApiKeysEnv); v && *v) {
    std::stringstream ss(v);
    for (std::string k; std::getline(ss, k, ',');) add(k, kApiKeysEnv);
  }
  return keys;
}

bool same_secret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ (i < b.size() ? b[i] : 0);
  return diff == 0;
}

std::string random_hex128() {
  unsigned char b[16];
  size_t got = 0;
  while (got < sizeof b) {
    const ssize_t n = getrandom(b + got, sizeof b - got, 0);
    MOE_CHECK(n > 0, "getrandom failed");
    got += size_t(n);
  }
  static const char hex[] = "0123456789abcdef";
  std::string s;
  for (unsigned char c : b) {
    s += hex[c >> 4];
    s += hex[c & 15];
  }
  return s;
}

grpc::Status ClientAuth::check(const std::string& header, std::string* owner) const {
  owner->clear();
  if (keys_.empty()) return grpc::Status::OK;
  const std::string prefix = "Bearer ";
  if (header.rfind(prefix, 0) != 0)
    return {grpc::StatusCode::UNAUTHENTICATED,
            "this server requires an API key: send 'authorization: Bearer <key>' (moe-cli "
            "--api-key or MOE_API_KEY)"};
  const std::string key = header.substr(prefix.size());
  for (size_t i = 0; i < keys_.size(); ++i)
    if (same_secret(key, keys_[i])) {
      *owner = "key-" + std::to_string(i);
      return grpc::Status::OK;
    }
  return {grpc::StatusCode::UNAUTHENTICATED, "the API key is not one this server accepts"};
}

grpc::Status ClientAuth::check(const grpc::ServerContextBase& ctx, std::string* owner) const {
  const auto& md = ctx.client_metadata();
  auto it = md.find(kAuthorizationHeader);
  return check(it == md.end() ? std::string() : std::string(it->second.data(), it->second.size()),
               owner);
}

}  // namespace moe::coordinator
