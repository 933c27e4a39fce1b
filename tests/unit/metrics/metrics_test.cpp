// Metrics: the exposition format, the conventions the registry enforces, merging, the endpoint.

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <utility> // before Boost 1.74's Asio (std::exchange)

#include <boost/asio.hpp>
#include <gtest/gtest.h>
#include <unistd.h>

#include "k8slb/error.hpp"
#include "k8slb/metrics.hpp"

namespace k8slb::metrics {
namespace {

TEST(Exposition, Counters) {
  Registry registry;
  auto& requests = registry.counter("k8slb_api_requests_total", "API requests.", {"verb", "code"});
  requests.add({"GET", "200"});
  requests.add({"GET", "200"}, 2);
  requests.add({"PUT", "409"});
  EXPECT_EQ(registry.exposition(), "# HELP k8slb_api_requests_total API requests.\n"
                                   "# TYPE k8slb_api_requests_total counter\n"
                                   "k8slb_api_requests_total{verb=\"GET\",code=\"200\"} 3\n"
                                   "k8slb_api_requests_total{verb=\"PUT\",code=\"409\"} 1\n");
}

TEST(Exposition, UnlabelledFamiliesShowZeroBeforeTheirFirstValue) {
  Registry registry;
  registry.counter("k8slb_reloads_total", "Reloads.");
  registry.histogram("k8slb_apply_duration_seconds", "Apply.", {0.1, 1});
  EXPECT_EQ(registry.exposition(), "# HELP k8slb_reloads_total Reloads.\n"
                                   "# TYPE k8slb_reloads_total counter\n"
                                   "k8slb_reloads_total 0\n"
                                   "# HELP k8slb_apply_duration_seconds Apply.\n"
                                   "# TYPE k8slb_apply_duration_seconds histogram\n"
                                   "k8slb_apply_duration_seconds_bucket{le=\"+Inf\"} 0\n"
                                   "k8slb_apply_duration_seconds_sum 0\n"
                                   "k8slb_apply_duration_seconds_count 0\n");
}

TEST(Exposition, GaugesSetAndCleared) {
  Registry registry;
  auto& state = registry.gauge("k8slb_vrrp_state", "State.", {"instance", "state"});
  state.set({"VI_1", "MASTER"}, 1);
  state.set({"VI_1", "MASTER"}, 0.5);
  EXPECT_NE(registry.exposition().find("k8slb_vrrp_state{instance=\"VI_1\",state=\"MASTER\"} 0.5\n"),
            std::string::npos);
  state.clear();
  EXPECT_EQ(registry.exposition(), "# HELP k8slb_vrrp_state State.\n# TYPE k8slb_vrrp_state gauge\n");
}

TEST(Exposition, HistogramBucketsAreCumulative) {
  Registry registry;
  auto& duration = registry.histogram("k8slb_x_seconds", "X.", {0.1, 1}, {"daemon"});
  for (double value : {0.05, 0.1, 0.5, 3.0})
    duration.observe({"haproxy"}, value);
  EXPECT_EQ(registry.exposition(), "# HELP k8slb_x_seconds X.\n"
                                   "# TYPE k8slb_x_seconds histogram\n"
                                   "k8slb_x_seconds_bucket{daemon=\"haproxy\",le=\"0.1\"} 2\n"
                                   "k8slb_x_seconds_bucket{daemon=\"haproxy\",le=\"1\"} 3\n"
                                   "k8slb_x_seconds_bucket{daemon=\"haproxy\",le=\"+Inf\"} 4\n"
                                   "k8slb_x_seconds_sum{daemon=\"haproxy\"} 3.65\n"
                                   "k8slb_x_seconds_count{daemon=\"haproxy\"} 4\n");
}

TEST(Exposition, LabelValuesAndHelpAreEscaped) {
  Registry registry;
  registry.gauge("k8slb_g", "Line one\nback\\slash \"quoted\".", {"name"}).set({"a\"b\\c\nd"}, 1);
  EXPECT_EQ(registry.exposition(), "# HELP k8slb_g Line one\\nback\\\\slash \"quoted\".\n"
                                   "# TYPE k8slb_g gauge\n"
                                   "k8slb_g{name=\"a\\\"b\\\\c\\nd\"} 1\n");
}

TEST(Registry, ConventionsAreEnforced) {
  struct Case {
    std::string name;
    Type type;
    std::vector<std::string> labels;
    bool accepted;
  };
  const std::vector<Case> cases = {
      {"k8slb_reloads_total", Type::counter, {}, true},
      {"k8slb_reloads", Type::counter, {}, false},      // a counter without _total
      {"k8slb_vips_total", Type::gauge, {}, false},     // a gauge named like a counter
      {"reloads_total", Type::counter, {}, false},      // no prefix
      {"k8slb_bad-name", Type::gauge, {}, false},       // not a metric name
      {"k8slb_vips", Type::gauge, {"pool", "family"}, true},
      {"k8slb_vips", Type::gauge, {"le"}, false},       // reserved for buckets
      {"k8slb_vips", Type::gauge, {"__name"}, false},   // reserved prefix
      {"k8slb_vips", Type::gauge, {"bad-label"}, false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    Registry registry;
    auto declare = [&] {
      if (c.type == Type::counter)
        registry.counter(c.name, "h", c.labels);
      else
        registry.gauge(c.name, "h", c.labels);
    };
    if (c.accepted)
      EXPECT_NO_THROW(declare());
    else
      EXPECT_THROW(declare(), std::logic_error);
  }
}

TEST(Registry, DeclaringAgainGivesTheSameFamily) {
  Registry registry;
  auto& first = registry.counter("k8slb_a_total", "A.", {"x"});
  EXPECT_EQ(&registry.counter("k8slb_a_total", "A.", {"x"}), &first);
  EXPECT_THROW(registry.counter("k8slb_a_total", "A.", {"y"}), std::logic_error);
  EXPECT_THROW(first.add({"one", "two"}), std::logic_error); // label values must match names
  EXPECT_THROW(first.add({"one"}, -1), std::logic_error);     // counters only go up
}

TEST(Merge, FamiliesFromSeveralFilesComeOnce) {
  const std::vector<std::string> texts = {
      "# HELP k8slb_api_requests_total API.\n# TYPE k8slb_api_requests_total counter\n"
      "k8slb_api_requests_total{component=\"k8slb-watch\",code=\"200\"} 4\n"
      "# HELP k8slb_h_seconds H.\n# TYPE k8slb_h_seconds histogram\n"
      "k8slb_h_seconds_bucket{le=\"+Inf\"} 1\nk8slb_h_seconds_sum 0.5\nk8slb_h_seconds_count 1\n",
      "# HELP k8slb_api_requests_total API.\n# TYPE k8slb_api_requests_total counter\n"
      "k8slb_api_requests_total{component=\"k8slb-apply\",code=\"201\"} 2\n"
      "# a comment\n\n",
  };
  EXPECT_EQ(merge_expositions(texts), "# HELP k8slb_api_requests_total API.\n"
                                      "# TYPE k8slb_api_requests_total counter\n"
                                      "k8slb_api_requests_total{component=\"k8slb-watch\",code=\"200\"} 4\n"
                                      "k8slb_api_requests_total{component=\"k8slb-apply\",code=\"201\"} 2\n"
                                      "# HELP k8slb_h_seconds H.\n# TYPE k8slb_h_seconds histogram\n"
                                      "k8slb_h_seconds_bucket{le=\"+Inf\"} 1\nk8slb_h_seconds_sum 0.5\n"
                                      "k8slb_h_seconds_count 1\n");
}

// A plain HTTP/1.0 exchange, as a scraper makes it.
std::string fetch(const std::string& address, const std::string& request) {
  namespace asio = boost::asio;
  asio::io_context io;
  auto colon = address.rfind(':');
  auto host = address.substr(0, colon);
  if (host.front() == '[')
    host = host.substr(1, host.size() - 2);
  asio::ip::tcp::socket socket(io);
  socket.connect({asio::ip::make_address(host), static_cast<unsigned short>(std::stoi(address.substr(colon + 1)))});
  asio::write(socket, asio::buffer(request));
  std::string answer;
  boost::system::error_code error;
  char chunk[4096];
  for (std::size_t n; (n = socket.read_some(asio::buffer(chunk), error)) > 0 || !error;)
    answer.append(chunk, n);
  return answer;
}

TEST(Server, ServesMetricsAndNothingElse) {
  Registry registry;
  registry.counter("k8slb_reloads_total", "Reloads.").add(7);
  Server server("127.0.0.1:0", [&] { return registry.exposition(); });
  auto address = server.local_address();
  struct Case {
    std::string request, status, body_part;
  };
  const std::vector<Case> cases = {
      {"GET /metrics HTTP/1.0\r\n\r\n", "HTTP/1.0 200 OK", "k8slb_reloads_total 7\n"},
      {"GET /metrics?x=1 HTTP/1.0\r\n\r\n", "HTTP/1.0 200 OK", "# TYPE k8slb_reloads_total counter"},
      {"GET / HTTP/1.0\r\n\r\n", "HTTP/1.0 200 OK", "href=\"/metrics\""},
      {"GET /secret HTTP/1.0\r\n\r\n", "HTTP/1.0 404 Not Found", "not found"},
      {"POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n", "HTTP/1.0 405 Method Not Allowed", "GET"},
      {"HEAD /metrics HTTP/1.0\r\n\r\n", "HTTP/1.0 200 OK", "Content-Length: "},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.request);
    auto answer = fetch(address, c.request);
    EXPECT_EQ(answer.substr(0, answer.find("\r\n")), c.status);
    EXPECT_NE(answer.find(c.body_part), std::string::npos) << answer;
  }
  auto metrics = fetch(address, "GET /metrics HTTP/1.0\r\n\r\n");
  EXPECT_NE(metrics.find("Content-Type: text/plain; version=0.0.4; charset=utf-8"), std::string::npos);
  auto head = fetch(address, "HEAD /metrics HTTP/1.0\r\n\r\n");
  EXPECT_EQ(head.substr(head.find("\r\n\r\n") + 4), "");
}

TEST(Server, AddressesParsedOrRefused) {
  struct Case {
    std::string address;
    bool served;
  };
  const std::vector<Case> cases = {
      {"127.0.0.1:0", true}, {"[::1]:0", true},      {":0", true},           {"", false},
      {"9402", false},       {"localhost:0", false}, {"127.0.0.1:70000", false}, {"[127.0.0.1]:0", false},
      {"1.2.3:0", false},    {"127.0.0.1:", false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.address);
    if (c.served)
      EXPECT_NO_THROW(Server(c.address, [] { return std::string(); }));
    else
      EXPECT_THROW(Server(c.address, [] { return std::string(); }), Error);
  }
}

TEST(Server, AnAddressInUseIsAnError) {
  Server first("127.0.0.1:0", [] { return std::string(); });
  try {
    Server second(first.local_address(), [] { return std::string(); });
    FAIL() << "a second server listened on " << first.local_address();
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("cannot listen"), std::string::npos) << error.what();
  }
}

TEST(FileWriter, KeepsTheFileAndRemovesItAtTheEnd) {
  auto directory = std::filesystem::temp_directory_path() / ("k8slb-metrics-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(directory);
  auto path = (directory / "k8slb-watch.prom").string();
  Registry registry;
  auto& restarts = registry.counter("k8slb_watch_restarts_total", "Restarts.");
  {
    FileWriter writer(registry, path, std::chrono::milliseconds(20));
    restarts.add(3);
    std::string text;
    for (int i = 0; i < 200 && text.find("k8slb_watch_restarts_total 3") == std::string::npos; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      std::ifstream in(path);
      text.assign(std::istreambuf_iterator<char>(in), {});
    }
    EXPECT_NE(text.find("k8slb_watch_restarts_total 3\n"), std::string::npos) << text;
    auto texts = read_directory(directory.string());
    ASSERT_EQ(texts.size(), 2u); // the file, and the ages
    EXPECT_NE(texts[1].find("k8slb_metrics_file_age_seconds{file=\"k8slb-watch.prom\"}"), std::string::npos);
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  std::filesystem::remove_all(directory);
}

} // namespace
} // namespace k8slb::metrics
