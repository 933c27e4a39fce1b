// The HTTP edge: libcurl requests to the API server with bearer tokens or client
// certificates, TLS verified unless the kubeconfig says otherwise.
#include "k8slb/kube.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <exception>
#include <mutex>
#include <thread>

#include <curl/curl.h>

#include "k8slb/documents.hpp"
#include "k8slb/metrics.hpp"

#ifndef K8SLB_VERSION
#define K8SLB_VERSION "dev"
#endif

namespace k8slb::kube {
namespace {

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct EasyDeleter {
  void operator()(CURL* curl) const { curl_easy_cleanup(curl); }
};
struct ListDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using Easy = std::unique_ptr<CURL, EasyDeleter>;
using HeaderList = std::unique_ptr<curl_slist, ListDeleter>;

std::string trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  return std::string(text);
}

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto* response = static_cast<Response*>(user);
  std::string_view line(data, size * count);
  if (line.rfind("HTTP/", 0) == 0) {
    response->headers.clear(); // a new response (after 100 Continue or a redirect)
  } else if (auto colon = line.find(':'); colon != std::string_view::npos) {
    std::string name = trim(line.substr(0, colon));
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    response->headers[name] = trim(line.substr(colon + 1));
  }
  return size * count;
}

size_t on_body(char* data, size_t size, size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

curl_blob blob(const std::string& data) {
  curl_blob b{};
  b.data = const_cast<char*>(data.data());
  b.len = data.size();
  b.flags = CURL_BLOB_COPY;
  return b;
}

// Sets URL, auth, TLS and common options on a handle. `headers` must outlive the transfer.
void setup(CURL* curl, const Config& config, const std::string& url, const std::string& token,
           HeaderList& headers, std::string_view content_type) {
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(config.connect_timeout.count()));
  curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https,http");
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "k8slb/" K8SLB_VERSION);
  curl_slist* list = nullptr;
  list = curl_slist_append(list, "Accept: application/json");
  if (!content_type.empty())
    list = curl_slist_append(list, ("Content-Type: " + std::string(content_type)).c_str());
  if (!token.empty()) list = curl_slist_append(list, ("Authorization: Bearer " + token).c_str());
  headers.reset(list);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);

  if (config.insecure_skip_tls_verify) {
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
  } else {
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
  }
  if (!config.ca_data.empty()) {
    curl_blob b = blob(config.ca_data);
    curl_easy_setopt(curl, CURLOPT_CAINFO_BLOB, &b);
  } else if (!config.ca_file.empty()) {
    curl_easy_setopt(curl, CURLOPT_CAINFO, config.ca_file.c_str());
  }
  if (!config.client_cert_data.empty()) {
    curl_blob b = blob(config.client_cert_data);
    curl_easy_setopt(curl, CURLOPT_SSLCERT_BLOB, &b);
    curl_easy_setopt(curl, CURLOPT_SSLCERTTYPE, "PEM");
  } else if (!config.client_cert_file.empty()) {
    curl_easy_setopt(curl, CURLOPT_SSLCERT, config.client_cert_file.c_str());
    curl_easy_setopt(curl, CURLOPT_SSLCERTTYPE, "PEM");
  }
  if (!config.client_key_data.empty()) {
    curl_blob b = blob(config.client_key_data);
    curl_easy_setopt(curl, CURLOPT_SSLKEY_BLOB, &b);
    curl_easy_setopt(curl, CURLOPT_SSLKEYTYPE, "PEM");
  } else if (!config.client_key_file.empty()) {
    curl_easy_setopt(curl, CURLOPT_SSLKEY, config.client_key_file.c_str());
    curl_easy_setopt(curl, CURLOPT_SSLKEYTYPE, "PEM");
  }
}

void set_method(CURL* curl, std::string_view method, std::string_view body) {
  if (method == "GET") {
    curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    return;
  }
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, std::string(method).c_str());
  if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH") {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    curl_easy_setopt(curl, CURLOPT_COPYPOSTFIELDS, std::string(body).c_str());
  }
}

// A watch event carries one object; the API server stores objects of at most 1.5 MiB.
constexpr size_t kMaxWatchLine = size_t{16} << 20;

// State of a streamed transfer.
struct Stream {
  CURL* curl = nullptr;
  Response* response = nullptr;
  const std::function<bool(std::string_view)>* on_line = nullptr;
  std::stop_token stop;
  std::string pending; // a line not yet ended
  bool stopped_by_caller = false;
  long status = 0;
  std::exception_ptr error; // thrown by on_line: never let it cross curl's C frames
};

