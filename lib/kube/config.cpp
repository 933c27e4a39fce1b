// Kubernetes client configuration: kubeconfig files and the in-cluster service account.
#include "k8slb/kube.hpp"

#include <cstdlib>
#include <filesystem>

#include "k8slb/documents.hpp"
#include "k8slb/error.hpp"

namespace k8slb::kube {
namespace {

std::string env_or_empty(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

// Standard or URL-safe base64, padding optional, whitespace ignored. nullopt when invalid.
std::optional<std::string> base64_decode(std::string_view text) {
  std::string out;
  unsigned buffer = 0;
  int bits = 0;
  bool padding = false;
  for (char c : text) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (c == '=') {
      padding = true;
      continue;
    }
    int value = base64_value(c);
    if (value < 0 || padding) return std::nullopt;
    buffer = (buffer << 6) | static_cast<unsigned>(value);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xff));
    }
  }
  if (bits >= 6) return std::nullopt; // a dangling sextet cannot end valid base64
  return out;
}

// Finds the entry named `name` in a kubeconfig list (clusters, users, contexts).
const json* find_named(const json& doc, const char* list, const std::string& name) {
  auto it = doc.find(list);
  if (it == doc.end() || !it->is_array()) return nullptr;
  for (const auto& entry : *it) {
    if (entry.is_object() && entry.value("name", "") == name) return &entry;
  }
  return nullptr;
}

std::string string_field(const json& object, const char* field, const std::string& where) {
  auto it = object.find(field);
  if (it == object.end() || it->is_null()) return "";
  if (!it->is_string()) fail(where, field, "must be a string");
  return it->get<std::string>();
}

std::string resolve_path(const std::string& file, const std::filesystem::path& base) {
  if (file.empty()) return file;
  std::filesystem::path p(file);
  if (p.is_absolute() || base.empty()) return file;
  return (base / p).string();
}

std::string decoded(const json& object, const char* field, const std::string& where) {
  std::string text = string_field(object, field, where);
  if (text.empty()) return text;
  auto data = base64_decode(text);
  if (!data) fail(where, field, "is not valid base64");
  return *data;
}

std::string trim(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' '))
    text.pop_back();
  size_t start = 0;
  while (start < text.size() && (text[start] == ' ' || text[start] == '\n')) ++start;
  return text.substr(start);
}

} // namespace

Environment Environment::from_process() {
  Environment env;
  env.kubeconfig_env = env_or_empty("KUBECONFIG");
  env.home = env_or_empty("HOME");
  env.service_host = env_or_empty("KUBERNETES_SERVICE_HOST");
  env.service_port = env_or_empty("KUBERNETES_SERVICE_PORT");
  return env;
}

