// The client's lifetime against curl's: a thread's easy handle outlives the Client whose share
// it used (the review saw a use-after-free under valgrind at exit of `k8slb-apply cluster
// --acquire-only`). The freed memory is read inside libc's pthread_mutex_lock, which
// AddressSanitizer does not watch: ctest runs this test under valgrind
// (kube.client_lifetime_under_valgrind), where it fails without the fix.
#include <thread>

#include <gtest/gtest.h>

#include "k8slb/kube.hpp"

namespace k8slb::kube {
namespace {

TEST(Client, AThreadsCurlHandleOutlivesTheClientSafely) {
  for (int clients = 1; clients <= 2; ++clients) {
    SCOPED_TRACE(testing::Message() << clients << " Clients used by the thread, one after the other");
    std::thread([clients] {
      for (int i = 0; i < clients; ++i) {
        Config config;
        config.server = "http://127.0.0.1:1"; // refused at once: the handle is attached to the share all the same
        config.retry.max_attempts = 1;
        Client client(config);
        EXPECT_THROW(client.request("GET", "/version"), Error);
      } // the Client (and its curl share) is gone; the thread's easy handle is not yet
    }).join(); // the thread ends: its easy handle is cleaned up, which locks and unlocks the share
  }
}

} // namespace
} // namespace k8slb::kube
