// Kubeconfig parsing and where the configuration comes from.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "k8slb/kube.hpp"

namespace k8slb::kube {
namespace {

// base64 of "-----BEGIN CERTIFICATE-----\nCA\n" etc. are computed, not pasted, so the test
// says what it decodes to.
std::string base64(std::string_view text) {
  static const char* table = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  unsigned buffer = 0;
  int bits = 0;
  for (unsigned char c : text) {
    buffer = (buffer << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(table[(buffer >> bits) & 63]);
    }
  }
  if (bits > 0) out.push_back(table[(buffer << (6 - bits)) & 63]);
  while (out.size() % 4) out.push_back('=');
  return out;
}

const std::string kCaPem = "-----BEGIN CERTIFICATE-----\nQ0E=\n-----END CERTIFICATE-----\n";
const std::string kCertPem = "-----BEGIN CERTIFICATE-----\nY2VydA==\n-----END CERTIFICATE-----\n";
const std::string kKeyPem = "-----BEGIN EC PRIVATE KEY-----\na2V5\n-----END EC PRIVATE KEY-----\n";

// A kubeconfig with two contexts; `user` is the YAML of the user entry's body.
std::string kubeconfig(const std::string& cluster, const std::string& user,
                       const std::string& current = "one") {
  return "apiVersion: v1\nkind: Config\ncurrent-context: " + current +
         "\nclusters:\n- name: c1\n  cluster:\n" + cluster +
         "- name: c2\n  cluster:\n    server: https://192.0.2.20:6443/\n"
         "contexts:\n"
         "- name: one\n  context: {cluster: c1, user: u1}\n"
         "- name: two\n  context: {cluster: c2, user: u1, namespace: k8slb-system}\n"
         "- name: nocluster\n  context: {cluster: missing, user: u1}\n"
         "- name: nouser\n  context: {cluster: c1, user: missing}\n"
         "users:\n- name: u1\n  user:\n" + user;
}

TEST(Kubeconfig, ReadsWhatTheContextNames) {
  const std::string server = "    server: https://192.0.2.10:6443\n";
  struct Case {
    std::string description;
    std::string cluster;
    std::string user;
    std::string context;
    Config expected;
  };
  auto config = [](auto&& edit) {
    Config c;
    c.server = "https://192.0.2.10:6443";
    edit(c);
    return c;
  };
  std::vector<Case> cases = {
      {"bearer token, CA file relative to the kubeconfig",
       server + "    certificate-authority: ca.crt\n", "    token: abc\n", "",
       config([](Config& c) { c.token = "abc"; c.ca_file = "/etc/kube/ca.crt"; })},
      {"tokenFile, CA data decoded",
       server + "    certificate-authority-data: " + base64(kCaPem) + "\n", "    tokenFile: /run/token\n", "",
       config([&](Config& c) { c.token_file = "/run/token"; c.ca_data = kCaPem; })},
      {"client certificate and key as data",
       server, "    client-certificate-data: " + base64(kCertPem) + "\n    client-key-data: " + base64(kKeyPem) + "\n", "",
       config([&](Config& c) { c.client_cert_data = kCertPem; c.client_key_data = kKeyPem; })},
      {"client certificate and key as files",
       server, "    client-certificate: certs/me.crt\n    client-key: /abs/me.key\n", "",
       config([](Config& c) { c.client_cert_file = "/etc/kube/certs/me.crt"; c.client_key_file = "/abs/me.key"; })},
      {"insecure only because the kubeconfig says so",
       server + "    insecure-skip-tls-verify: true\n", "    token: t\n", "",
       config([](Config& c) { c.token = "t"; c.insecure_skip_tls_verify = true; })},
      {"--context picks another cluster and its namespace; trailing slash dropped",
       server, "    token: t\n", "two",
       config([](Config& c) { c.server = "https://192.0.2.20:6443"; c.token = "t"; c.ns = "k8slb-system"; })},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    Config got = parse_kubeconfig(kubeconfig(c.cluster, c.user), "/etc/kube/config", c.context);
    EXPECT_EQ(got.server, c.expected.server);
    EXPECT_EQ(got.token, c.expected.token);
    EXPECT_EQ(got.token_file, c.expected.token_file);
    EXPECT_EQ(got.ca_file, c.expected.ca_file);
    EXPECT_EQ(got.ca_data, c.expected.ca_data);
    EXPECT_EQ(got.client_cert_file, c.expected.client_cert_file);
    EXPECT_EQ(got.client_cert_data, c.expected.client_cert_data);
    EXPECT_EQ(got.client_key_file, c.expected.client_key_file);
    EXPECT_EQ(got.client_key_data, c.expected.client_key_data);
    EXPECT_EQ(got.insecure_skip_tls_verify, c.expected.insecure_skip_tls_verify);
    EXPECT_EQ(got.ns, c.expected.ns);
  }
}

TEST(Kubeconfig, TlsIsVerifiedByDefault) {
  Config got = parse_kubeconfig(kubeconfig("    server: https://192.0.2.10:6443\n", "    token: t\n"),
                                "/k", "");
  EXPECT_FALSE(got.insecure_skip_tls_verify);
}

TEST(Kubeconfig, MissingOrBadFieldsSayWhere) {
  const std::string server = "    server: https://192.0.2.10:6443\n";
  struct Case {
    std::string description;
    std::string text;
    std::string context;
    std::string message; // the whole error text
  };
  std::vector<Case> cases = {
      {"no such context", kubeconfig(server, "    token: t\n"), "three",
       "kubeconfig /k: contexts[three]: no such context"},
      {"current-context unset", "apiVersion: v1\nclusters: []\n", "",
       "kubeconfig /k: current-context: is not set; name a context with --context"},
      {"context names a missing cluster", kubeconfig(server, "    token: t\n"), "nocluster",
       "kubeconfig /k: clusters[missing]: no such cluster"},
      {"context names a missing user", kubeconfig(server, "    token: t\n"), "nouser",
       "kubeconfig /k: users[missing]: no such user"},
      {"cluster without server", kubeconfig("    certificate-authority: ca.crt\n", "    token: t\n"), "",
       "kubeconfig /k: clusters[c1]: cluster.server: is not set"},
      {"server that is not a URL", kubeconfig("    server: 192.0.2.10:6443\n", "    token: t\n"), "",
       "kubeconfig /k: clusters[c1]: cluster.server: must start with https:// (got \"192.0.2.10:6443\")"},
      {"CA data that is not base64", kubeconfig(server + "    certificate-authority-data: '%%%'\n", "    token: t\n"), "",
       "kubeconfig /k: clusters[c1]: certificate-authority-data: is not valid base64"},
      {"certificate without key", kubeconfig(server, "    client-certificate: me.crt\n"), "",
       "kubeconfig /k: users[u1]: user.client-key: is needed with the client certificate"},
      {"exec plugins are not supported", kubeconfig(server, "    exec: {command: aws}\n"), "",
       "kubeconfig /k: users[u1]: user.exec: is not supported by k8slb; use a token, tokenFile or client certificate"},
      {"insecure flag that is not a boolean", kubeconfig(server + "    insecure-skip-tls-verify: maybe\n", "    token: t\n"), "",
       "kubeconfig /k: clusters[c1]: cluster.insecure-skip-tls-verify: must be true or false"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    try {
      parse_kubeconfig(c.text, "/k", c.context);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), c.message);
    }
  }
}

class TempDir {
public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("k8slb-kube-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string write(const std::string& name, const std::string& text) const {
    auto file = path_ / name;
    std::filesystem::create_directories(file.parent_path());
    std::ofstream(file) << text;
    return file.string();
  }
  std::string path() const { return path_.string(); }

private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

TEST(LoadConfig, ResolutionOrder) {
  TempDir dir;
  auto config_at = [&](const std::string& name, const std::string& host) {
    return dir.write(name, kubeconfig("    server: https://" + host + ":6443\n", "    token: t\n"));
  };
  const std::string explicit_file = config_at("explicit", "192.0.2.1");
  const std::string env_file = config_at("env", "192.0.2.2");
  config_at("home/.kube/config", "192.0.2.3");
  dir.write("sa/token", "sa-token\n");
  dir.write("sa/ca.crt", kCaPem);
  dir.write("sa/namespace", "k8slb-system\n");

  struct Case {
    std::string description;
    ConfigOptions options;
    Environment env;
    std::string server;
  };
  auto env = [&](std::string kubeconfig_env, std::string service_host) {
    Environment e;
    e.kubeconfig_env = std::move(kubeconfig_env);
    e.home = dir.path() + "/home";
    e.service_host = std::move(service_host);
    e.service_port = "443";
    e.service_account_dir = dir.path() + "/sa";
    return e;
  };
  std::vector<Case> cases = {
      {"--kubeconfig wins over everything", {explicit_file, ""}, env(env_file, "192.0.2.9"), "https://192.0.2.1:6443"},
      {"then the first file of $KUBECONFIG", {}, env(env_file + ":" + explicit_file, "192.0.2.9"), "https://192.0.2.2:6443"},
      {"then in-cluster", {}, env("", "192.0.2.9"), "https://192.0.2.9:443"},
      {"then ~/.kube/config", {}, env("", ""), "https://192.0.2.3:6443"},
      {"in-cluster with an IPv6 service host", {}, env("", "2001:db8::1"), "https://[2001:db8::1]:443"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    EXPECT_EQ(load_config(c.options, c.env).server, c.server);
  }
}

TEST(LoadConfig, InClusterReadsTheServiceAccount) {
  TempDir dir;
  dir.write("sa/token", "sa-token\n");
  dir.write("sa/ca.crt", kCaPem);
  dir.write("sa/namespace", "k8slb-system\n");
  Environment env;
  env.service_host = "192.0.2.9";
  env.service_port = "6443";
  env.service_account_dir = dir.path() + "/sa";
  Config config = in_cluster_config(env);
  EXPECT_EQ(config.server, "https://192.0.2.9:6443");
  EXPECT_EQ(config.token_file, dir.path() + "/sa/token"); // re-read by the client on change
  EXPECT_EQ(config.ca_file, dir.path() + "/sa/ca.crt");
  EXPECT_EQ(config.ns, "k8slb-system");
  EXPECT_FALSE(config.insecure_skip_tls_verify);

  env.service_account_dir = dir.path() + "/nothing";
  EXPECT_THROW(in_cluster_config(env), Error);
}

TEST(LoadConfig, MissingKubeconfigIsAClearError) {
  Environment env;
  env.home = "/nonexistent-home";
  try {
    load_config({}, env);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "kubeconfig /nonexistent-home/.kube/config: does not exist");
  }
}

} // namespace
} // namespace k8slb::kube
