// Backoff, Retry-After, the retry loop and API error messages.
#include <gtest/gtest.h>

#include "k8slb/kube.hpp"

namespace k8slb::kube {
namespace {

using std::chrono::milliseconds;

TEST(Backoff, FullJitterUnderADoublingCeiling) {
  RetryPolicy policy;
  policy.base = milliseconds(100);
  policy.cap = milliseconds(1000);
  // The ceiling for retry n is min(cap, base * 2^(n-1)): 100, 200, 400, 800, 1000, 1000...
  std::vector<std::int64_t> ceilings = {100, 200, 400, 800, 1000, 1000, 1000};
  std::mt19937_64 rng(7);
  for (size_t i = 0; i < ceilings.size(); ++i) {
    const int retry = static_cast<int>(i) + 1;
    SCOPED_TRACE("retry " + std::to_string(retry));
    std::int64_t highest = 0, lowest = ceilings[i];
    for (int draw = 0; draw < 2000; ++draw) {
      auto delay = backoff_delay(policy, retry, rng).count();
      ASSERT_GE(delay, 0);
      ASSERT_LE(delay, ceilings[i]);
      highest = std::max(highest, delay);
      lowest = std::min(lowest, delay);
    }
    // Full jitter spreads over the whole range, not just near the ceiling.
    EXPECT_GT(highest, ceilings[i] * 9 / 10);
    EXPECT_LT(lowest, ceilings[i] / 10);
  }
  EXPECT_LE(backoff_delay(policy, 1000, rng), milliseconds(1000)); // no overflow far out
}

TEST(Backoff, SameSeedSameSchedule) {
  RetryPolicy policy;
  std::mt19937_64 a(42), b(42), c(43);
  std::vector<milliseconds> first, second, other;
  for (int retry = 1; retry <= 8; ++retry) {
    first.push_back(backoff_delay(policy, retry, a));
    second.push_back(backoff_delay(policy, retry, b));
    other.push_back(backoff_delay(policy, retry, c));
  }
  EXPECT_EQ(first, second);
  EXPECT_NE(first, other);
}

TEST(RetryAfter, DeltaSecondsOnly) {
  struct Case {
    std::string value;
    std::optional<milliseconds> expected;
  };
  std::vector<Case> cases = {
      {"3", milliseconds(3000)},
      {" 1 ", milliseconds(1000)},
      {"0", milliseconds(0)},
      {"", std::nullopt},
      {"-1", std::nullopt},
      {"1.5", std::nullopt},
      {"Wed, 21 Oct 2026 07:28:00 GMT", std::nullopt},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE("\"" + c.value + "\"");
    EXPECT_EQ(parse_retry_after(c.value), c.expected);
  }
}

TEST(RetryableStatus, Table) {
  for (int status : {429, 500, 502, 503, 504}) EXPECT_TRUE(is_retryable_status(status)) << status;
  for (int status : {200, 201, 400, 401, 403, 404, 409, 410, 422}) EXPECT_FALSE(is_retryable_status(status)) << status;
}

Response answer(int status, std::map<std::string, std::string> headers = {}) {
  Response r;
  r.status = status;
  r.headers = std::move(headers);
  return r;
}

// A scripted server: each attempt takes the next answer (a status, or -1 for a connection
// failure). Records the delays the loop slept.
struct Script {
  std::vector<Response> answers; // status 0 = connection failure
  size_t next = 0;
  std::vector<milliseconds> slept;

