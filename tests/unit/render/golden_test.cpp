// Golden files: the representative input (tests/golden/input.yaml) rendered for each proxy must
// match tests/golden/* byte for byte. On a mismatch the test prints a line diff. To accept a
// change on purpose: K8SLB_UPDATE_GOLDEN=1 ctest -R render.Golden (then review `git diff`).

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "fixture.hpp"
#include "k8slb/render.hpp"

namespace k8slb::render {
namespace {

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// A unified-style diff (no hunks: every line, '-' expected, '+' actual, ' ' both), trimmed to
// the changed lines with two lines of context.
std::string line_diff(const std::string& expected, const std::string& actual) {
  auto a = lines_of(expected), b = lines_of(actual);
  std::vector<std::vector<int>> lcs(a.size() + 1, std::vector<int>(b.size() + 1, 0));
  for (int i = static_cast<int>(a.size()) - 1; i >= 0; --i)
    for (int j = static_cast<int>(b.size()) - 1; j >= 0; --j)
      lcs[i][j] = a[i] == b[j] ? lcs[i + 1][j + 1] + 1 : std::max(lcs[i + 1][j], lcs[i][j + 1]);
  std::vector<std::string> out;
  std::size_t i = 0, j = 0;
  while (i < a.size() || j < b.size()) {
    if (i < a.size() && j < b.size() && a[i] == b[j]) out.push_back("  " + a[i++]), ++j;
    else if (j < b.size() && (i == a.size() || lcs[i][j + 1] >= lcs[i + 1][j])) out.push_back("+ " + b[j++]);
    else out.push_back("- " + a[i++]);
  }
  std::string text;
  for (std::size_t k = 0; k < out.size(); ++k) {
    bool near = false;
    for (std::size_t m = (k < 2 ? 0 : k - 2); m < std::min(out.size(), k + 3); ++m)
      if (out[m][0] != ' ') near = true;
    if (near) text += out[k] + "\n";
  }
  return text;
}

std::string problems_text(const Output& output) {
  std::string text;
  for (const auto& problem : output.problems) text += problem.to_string() + " [" + problem.reason + "]\n";
  return text;
}

void expect_golden(const std::string& name, const std::string& actual) {
  SCOPED_TRACE(name);
  const std::string path = testing::golden_dir() + "/" + name;
  if (const char* update = std::getenv("K8SLB_UPDATE_GOLDEN"); update && std::string(update) == "1") {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << actual;
    return;
  }
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(in) << path << " is missing; run with K8SLB_UPDATE_GOLDEN=1 to create it";
  std::stringstream expected;
  expected << in.rdbuf();
  if (expected.str() != actual)
    ADD_FAILURE() << path << " differs ('-' golden, '+' rendered); "
                  << "K8SLB_UPDATE_GOLDEN=1 regenerates it:\n"
                  << line_diff(expected.str(), actual);
}

TEST(Golden, Haproxy) {
  auto output = render_proxy(testing::golden_input(Proxy::haproxy));
  expect_golden("haproxy.cfg", output.files.at("haproxy.cfg"));
  expect_golden("haproxy-servers.json", output.files.at("haproxy-servers.json"));
  expect_golden("haproxy-problems.txt", problems_text(output));
}

TEST(Golden, Nginx) {
  auto output = render_proxy(testing::golden_input(Proxy::nginx));
  expect_golden("nginx.conf", output.files.at("nginx.conf"));
  expect_golden("nginx-problems.txt", problems_text(output));
}

TEST(Golden, Keepalived) {
  auto output = render_keepalived(testing::golden_input(Proxy::haproxy));
  expect_golden("keepalived.conf", output.files.at("keepalived.conf"));
  expect_golden("keepalived-problems.txt", problems_text(output));
}

TEST(Golden, KubeproxyRendersKeepalivedOnly) {
  auto output = render_all(testing::golden_input(Proxy::kubeproxy));
  ASSERT_EQ(output.files.size(), 1u);
  EXPECT_EQ(output.files.count("keepalived.conf"), 1u);
  EXPECT_EQ(output.files.at("keepalived.conf"), render_keepalived(testing::golden_input(Proxy::haproxy)).files.at("keepalived.conf"));
}

TEST(Golden, LineDiffShowsChangedLines) {
  auto diff = line_diff("a\nb\nc\n", "a\nx\nc\n");
  EXPECT_NE(diff.find("- b"), std::string::npos) << diff;
  EXPECT_NE(diff.find("+ x"), std::string::npos) << diff;
}

} // namespace

void expect_bird_golden(const std::string& conf, const std::string& problems) {
  expect_golden("bird.conf", conf);
  expect_golden("bird-problems.txt", problems);
}

} // namespace k8slb::render
