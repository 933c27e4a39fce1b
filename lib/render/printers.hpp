#pragma once
// The printers: plans in, file text out. No decisions here.

#include <string>

#include "k8slb/render_model.hpp"

namespace k8slb::render::detail {

std::string print_haproxy(const ProxyPlan& plan, const pool::Config& config, const Settings& settings);
std::string print_haproxy_servers(const ProxyPlan& plan, int min_server_slots);
std::string print_shared_map(const SharedPort& shared); // haproxy-p<port>.map
std::string print_nginx(const ProxyPlan& plan, const pool::Config& config, const Settings& settings);
std::string print_keepalived(const KeepalivedPlan& plan, const Settings& settings);
std::string print_bird(const BirdPlan& plan);

} // namespace k8slb::render::detail
