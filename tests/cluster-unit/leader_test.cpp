// Leader election decisions: given the lease as read, the local clock and who we are, what a
// candidate does. Same rules as client-go's leaderelection.
#include "k8slb/cluster.hpp"

#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace k8slb::cluster {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

ElectionConfig config_for(const std::string& identity) {
  ElectionConfig config;
  config.identity = identity;
  config.lease_duration = Seconds(15);
  config.renew_deadline = Seconds(10);
  config.retry_period = Seconds(2);
  return config;
}

const TimePoint t0 = TimePoint{} + std::chrono::hours(1000);

LeaseRecord held_by(const std::string& holder, int transitions = 3) {
  return LeaseRecord{holder, 15, "2026-11-26T10:00:00.000000Z", "2026-11-26T10:00:05.000000Z",
                     transitions};
}

TEST(LeaderDecide, OneReadLease) {
  struct Case {
    std::string description;
    ElectorState state;
    std::optional<LeaseRecord> lease; // as read now
    TimePoint now;
    Action action;
    std::string holder_written; // for create / take / renew
    int transitions_written = 0;
    bool keeps_acquire_time = false;
  };
  ElectorState fresh;
  ElectorState seen_b_long_ago;
  seen_b_long_ago.observed = held_by("b");
  seen_b_long_ago.observed_at = t0 - seconds(16);
  ElectorState seen_b_recently = seen_b_long_ago;
  seen_b_recently.observed_at = t0 - seconds(14);
  ElectorState leading;
  leading.observed = held_by("a");
  leading.observed_at = t0 - seconds(2);
  leading.leading = true;
  leading.renewed_at = t0 - seconds(2);
  ElectorState leading_stale = leading;
  leading_stale.renewed_at = t0 - seconds(11);

  std::vector<Case> cases = {
      {"no lease object: create it holding it", fresh, std::nullopt, t0, Action::create, "a", 0, false},
      {"first sight of b's lease: wait a full duration", fresh, held_by("b"), t0, Action::wait, "", 0, false},
      {"b's lease unchanged for 14 s of 15: still wait", seen_b_recently, held_by("b"), t0,
       Action::wait, "", 0, false},
      {"b's lease unchanged for 16 s of 15: take it", seen_b_long_ago, held_by("b"), t0,
       Action::take, "a", 4, false},
      {"b renewed since we last looked: the clock restarts",
       seen_b_long_ago,
       LeaseRecord{"b", 15, "2026-11-26T10:00:00.000000Z", "2026-11-26T10:00:21.000000Z", 3}, t0,
       Action::wait, "", 0, false},
      {"released lease (no holder): take it at once", fresh,
       LeaseRecord{"", 1, "2026-11-26T10:00:00.000000Z", "2026-11-26T10:00:00.000000Z", 3}, t0,
       Action::take, "a", 4, false},
      {"ours and leading: renew, same acquireTime and transitions", leading, held_by("a"), t0,
       Action::renew, "a", 3, true},
      {"ours after a restart (not leading yet): resume by renewing", fresh, held_by("a"), t0,
       Action::renew, "a", 3, true},
      {"leading but not renewed for 11 s (deadline 10): stop", leading_stale, held_by("a"), t0,
       Action::stop, "", 0, false},
      {"leading but c holds it now: stop", leading, held_by("c"), t0, Action::stop, "", 0, false},
      {"leading but the lease was deleted: stop", leading, std::nullopt, t0, Action::stop, "", 0, false},
      {"leading but the lease was released by someone: stop", leading,
       LeaseRecord{"", 1, "", "", 3}, t0, Action::stop, "", 0, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.description);
    ElectorState state = observe(c.state, c.lease, c.now);
    Decision decision = decide(state, c.now, "2026-11-26T11:00:00.000000Z", config_for("a"));
    EXPECT_EQ(to_string(decision.action), to_string(c.action)) << decision.reason;
    if (c.action == Action::create || c.action == Action::take || c.action == Action::renew) {
      EXPECT_EQ(decision.record.holder_identity, c.holder_written);
      EXPECT_EQ(decision.record.lease_transitions, c.transitions_written);
      EXPECT_EQ(decision.record.lease_duration_seconds, 15);
      EXPECT_EQ(decision.record.renew_time, "2026-11-26T11:00:00.000000Z");
      EXPECT_EQ(decision.record.acquire_time,
                c.keeps_acquire_time ? c.lease->acquire_time : "2026-11-26T11:00:00.000000Z");
    }
  }
}