size_t on_stream(char* data, size_t size, size_t count, void* user) {
  auto* stream = static_cast<Stream*>(user);
  const size_t total = size * count;
  if (stream->status == 0) curl_easy_getinfo(stream->curl, CURLINFO_RESPONSE_CODE, &stream->status);
  if (stream->status < 200 || stream->status >= 300) {
    stream->response->body.append(data, total);
    return total;
  }
  stream->pending.append(data, total);
  if (stream->pending.size() > kMaxWatchLine && stream->pending.find('\n') == std::string::npos) {
    // A line that does not end: memory is bounded, the connection dropped (the caller lists
    // again: the stream cannot be trusted from here).
    stream->error = std::make_exception_ptr(
        Error("watch event: a line longer than " + std::to_string(kMaxWatchLine) + " bytes"));
    stream->stopped_by_caller = true;
    return 0;
  }
  size_t start = 0;
  while (true) {
    size_t end = stream->pending.find('\n', start);
    if (end == std::string::npos) break;
    std::string_view line(stream->pending.data() + start, end - start);
    start = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    bool more = false;
    try {
      more = (*stream->on_line)(line);
    } catch (...) {
      stream->error = std::current_exception();
    }
    if (!more || stream->stop.stop_requested()) {
      stream->stopped_by_caller = true;
      return 0; // aborts the transfer
    }
  }
  stream->pending.erase(0, start);
  return total;
}

int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* stream = static_cast<Stream*>(user);
  if (stream->stop.stop_requested()) {
    stream->stopped_by_caller = true;
    return 1;
  }
  return 0;
}

} // namespace

// One curl share handle per Client: TLS sessions and DNS answers are shared by the requests of
// every thread (curl calls lock/unlock around each use). Connections are not (curl does not
// support sharing them between concurrent threads); each thread keeps one easy handle for
// its requests instead, whose connection cache keeps the connection open between requests, so
// paging through a list or writing many statuses does not pay a handshake per request.
struct Client::Shared {
  CURLSH* handle = nullptr;
  std::mutex locks[CURL_LOCK_DATA_LAST];

