// Retries with exponential backoff and full jitter, responses and API errors, merge patches.
#include "k8slb/kube.hpp"

#include "text.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>

namespace k8slb::kube {
namespace {

using detail::lower;

std::string_view reason_phrase(int status) {
  switch (status) {
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 409: return "Conflict";
  case 410: return "Gone";
  case 415: return "Unsupported Media Type";
  case 422: return "Unprocessable Entity";
  case 429: return "Too Many Requests";
  case 500: return "Internal Server Error";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  default: return "";
  }
}

std::string api_error_message(const std::string& method, const std::string& url, int status,
                              const std::string& server_message) {
  std::string text = method + " " + url + ": " + std::to_string(status);
  auto phrase = reason_phrase(status);
  if (!phrase.empty()) text += " " + std::string(phrase);
  if (!server_message.empty()) text += ": " + server_message;
  return text;
}

} // namespace

std::chrono::milliseconds backoff_delay(const RetryPolicy& policy, int retry, std::mt19937_64& rng) {
  if (retry < 1) retry = 1;
  // base * 2^(retry-1), without overflow: stop doubling once past the cap.
  std::int64_t ceiling = policy.base.count();
  for (int i = 1; i < retry && ceiling < policy.cap.count(); ++i) ceiling *= 2;
  ceiling = std::min<std::int64_t>(ceiling, policy.cap.count());
  if (ceiling <= 0) return std::chrono::milliseconds(0);
  std::uniform_int_distribution<std::int64_t> draw(0, ceiling);
  return std::chrono::milliseconds(draw(rng));
}

std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view value) {
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
  if (value.empty() || value.size() > 9) return std::nullopt;
  std::int64_t seconds = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
  if (ec != std::errc() || end != value.data() + value.size() || seconds < 0) return std::nullopt;
  return std::chrono::milliseconds(seconds * 1000);
}

bool is_retryable_status(int status) { return status == 429 || (status >= 500 && status < 600); }

std::string Response::header(std::string_view name) const {
  auto it = headers.find(lower(name));
  return it == headers.end() ? "" : it->second;
}

std::string Response::status_message() const {
  auto parsed = json::parse(body, nullptr, false);
  if (parsed.is_object() && parsed.value("kind", "") == "Status") {
    auto it = parsed.find("message");
    if (it != parsed.end() && it->is_string()) return it->get<std::string>();
    auto reason = parsed.find("reason");
    if (reason != parsed.end() && reason->is_string()) return reason->get<std::string>();
  }
  std::string text = body;
  std::replace(text.begin(), text.end(), '\n', ' ');
  while (!text.empty() && text.back() == ' ') text.pop_back();
  if (text.size() > 200) text = text.substr(0, 200) + "...";
  return text;
}

ApiError::ApiError(std::string method, std::string url, int status, std::string server_message)
    : Error(api_error_message(method, url, status, server_message)), method_(std::move(method)),
      url_(std::move(url)), status_(status), server_message_(std::move(server_message)) {}

Response run_with_retries(const RetryPolicy& policy, std::mt19937_64& rng,
                          const std::function<Response()>& attempt,
                          const std::function<void(std::chrono::milliseconds)>& sleep) {
  const int attempts = std::max(1, policy.max_attempts);
  for (int n = 1;; ++n) {
    std::chrono::milliseconds delay{0};
    try {
      Response response = attempt();
      if (!is_retryable_status(response.status) || n >= attempts) return response;
      delay = backoff_delay(policy, n, rng);
      if (response.status == 429 || response.status == 503) {
        if (auto after = parse_retry_after(response.header("retry-after")))
          delay = std::min(*after, policy.max_retry_after);
      }
    } catch (const TransportError&) {
      if (n >= attempts) throw;
      delay = backoff_delay(policy, n, rng);
    }
    sleep(delay);
  }
}

json make_merge_patch(const json& from, const json& to) {
  if (!from.is_object() || !to.is_object()) return to;
  json patch = json::object();
  for (auto it = from.begin(); it != from.end(); ++it) {
    if (!to.contains(it.key())) patch[it.key()] = nullptr;
  }
  for (auto it = to.begin(); it != to.end(); ++it) {
    auto old = from.find(it.key());
    if (old == from.end()) {
      patch[it.key()] = it.value();
    } else if (*old != it.value()) {
      patch[it.key()] = (old->is_object() && it->is_object()) ? make_merge_patch(*old, *it) : *it;
    }
  }
  return patch;
}

} // namespace k8slb::kube