Config parse_kubeconfig(std::string_view text, std::string_view path, std::string_view context) {
  const std::string source = "kubeconfig " + std::string(path);
  json doc;
  try {
    doc = yaml_to_json(text, source);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail(source, "", e.what());
  }
  if (!doc.is_object()) fail(source, "", "is not a kubeconfig (expected a mapping)");

  std::string context_name(context);
  if (context_name.empty()) {
    context_name = string_field(doc, "current-context", source);
    if (context_name.empty())
      fail(source, "current-context", "is not set; name a context with --context");
  }
  const json* ctx_entry = find_named(doc, "contexts", context_name);
  const std::string ctx_where = source + ": contexts[" + context_name + "]";
  if (!ctx_entry) fail(source, "contexts[" + context_name + "]", "no such context");
  const json ctx = ctx_entry->value("context", json::object());
  if (!ctx.is_object()) fail(ctx_where, "context", "must be a mapping");

  std::string cluster_name = string_field(ctx, "cluster", ctx_where);
  if (cluster_name.empty()) fail(ctx_where, "context.cluster", "is not set");
  const json* cluster_entry = find_named(doc, "clusters", cluster_name);
  if (!cluster_entry) fail(source, "clusters[" + cluster_name + "]", "no such cluster");
  const std::string cluster_where = source + ": clusters[" + cluster_name + "]";
  const json cluster = cluster_entry->value("cluster", json::object());
  if (!cluster.is_object()) fail(cluster_where, "cluster", "must be a mapping");

  const std::filesystem::path base = std::filesystem::path(std::string(path)).parent_path();

  Config config;
  config.source = source + " (context " + context_name + ")";
  config.server = string_field(cluster, "server", cluster_where);
  if (config.server.empty()) fail(cluster_where, "cluster.server", "is not set");
  if (config.server.rfind("https://", 0) != 0 && config.server.rfind("http://", 0) != 0)
    fail(cluster_where, "cluster.server", "must start with https:// (got \"" + config.server + "\")");
  while (!config.server.empty() && config.server.back() == '/') config.server.pop_back();
  config.ca_file = resolve_path(string_field(cluster, "certificate-authority", cluster_where), base);
  config.ca_data = decoded(cluster, "certificate-authority-data", cluster_where);
  if (auto it = cluster.find("insecure-skip-tls-verify"); it != cluster.end() && !it->is_null()) {
    if (!it->is_boolean()) fail(cluster_where, "cluster.insecure-skip-tls-verify", "must be true or false");
    config.insecure_skip_tls_verify = it->get<bool>();
  }

  std::string ns = string_field(ctx, "namespace", ctx_where);
  if (!ns.empty()) config.ns = ns;

  std::string user_name = string_field(ctx, "user", ctx_where);
  if (!user_name.empty()) {
    const json* user_entry = find_named(doc, "users", user_name);
    if (!user_entry) fail(source, "users[" + user_name + "]", "no such user");
    const std::string user_where = source + ": users[" + user_name + "]";
    const json user = user_entry->value("user", json::object());
    if (!user.is_object()) fail(user_where, "user", "must be a mapping");
    config.token = string_field(user, "token", user_where);
    config.token_file = resolve_path(string_field(user, "tokenFile", user_where), base);
    config.client_cert_file = resolve_path(string_field(user, "client-certificate", user_where), base);
    config.client_cert_data = decoded(user, "client-certificate-data", user_where);
    config.client_key_file = resolve_path(string_field(user, "client-key", user_where), base);
    config.client_key_data = decoded(user, "client-key-data", user_where);
    for (const char* unsupported : {"exec", "auth-provider", "username"}) {
      if (user.contains(unsupported) && config.token.empty() && config.token_file.empty() &&
          config.client_cert_file.empty() && config.client_cert_data.empty())
        fail(user_where, std::string("user.") + unsupported,
             "is not supported by k8slb; use a token, tokenFile or client certificate");
    }
    bool has_cert = !config.client_cert_file.empty() || !config.client_cert_data.empty();
    bool has_key = !config.client_key_file.empty() || !config.client_key_data.empty();
    if (has_cert != has_key)
      fail(user_where, has_cert ? "user.client-key" : "user.client-certificate",
           "is needed with the client " + std::string(has_cert ? "certificate" : "key"));
  }
  return config;
}

Config in_cluster_config(const Environment& env) {
  const std::string where = "in-cluster config";
  if (env.service_host.empty()) fail(where, "KUBERNETES_SERVICE_HOST", "is not set (not running in a pod?)");
  std::string port = env.service_port.empty() ? "443" : env.service_port;
  Config config;
  config.source = "in-cluster";
  bool ipv6 = env.service_host.find(':') != std::string::npos;
  config.server = "https://" + (ipv6 ? "[" + env.service_host + "]" : env.service_host) + ":" + port;
  const std::filesystem::path dir(env.service_account_dir);
  config.token_file = (dir / "token").string();
  if (!std::filesystem::exists(config.token_file))
    fail(where, config.token_file, "does not exist (no service account token mounted?)");
  config.ca_file = (dir / "ca.crt").string();
  if (!std::filesystem::exists(config.ca_file)) fail(where, config.ca_file, "does not exist");
  const std::string ns_file = (dir / "namespace").string();
  if (std::filesystem::exists(ns_file)) {
    std::string ns = trim(read_file(ns_file));
    if (!ns.empty()) config.ns = ns;
  }
  return config;
}

Config load_config(const ConfigOptions& options, const Environment& env) {
  std::string path = options.kubeconfig;
  if (path.empty() && !env.kubeconfig_env.empty()) {
    path = env.kubeconfig_env.substr(0, env.kubeconfig_env.find(':'));
  }
  if (path.empty() && !env.service_host.empty()) {
    if (!options.context.empty())
      fail("in-cluster config", "--context", "needs a kubeconfig (--kubeconfig or $KUBECONFIG)");
    return in_cluster_config(env);
  }
  if (path.empty()) {
    if (env.home.empty())
      fail("kubeconfig", "", "no --kubeconfig, $KUBECONFIG, in-cluster service account or $HOME");
    path = env.home + "/.kube/config";
  }
  if (!std::filesystem::exists(path)) fail("kubeconfig " + path, "", "does not exist");
  return parse_kubeconfig(read_file(path), path, options.context);
}

} // namespace k8slb::kube
