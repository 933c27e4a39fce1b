// The HTTP endpoint, with Boost.Beast on one Asio thread: every connection is asynchronous and
// bounded in time, so a scrape never waits on a stuck client and never holds up the tool.
#include "k8slb/metrics.hpp"

#include <atomic>
#include <optional>
#include <utility> // before Boost 1.74's Asio, which uses std::exchange without it in C++20
#include <regex>
#include <thread>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>

#include "k8slb/error.hpp"

namespace k8slb::metrics {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

constexpr int kMaxConnections = 64;
constexpr auto kClientTimeout = std::chrono::seconds(10);

struct Listen {
  asio::ip::address address;
  unsigned short port = 0;
  bool any = false; // ":PORT": every address of both families
};

Listen parse_address(std::string_view text) {
  static const std::regex pattern(R"((?:\[([0-9A-Fa-f:.]+)\]|([0-9.]+))?:([0-9]{1,5}))");
  std::match_results<std::string_view::const_iterator> match;
  auto problem = [&] {
    return Error(describe(text, "", "expected HOST:PORT, [IPv6]:PORT or :PORT with an IP address, e.g. :9402"));
  };
  if (!std::regex_match(text.begin(), text.end(), match, pattern))
    throw problem();
  Listen listen;
  auto port = std::stoul(match[3].str());
  if (port > 65535)
    throw problem();
  listen.port = static_cast<unsigned short>(port);
  std::string host = match[1].matched ? match[1].str() : match[2].str();
  if (host.empty()) {
    listen.any = true;
    return listen;
  }
  boost::system::error_code error;
  listen.address = asio::ip::make_address(host, error);
  if (error || (match[1].matched && !listen.address.is_v6()))
    throw problem();
  return listen;
}

std::string endpoint_text(const tcp::endpoint& endpoint) {
  auto address = endpoint.address();
  if (address.is_v6())
    return fmt::format("[{}]:{}", address.to_string(), endpoint.port());
  return fmt::format("{}:{}", address.to_string(), endpoint.port());
}

// What the sessions share with the server; held by each, as the io_context destroys the
// sessions it still holds after the server's other members are gone.
struct Shared {
  std::function<std::string()> body;
  std::atomic<int> connections{0};
};

class Session : public std::enable_shared_from_this<Session> {
public:
  Session(tcp::socket socket, std::shared_ptr<Shared> shared) : stream_(std::move(socket)), shared_(std::move(shared)) {
    ++shared_->connections;
  }
  ~Session() { --shared_->connections; }

  void read() {
    parser_.emplace();
    parser_->header_limit(8192);
    parser_->body_limit(4096);
    stream_.expires_after(kClientTimeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code error, std::size_t) { self->answer(error); });
  }

private:
  void answer(beast::error_code error) {
    if (error)
      return close();
    const auto& request = parser_->get();
    response_ = {};
    response_.version(request.version());
    response_.keep_alive(request.keep_alive());
    response_.set(http::field::server, "k8slb");
    auto target = request.target();
    auto path = target.substr(0, target.find('?'));
    if (request.method() != http::verb::get && request.method() != http::verb::head) {
      response_.result(http::status::method_not_allowed);
      response_.set(http::field::allow, "GET, HEAD");
      response_.set(http::field::content_type, "text/plain; charset=utf-8");
      response_.body() = "only GET and HEAD\n";
    } else if (path == "/metrics") {
      response_.result(http::status::ok);
      response_.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
      response_.body() = shared_->body();
    } else if (path == "/") {
      response_.result(http::status::ok);
      response_.set(http::field::content_type, "text/html; charset=utf-8");
      response_.body() = "<html><body><a href=\"/metrics\">metrics</a></body></html>\n";
    } else {
      response_.result(http::status::not_found);
      response_.set(http::field::content_type, "text/plain; charset=utf-8");
      response_.body() = "not found: try /metrics\n";
    }
    response_.prepare_payload();
    if (request.method() == http::verb::head)
      response_.body().clear(); // Content-Length stays that of the GET
    stream_.expires_after(kClientTimeout);
    http::async_write(stream_, response_, [self = shared_from_this()](beast::error_code error, std::size_t) {
      if (error || !self->response_.keep_alive())
        return self->close();
      self->read();
    });
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> response_;
  std::shared_ptr<Shared> shared_;
};

} // namespace

struct Server::State {
  asio::io_context io{1};
  tcp::acceptor acceptor{io};
  std::shared_ptr<Shared> shared = std::make_shared<Shared>();
  std::thread thread;

  void accept() {
    acceptor.async_accept([this](beast::error_code error, tcp::socket socket) {
      if (error == asio::error::operation_aborted)
        return;
      if (!error) {
        if (shared->connections.load() >= kMaxConnections)
          socket.close();
        else
          std::make_shared<Session>(std::move(socket), shared)->read();
      }
      accept();
    });
  }

  void listen(const tcp::endpoint& endpoint, bool dual_stack) {
    acceptor.open(endpoint.protocol());
    acceptor.set_option(asio::socket_base::reuse_address(true));
    if (dual_stack)
      acceptor.set_option(asio::ip::v6_only(false));
    acceptor.bind(endpoint);
    acceptor.listen(asio::socket_base::max_listen_connections);
  }
};

Server::Server(std::string_view address, std::function<std::string()> body) : state_(std::make_unique<State>()) {
  auto where = parse_address(address);
  state_->shared->body = std::move(body);
  try {
    if (!where.any) {
      state_->listen(tcp::endpoint(where.address, where.port), false);
    } else {
      try {
        state_->listen(tcp::endpoint(tcp::v6(), where.port), true);
      } catch (const boost::system::system_error&) { // no IPv6 on this host: IPv4 only
        beast::error_code ignored;
        state_->acceptor.close(ignored);
        state_->listen(tcp::endpoint(tcp::v4(), where.port), false);
      }
    }
  } catch (const boost::system::system_error& error) {
    throw Error(describe(address, "", fmt::format("cannot listen: {}", error.code().message())));
  }
  state_->accept();
  state_->thread = std::thread([state = state_.get()] { state->io.run(); });
}

Server::~Server() {
  state_->io.stop();
  if (state_->thread.joinable())
    state_->thread.join();
}

std::string Server::local_address() const { return endpoint_text(state_->acceptor.local_endpoint()); }

} // namespace k8slb::metrics