  Shared() {
    handle = curl_share_init();
    if (!handle) return;
    curl_share_setopt(handle, CURLSHOPT_LOCKFUNC, &Shared::lock);
    curl_share_setopt(handle, CURLSHOPT_UNLOCKFUNC, &Shared::unlock);
    curl_share_setopt(handle, CURLSHOPT_USERDATA, this);
    curl_share_setopt(handle, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    curl_share_setopt(handle, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
  }
  ~Shared() {
    if (handle) curl_share_cleanup(handle);
  }
  static void lock(CURL*, curl_lock_data data, curl_lock_access, void* user) {
    static_cast<Shared*>(user)->locks[data].lock();
  }
  static void unlock(CURL*, curl_lock_data data, void* user) {
    static_cast<Shared*>(user)->locks[data].unlock();
  }
};

Client::Client(Config config) : config_(std::move(config)), rng_(std::random_device{}()) {
  global_init();
  shared_ = std::make_shared<Shared>();
}

Client::~Client() = default;

std::string Client::bearer_token() const {
  if (config_.token_file.empty()) return config_.token;
  struct stat info {};
  if (stat(config_.token_file.c_str(), &info) != 0)
    fail(config_.source, config_.token_file, "cannot read the token file");
  const std::int64_t mtime =
      static_cast<std::int64_t>(info.st_mtim.tv_sec) * 1000000000 + info.st_mtim.tv_nsec;
  std::lock_guard lock(mutex_);
  if (mtime != file_token_mtime_) {
    file_token_ = trim(read_file(config_.token_file));
    file_token_mtime_ = mtime;
  }
  return file_token_;
}

namespace {
// Every answer the API gave, or "error" for none (connection refused, timeout): what an
// operator graphs to see throttling (429), refused credentials (401, 403) or an unreachable
// server. A watch counts once, when its stream ends, as verb WATCH.
void count_request(std::string_view verb, long status) {
  static auto& requests = metrics::process_registry().counter(
      "k8slb_api_requests_total", "Requests to the Kubernetes API by process, verb and HTTP status (error: no answer).",
      {"component", "verb", "code"});
  requests.add({metrics::component(), std::string(verb), status > 0 ? std::to_string(status) : "error"});
}
} // namespace

Response Client::perform(std::string_view method, std::string_view path_and_query,
                         std::string_view body, std::string_view content_type) const {
  // This thread's handle for plain requests: reset to defaults, connections kept. It holds the
  // share it was last attached to: curl uses the share's lock callbacks when the handle is
  // cleaned up (at thread exit, after this Client may be gone) or moved to another share.
  struct ThreadHandle {
    std::shared_ptr<Shared> share; // destroyed after curl (members go in reverse order)
    Easy curl;
  };
  thread_local ThreadHandle handle;
  Easy& curl = handle.curl;
  if (!curl) curl.reset(curl_easy_init());
  if (!curl) throw TransportError("curl_easy_init failed");
  curl_easy_reset(curl.get());
  const std::string target = url(path_and_query);
  HeaderList headers;
  setup(curl.get(), config_, target, bearer_token(), headers, body.empty() ? "" : content_type);
  if (shared_->handle) curl_easy_setopt(curl.get(), CURLOPT_SHARE, shared_->handle);
  else curl_easy_setopt(curl.get(), CURLOPT_SHARE, nullptr);
  handle.share = shared_; // after the handle left the previous share
  set_method(curl.get(), method, body);
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS, static_cast<long>(config_.request_timeout.count()));
  Response response;
  curl_easy_setopt(curl.get(), CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(curl.get(), CURLOPT_HEADERDATA, &response);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &response.body);
  char error_buffer[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(curl.get(), CURLOPT_ERRORBUFFER, error_buffer);
  CURLcode code = curl_easy_perform(curl.get());
  if (code != CURLE_OK) {
    count_request(method, 0);
    std::string detail = error_buffer[0] ? error_buffer : curl_easy_strerror(code);
    throw TransportError(std::string(method) + " " + target + ": " + detail);
  }
  long status = 0;
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &status);
  response.status = static_cast<int>(status);
  count_request(method, status);
  return response;
}

Response Client::request(std::string_view method, std::string_view path_and_query,
                         std::string_view body, std::string_view content_type) {
  std::mt19937_64 rng;
  {
    std::lock_guard lock(mutex_);
    rng.seed(rng_());
  }
  Response response = run_with_retries(
      config_.retry, rng, [&] { return perform(method, path_and_query, body, content_type); },
      [](std::chrono::milliseconds delay) { std::this_thread::sleep_for(delay); });
  if (is_retryable_status(response.status)) {
    throw ApiError(std::string(method), url(path_and_query), response.status,
                   response.status_message() + " (after " +
                       std::to_string(std::max(1, config_.retry.max_attempts)) + " attempts)");
  }
  return response;
}

namespace {
json body_json(const Response& response, std::string_view method, const std::string& url) {
  if (response.body.empty()) return json::object();
  try {
    return json::parse(response.body);
  } catch (const json::exception& e) {
    throw Error(std::string(method) + " " + url + ": response is not JSON: " + e.what());
  }
}
} // namespace

json Client::get_json(std::string_view path_and_query) {
  Response response = request("GET", path_and_query);
  if (!response.ok()) throw ApiError("GET", url(path_and_query), response.status, response.status_message());
  return body_json(response, "GET", url(path_and_query));
}

std::optional<json> Client::get_optional(std::string_view path_and_query) {
  Response response = request("GET", path_and_query);
  if (response.status == 404) return std::nullopt;
  if (!response.ok()) throw ApiError("GET", url(path_and_query), response.status, response.status_message());
  return body_json(response, "GET", url(path_and_query));
}

json Client::create(std::string_view collection, const json& object) {
  Response response = request("POST", collection, object.dump());
  if (!response.ok()) throw ApiError("POST", url(collection), response.status, response.status_message());
  return body_json(response, "POST", url(collection));
}

json Client::update(std::string_view path, const json& object) {
  Response response = request("PUT", path, object.dump());
  if (!response.ok()) throw ApiError("PUT", url(path), response.status, response.status_message());
  return body_json(response, "PUT", url(path));
}

json Client::merge_patch(std::string_view path, const json& patch, std::string_view subresource) {
  std::string target(path);
  if (!subresource.empty()) target += "/" + std::string(subresource);
  Response response = request("PATCH", target, patch.dump(), "application/merge-patch+json");
  if (!response.ok()) throw ApiError("PATCH", url(target), response.status, response.status_message());
  return body_json(response, "PATCH", url(target));
}

bool Client::del(std::string_view path) {
  Response response = request("DELETE", path);
  if (response.status == 404) return false;
  if (!response.ok()) throw ApiError("DELETE", url(path), response.status, response.status_message());
  return true;
}

Response Client::stream_lines(std::string_view path_and_query,
                              const std::function<bool(std::string_view line)>& on_line,
                              std::stop_token stop) {
  Easy curl(curl_easy_init());
  if (!curl) throw TransportError("curl_easy_init failed");
  const std::string target = url(path_and_query);
  HeaderList headers;
  setup(curl.get(), config_, target, bearer_token(), headers, "");
  curl_easy_setopt(curl.get(), CURLOPT_HTTPGET, 1L);
  Response response;
  Stream stream;
  stream.curl = curl.get();
  stream.response = &response;
  stream.on_line = &on_line;
  stream.stop = stop;
  curl_easy_setopt(curl.get(), CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(curl.get(), CURLOPT_HEADERDATA, &response);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, on_stream);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &stream);
  curl_easy_setopt(curl.get(), CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(curl.get(), CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(curl.get(), CURLOPT_XFERINFODATA, &stream);
  char error_buffer[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(curl.get(), CURLOPT_ERRORBUFFER, error_buffer);
  CURLcode code = curl_easy_perform(curl.get());
  if (stream.error) std::rethrow_exception(stream.error);
  long status = 0;
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &status);
  response.status = static_cast<int>(status);
  count_request("WATCH", status);
  if (code != CURLE_OK && !stream.stopped_by_caller && status == 0) {
    std::string detail = error_buffer[0] ? error_buffer : curl_easy_strerror(code);
    throw TransportError("GET " + target + ": " + detail);
  }
  // A stream that ends without a final newline still delivers its last line.
  if (code == CURLE_OK && response.ok() && !stream.pending.empty()) {
    std::string_view rest = stream.pending;
    if (!rest.empty() && rest.back() == '\r') rest.remove_suffix(1);
    if (!rest.empty()) on_line(rest);
  }
  return response;
}

} // namespace k8slb::kube
