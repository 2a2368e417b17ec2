#pragma once
// Who may talk to the coordinator: the worker job proves itself with a shared secret, clients
// (where API keys are on) with one of the keys. Secrets come from a file or the environment,
// never from the command line (where `ps` shows them).
#include <grpcpp/grpcpp.h>

#include <optional>
#include <string>
#include <vector>

namespace moe::coordinator {

// gRPC metadata keys (lower case, as gRPC wants them).
inline constexpr char kWorkerSecretHeader[] = "x-moe-worker-secret";
inline constexpr char kAuthorizationHeader[] = "authorization";  // "Bearer <key>"
inline constexpr char kWorkerSecretEnv[] = "MOE_WORKER_SECRET";
inline constexpr char kApiKeysEnv[] = "MOE_API_KEYS";  // comma-separated
inline constexpr char kApiKeyEnv[] = "MOE_API_KEY";    // a client's own key

// The secret from `file` (its first line) when given, else from `env`; nullopt when neither
// has one. Throws InputError for an unreadable or empty file, or one shorter than 16 bytes.
std::optional<std::string> read_secret(const std::string& file, const char* env);
// One key per line ('#' starts a comment) from `file`, else MOE_API_KEYS split on commas.
std::vector<std::string> read_api_keys(const std::string& file);
// Equal in time independent of where they differ.
bool same_secret(const std::string& a, const std::string& b);
// 128 random bits from the kernel, as 32 hex digits.
std::string random_hex128();

class ClientAuth {
 public:
  explicit ClientAuth(std::vector<std::string> keys) : keys_(std::move(keys)) {}
  bool on() const { return !keys_.empty(); }
  // OK with `*owner` set to the key's identity ("" when keys are off), or UNAUTHENTICATED.
  grpc::Status check(const std::string& authorization_header, std::string* owner) const;
  grpc::Status check(const grpc::ServerContextBase& ctx, std::string* owner) const;

 private:
  std::vector<std::string> keys_;
};

}  // namespace moe::coordinator