// Two candidates, one Lease, a script of steps on a shared clock: a holds, dies, b takes over
// after the duration, never both leading.
TEST(LeaderDecide, HandOverScript) {
  ElectionConfig config_a = config_for("a");
  ElectionConfig config_b = config_for("b");
  std::optional<LeaseRecord> lease; // the API's copy
  ElectorState a, b;
  int wall = 0;
  auto round = [&](ElectorState& state, const ElectionConfig& config, TimePoint now) {
    state = observe(state, lease, now);
    Decision decision = decide(state, now, "t" + std::to_string(++wall), config);
    if (decision.action == Action::create || decision.action == Action::take ||
        decision.action == Action::renew) {
      lease = decision.record;
      state = wrote(state, decision.record, now);
    }
    if (decision.action == Action::stop) state.leading = false;
    return decision.action;
  };
  struct Step {
    std::string description;
    char who;
    int at_ms;
    Action expected;
  };
  std::vector<Step> steps = {
      {"a finds no lease and creates it", 'a', 0, Action::create},
      {"b sees a's lease for the first time", 'b', 500, Action::wait},
      {"a renews", 'a', 2000, Action::renew},
      {"b sees the renewal: its clock restarts", 'b', 2500, Action::wait},
      {"a renews once more, then dies", 'a', 4000, Action::renew},
      {"b sees that renewal", 'b', 4500, Action::wait},
      {"14.9 s after b saw it change: still a's", 'b', 19400, Action::wait},
      {"15.1 s after: b takes it", 'b', 19600, Action::take},
      {"b renews", 'b', 21600, Action::renew},
  };
  for (const Step& step : steps) {
    SCOPED_TRACE(step.description);
    TimePoint now = t0 + milliseconds(step.at_ms);
    Action action = step.who == 'a' ? round(a, config_a, now) : round(b, config_b, now);
    EXPECT_EQ(to_string(action), to_string(step.expected));
    bool both = may_lead(a, now, config_a) && may_lead(b, now, config_b);
    EXPECT_FALSE(both) << "two leaders at " << step.at_ms << " ms";
  }
  ASSERT_TRUE(lease.has_value());
  EXPECT_EQ(lease->holder_identity, "b");
  EXPECT_EQ(lease->lease_transitions, 1);
  // a comes back after b took over: it must stop, not write.
  TimePoint later = t0 + milliseconds(22000);
  a = observe(a, lease, later);
  EXPECT_EQ(to_string(decide(a, later, "t", config_a).action), to_string(Action::stop));
}

TEST(LeaderDecide, MayLeadUntilTheRenewDeadline) {
  ElectionConfig config = config_for("a");
  ElectorState state = wrote(ElectorState{}, held_by("a"), t0);
  struct Case {
    int after_ms;
    bool may;
  };
  for (Case c : std::vector<Case>{{0, true}, {9999, true}, {10000, false}, {15000, false}}) {
    SCOPED_TRACE(c.after_ms);
    EXPECT_EQ(may_lead(state, t0 + milliseconds(c.after_ms), config), c.may);
  }
  EXPECT_FALSE(may_lead(ElectorState{}, t0, config)) << "a candidate that never acquired";
}

TEST(LeaderConfig, Validation) {
  struct Case {
    std::string description;
    double duration, deadline, retry;
    std::string identity;
    std::string error; // substring; empty: valid
  };
  std::vector<Case> cases = {
      {"client-go defaults", 15, 10, 2, "a", ""},
      {"short test settings", 4, 2.5, 0.5, "a", ""},
      {"no identity", 15, 10, 2, "", "--identity"},
      {"fractional lease duration", 4.5, 2, 0.5, "a", "--lease-duration"},
      {"deadline not below duration", 10, 10, 2, "a", "--renew-deadline"},
      {"deadline too close to retry", 15, 2.2, 2, "a", "--renew-deadline"},
      {"zero retry", 15, 10, 0, "a", "--retry-period"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.description);
    ElectionConfig config;
    config.identity = c.identity;
    config.lease_duration = Seconds(c.duration);
    config.renew_deadline = Seconds(c.deadline);
    config.retry_period = Seconds(c.retry);
    if (c.error.empty()) {
      EXPECT_NO_THROW(validate(config));
    } else {
      try {
        validate(config);
        ADD_FAILURE() << "no error";
      } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find(c.error), std::string::npos) << error.what();
      }
    }
  }
}

TEST(LeaseRecordJson, RoundTrip) {
  LeaseRecord record = held_by("watcher-0", 7);
  json lease = {{"apiVersion", "coordination.k8s.io/v1"}, {"kind", "Lease"}, {"spec", lease_spec(record)}};
  EXPECT_EQ(lease_record_from(lease), record);
  EXPECT_EQ(lease["spec"]["leaseDurationSeconds"], 15);
  EXPECT_EQ(lease["spec"]["holderIdentity"], "watcher-0");
  EXPECT_EQ(lease_record_from(json{{"kind", "Lease"}}), LeaseRecord{}) << "no spec: empty record";
}

} // namespace
} // namespace k8slb::cluster