  Response run(const RetryPolicy& policy) {
    std::mt19937_64 rng(1);
    return run_with_retries(
        policy, rng,
        [this] {
          const Response& r = answers.at(next++);
          if (r.status == 0) throw TransportError("GET https://192.0.2.1/: Connection refused");
          return r;
        },
        [this](milliseconds delay) { slept.push_back(delay); });
  }
};

TEST(RunWithRetries, Scripts) {
  RetryPolicy policy;
  policy.max_attempts = 4;
  policy.base = milliseconds(100);
  policy.cap = milliseconds(400);
  policy.max_retry_after = milliseconds(5000);
  struct Case {
    std::string description;
    std::vector<Response> answers;
    int final_status; // -1: throws TransportError
    size_t attempts;
    std::vector<std::optional<milliseconds>> exact_sleeps; // nullopt: any jittered delay
  };
  std::vector<Case> cases = {
      {"success at once", {answer(200)}, 200, 1, {}},
      {"409 goes back to the caller", {answer(409)}, 409, 1, {}},
      {"404 goes back to the caller", {answer(404)}, 404, 1, {}},
      {"two 500s then success", {answer(500), answer(503), answer(201)}, 201, 3, {std::nullopt, std::nullopt}},
      {"429 with Retry-After waits as told", {answer(429, {{"retry-after", "2"}}), answer(200)}, 200, 2,
       {milliseconds(2000)}},
      {"503 with Retry-After waits as told", {answer(503, {{"retry-after", "1"}}), answer(200)}, 200, 2,
       {milliseconds(1000)}},
      {"Retry-After is capped", {answer(429, {{"retry-after", "3600"}}), answer(200)}, 200, 2,
       {milliseconds(5000)}},
      {"500 ignores Retry-After", {answer(500, {{"retry-after", "9"}}), answer(200)}, 200, 2, {std::nullopt}},
      {"connection refused then success", {answer(0), answer(200)}, 200, 2, {std::nullopt}},
      {"500s until attempts run out", {answer(500), answer(500), answer(500), answer(500), answer(200)}, 500, 4,
       {std::nullopt, std::nullopt, std::nullopt}},
      {"connection refused every time", {answer(0), answer(0), answer(0), answer(0)}, -1, 4,
       {std::nullopt, std::nullopt, std::nullopt}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    Script script;
    script.answers = c.answers;
    if (c.final_status < 0) {
      EXPECT_THROW(script.run(policy), TransportError);
    } else {
      EXPECT_EQ(script.run(policy).status, c.final_status);
    }
    EXPECT_EQ(script.next, c.attempts);
    ASSERT_EQ(script.slept.size(), c.exact_sleeps.size());
    for (size_t i = 0; i < c.exact_sleeps.size(); ++i) {
      if (c.exact_sleeps[i]) {
        EXPECT_EQ(script.slept[i], *c.exact_sleeps[i]);
      } else {
        // retry i+1: jitter under min(cap, base * 2^i)
        EXPECT_LE(script.slept[i], std::min(policy.cap, policy.base * (1 << i)));
      }
    }
  }
}

TEST(ApiError, NamesMethodUrlStatusAndServerMessage) {
  Response conflict;
  conflict.status = 409;
  conflict.body = R"({"kind":"Status","apiVersion":"v1","status":"Failure","message":"the object has been modified","reason":"Conflict","code":409})";
  ApiError error("PUT", "https://192.0.2.1:6443/api/v1/namespaces/default/services/web", conflict.status,
                 conflict.status_message());
  EXPECT_EQ(std::string(error.what()),
            "PUT https://192.0.2.1:6443/api/v1/namespaces/default/services/web: 409 Conflict: the object has been modified");
  EXPECT_EQ(error.status(), 409);

  Response plain;
  plain.status = 502;
  plain.body = "bad gateway\n";
  EXPECT_EQ(plain.status_message(), "bad gateway");
}

TEST(MergePatch, TurnsFromIntoTo) {
  struct Case {
    std::string description;
    json from;
    json to;
    json patch;
  };
  std::vector<Case> cases = {
      {"status ingress set",
       {{"status", {{"loadBalancer", json::object()}}}},
       {{"status", {{"loadBalancer", {{"ingress", {{{"ip", "192.0.2.10"}, {"ipMode", "Proxy"}}}}}}}}},
       {{"status", {{"loadBalancer", {{"ingress", {{{"ip", "192.0.2.10"}, {"ipMode", "Proxy"}}}}}}}}}},
      {"removed field becomes null",
       {{"metadata", {{"annotations", {{"a", "1"}, {"b", "2"}}}}}},
       {{"metadata", {{"annotations", {{"a", "1"}}}}}},
       {{"metadata", {{"annotations", {{"b", nullptr}}}}}}},
      {"arrays are replaced whole",
       {{"ips", {"192.0.2.1", "192.0.2.2"}}},
       {{"ips", {"192.0.2.2"}}},
       {{"ips", {"192.0.2.2"}}}},
      {"nothing changed", {{"a", 1}}, {{"a", 1}}, json::object()},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    json patch = make_merge_patch(c.from, c.to);
    EXPECT_EQ(patch, c.patch);
    json applied = c.from;
    applied.merge_patch(patch); // RFC 7386, as the server applies it
    EXPECT_EQ(applied, c.to);
  }
}

} // namespace
} // namespace k8slb::kube
