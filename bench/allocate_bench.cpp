// Benchmark: allocate() over 10,000 and 100,000 Services across IPv4 and IPv6 pools, a mix of
// dynamic, static, existing, shared and dual-stack requests, given in shuffled order.
// Prints wall time per run and per Service, and the growth from the smaller to the larger
// size next to what n log n predicts.
//
//   bench_allocate_bench [n ...]     (default: 10000 100000)

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "k8slb/allocate.hpp"
#include "k8slb/ip.hpp"
#include "k8slb/model.hpp"
#include "k8slb/pool.hpp"

namespace {

using namespace k8slb;

model::ServicePort port(const std::string& protocol, int number) {
  model::ServicePort p;
  p.protocol = protocol;
  p.port = number;
  p.target_port = number;
  return p;
}

std::string v6(ip::u128 value) { return ip::Address(ip::Family::v6, value).to_string(); }

// Ten kinds of Service, one per residue of i mod 10:
//   0-4  IPv6 dynamic (pool v6)
//   5    IPv6 static, inside the /64 and outside the /96 range
//   6    IPv6 existing assignment, inside the range
//   7    IPv4 dynamic with a sharing key (100 groups, distinct ports per member)
//   8    IPv4 static shared: the same loadBalancerIP, distinct ports
//   9    PreferDualStack from v4 and v6 (IPv4 runs out after a few hundred: IPv6 only, warned)
std::vector<model::Service> make_services(int n, std::mt19937& rng) {
  const ip::u128 v6_range = ip::Address::parse("2001:db8:0:1::1:0:0").value();
  const ip::u128 v6_static = ip::Address::parse("2001:db8:0:1:8000::").value();
  std::vector<model::Service> services;
  services.reserve(n);
  for (int i = 0; i < n; ++i) {
    model::Service s;
    s.ns = fmt::format("ns{:03}", i % 997);
    s.name = fmt::format("svc{:07}", i);
    s.uid = fmt::format("uid-{}", i);
    s.type = "LoadBalancer";
    s.ports = {port("TCP", 80)};
    switch (i % 10) {
    case 0: case 1: case 2: case 3: case 4:
      s.annotations[model::kAnnotationPool] = "v6";
      break;
    case 5:
      s.annotations[model::kAnnotationPool] = "v6";
      s.load_balancer_ip = v6(v6_static + static_cast<ip::u128>(i));
      break;
    case 6:
      s.annotations[model::kAnnotationPool] = "v6";
      s.ingress_ips = {v6(v6_range + 10'000'000 + static_cast<ip::u128>(i))};
      break;
    case 7:
      s.annotations[model::kAnnotationPool] = "v4";
      s.annotations[model::kAnnotationShare] = fmt::format("group{}", i % 100);
      s.ports = {port("TCP", 1024 + i / 100)};
      break;
    case 8:
      s.annotations[model::kAnnotationPool] = "v4b";
      s.load_balancer_ip = fmt::format("198.51.100.{}", 1 + i % 200);
      s.ports = {port("TCP", 20000 + i / 200)};
      break;
    case 9:
      s.annotations[model::kAnnotationPool] = "v4,v6";
      s.ip_family_policy = "PreferDualStack";
      s.ip_families = {"IPv4", "IPv6"};
      break;
    }
    services.push_back(std::move(s));
  }
  std::shuffle(services.begin(), services.end(), rng);
  return services;
}

struct Measurement {
  int n = 0;
  double seconds = 0;     // wall time, best of the runs
  double cpu_seconds = 0; // CPU time of this process, best of the runs (less disturbed by load)
  std::map<allocate::Outcome, int> outcomes;
  int warned = 0; // kept or assigned with a warning (PreferDualStack without IPv4 left)
};

Measurement measure(int n, const pool::Config& config, int runs) {
  std::mt19937 rng(42);
  std::vector<model::Service> services = make_services(n, rng);
  Measurement m;
  m.n = n;
  m.seconds = m.cpu_seconds = 1e30;
  for (int run = 0; run < runs; ++run) {
    std::clock_t cpu_start = std::clock();
    auto start = std::chrono::steady_clock::now();
    std::vector<allocate::Result> results = allocate::allocate(services, config);
    auto stop = std::chrono::steady_clock::now();
    std::clock_t cpu_stop = std::clock();
    m.seconds = std::min(m.seconds, std::chrono::duration<double>(stop - start).count());
    m.cpu_seconds =
        std::min(m.cpu_seconds, static_cast<double>(cpu_stop - cpu_start) / CLOCKS_PER_SEC);
    if (run == 0)
      for (const auto& result : results) {
        ++m.outcomes[result.outcome];
        if (!result.ips.empty() && result.problem) ++m.warned;
      }
  }
  return m;
}

} // namespace

int main(int argc, char** argv) {
  std::vector<int> sizes;
  for (int i = 1; i < argc; ++i) sizes.push_back(std::atoi(argv[i]));
  if (sizes.empty()) sizes = {10'000, 100'000};

  pool::Config config = pool::parse_config(nlohmann::json::parse(R"({
    "pools": {
      "v4":  {"network": "192.0.2.0/24",     "range": "192.0.2.0/24"},
      "v4b": {"network": "198.51.100.0/24",  "range": "198.51.100.0/25"},
      "v6":  {"network": "2001:db8:0:1::/64", "range": "2001:db8:0:1::1:0:0/96"}
    }
  })"));

  std::vector<Measurement> measurements;
  for (int n : sizes) {
    Measurement m = measure(n, config, n <= 20000 ? 10 : 4);
    fmt::print("n={:>7}  wall {:9.2f} ms {:6.3f} us/Service  cpu {:9.2f} ms {:6.3f} us/Service  ",
               m.n, m.seconds * 1e3, m.seconds * 1e6 / m.n, m.cpu_seconds * 1e3,
               m.cpu_seconds * 1e6 / m.n);
    for (const auto& [outcome, count] : m.outcomes)
      fmt::print(" {}={}", allocate::to_string(outcome), count);
    fmt::print(" (warned {})\n", m.warned);
    measurements.push_back(m);
  }
  for (std::size_t i = 1; i < measurements.size(); ++i) {
    const Measurement& a = measurements[i - 1];
    const Measurement& b = measurements[i];
    double nlogn = (b.n * std::log2(b.n)) / (a.n * std::log2(a.n));
    fmt::print("growth {} -> {}: wall x{:.2f}, cpu x{:.2f} (n log n predicts x{:.2f}, linear x{:.2f})\n",
               a.n, b.n, b.seconds / a.seconds, b.cpu_seconds / a.cpu_seconds, nlogn,
               static_cast<double>(b.n) / a.n);
  }
  return 0;
}
