#include "k8slb/documents.hpp"

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "k8slb/error.hpp"

namespace k8slb {

JsonStreamReader::JsonStreamReader(std::istream& in, std::string source)
    : in_(in), source_(std::move(source)) {}

std::optional<json> JsonStreamReader::next() {
  // Skip whitespace between documents; end of input is a normal end.
  while (true) {
    int c = in_.peek();
    if (c == std::char_traits<char>::eof()) return std::nullopt;
    if (!std::isspace(c)) break;
    in_.get();
  }
  ++count_;
  try {
    json document;
    in_ >> document;
    return document;
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: document {}: malformed JSON: {}", source_, count_, e.what()));
  }
}

namespace {

bool looks_like_json(std::string_view text) {
  for (char c : text) {
    if (std::isspace(static_cast<unsigned char>(c))) continue;
    return c == '{' || c == '[';
  }
  return false;
}

json scalar_to_json(const YAML::Node& node) {
  const std::string& value = node.Scalar();
  if (node.Tag() == "!") return value; // quoted: always a string
  if (node.Tag() != "?" && !node.Tag().empty()) {
    if (node.Tag() == "tag:yaml.org,2002:str") return value;
  }
  if (value == "null" || value == "~" || value == "Null" || value == "NULL") return nullptr;
  if (value == "true" || value == "True" || value == "TRUE") return true;
  if (value == "false" || value == "False" || value == "FALSE") return false;
  if (!value.empty()) {
    std::size_t i = (value[0] == '-' || value[0] == '+') ? 1 : 0;
    bool digits = i < value.size();
    for (std::size_t j = i; j < value.size(); ++j) digits = digits && std::isdigit(static_cast<unsigned char>(value[j]));
    if (digits && value.size() - i <= 18) return std::stoll(value);
    if (value.find_first_not_of("0123456789.eE+-") == std::string::npos &&
        value.find_first_of("0123456789") != std::string::npos &&
        value.find('.') != std::string::npos) {
      try {
        std::size_t used = 0;
        double d = std::stod(value, &used);
        if (used == value.size()) return d;
      } catch (...) {
      }
    }
  }
  return value;
}

json node_to_json(const YAML::Node& node) {
  switch (node.Type()) {
  case YAML::NodeType::Null:
  case YAML::NodeType::Undefined:
    return nullptr;
  case YAML::NodeType::Scalar:
    return scalar_to_json(node);
  case YAML::NodeType::Sequence: {
    json out = json::array();
    for (const auto& child : node) out.push_back(node_to_json(child));
    return out;
  }
  case YAML::NodeType::Map: {
    json out = json::object();
    for (const auto& kv : node) out[kv.first.as<std::string>()] = node_to_json(kv.second);
    return out;
  }
  }
  return nullptr;
}

} // namespace

json yaml_to_json(std::string_view text, std::string_view source) {
  try {
    return node_to_json(YAML::Load(std::string(text)));
  } catch (const YAML::Exception& e) {
    throw Error(fmt::format("{}: malformed YAML: {}", source, e.what()));
  }
}

std::vector<json> parse_documents(std::string_view text, std::string_view source) {
  std::vector<json> documents;
  if (looks_like_json(text)) {
    std::istringstream in{std::string(text)};
    JsonStreamReader reader(in, std::string(source));
    while (auto document = reader.next()) documents.push_back(std::move(*document));
    return documents;
  }
  try {
    for (const auto& node : YAML::LoadAll(std::string(text))) {
      json document = node_to_json(node);
      if (!document.is_null()) documents.push_back(std::move(document));
    }
  } catch (const YAML::Exception& e) {
    throw Error(fmt::format("{}: malformed YAML: {}", source, e.what()));
  }
  return documents;
}

std::vector<json> flatten_items(const std::vector<json>& documents) {
  std::vector<json> items;
  for (const auto& document : documents) {
    if (document.is_null()) continue;
    if (document.is_array()) {
      for (const auto& item : document) items.push_back(item);
      continue;
    }
    std::string kind = document.is_object() ? document.value("kind", "") : "";
    if (kind.size() >= 4 && kind.ends_with("List") && document.contains("items")) {
      const json& list_items = document["items"];
      if (list_items.is_array())
        for (const auto& item : list_items) items.push_back(item);
      continue;
    }
    items.push_back(document);
  }
  return items;
}

json make_list(std::vector<json> items) {
  return json{{"apiVersion", "v1"}, {"kind", "List"}, {"metadata", {{"resourceVersion", ""}}},
              {"items", std::move(items)}};
}

std::string read_file(const std::string& path) {
  if (path == "-") {
    std::ostringstream buffer;
    buffer << std::cin.rdbuf();
    return buffer.str();
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

} // namespace k8slb

namespace k8slb {
std::vector<json> read_items(const std::vector<std::string>& paths) {
  std::vector<json> items;
  for (const auto& path : paths) {
    std::string name = path == "-" ? "<stdin>" : path;
    for (auto& item : flatten_items(parse_documents(read_file(path), name))) items.push_back(std::move(item));
  }
  return items;
}
} // namespace k8slb
