#pragma once
// Reading and writing the interchange format: Kubernetes JSON (a v1 List, single objects,
// or a stream of documents as `kubectl get -o json` prints) and YAML manifests.

#include <istream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace k8slb {

using json = nlohmann::json;

// Reads one JSON document after another from a stream (NDJSON or concatenated documents).
// next() returns nullopt at end of input; throws Error on malformed JSON, naming `source`
// and the document number.
class JsonStreamReader {
public:
  JsonStreamReader(std::istream& in, std::string source);
  std::optional<json> next();

private:
  std::istream& in_;
  std::string source_;
  int count_ = 0;
};

// Parses text holding JSON documents or YAML documents (multi-document, `---`), as
// `kubectl apply -f` accepts. Returns one json per document. Throws Error naming `source`.
std::vector<json> parse_documents(std::string_view text, std::string_view source);

// Converts a YAML text with one document to json (plain scalars that look like numbers or
// booleans become numbers or booleans, as Kubernetes reads them).
json yaml_to_json(std::string_view text, std::string_view source);

// Flattens documents into Kubernetes objects: a `List` (any kind ending in "List") gives its
// items, anything else is one object. Null documents are dropped.
std::vector<json> flatten_items(const std::vector<json>& documents);

// Wraps objects in a `v1 List` document.
json make_list(std::vector<json> items);

// Reads a whole file ("-" is stdin); throws Error naming the path.
std::string read_file(const std::string& path);

// Reads every Kubernetes object from the files (JSON or YAML, Lists flattened; "-" is stdin),
// in order.
std::vector<json> read_items(const std::vector<std::string>& paths);

} // namespace k8slb
