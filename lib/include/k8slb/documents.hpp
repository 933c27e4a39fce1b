#pragma once
// Reading and writing the interchange format: Kubernetes JSON (a v1 List, single objects,
// or a stream of documents as `kubectl get -o json` prints) and YAML manifests.
//
// Every reader here ends in bounded time and memory on any input: a document holds at most
// Limits::max_bytes of text and Limits::max_values values (YAML aliases counted as expanded),
// nested at most Limits::max_depth deep; a key twice in one object, a recursive YAML alias or
// binary data is an error naming the input and the path of the key.

#include <chrono>
#include <cstddef>
#include <istream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace k8slb {

using json = nlohmann::json;

struct Limits {
  std::size_t max_bytes = std::size_t{256} << 20; // text of one document (of one file for YAML)
  std::size_t max_values = 16'000'000;            // values in one document, aliases expanded
  std::size_t max_depth = 512;                    // nesting of arrays and objects
};

// When the change a stream document carries was first seen (by k8slb-watch): the List's
// metadata.annotations["k8slb.io/observed-at"], Unix seconds with a fraction ("1764331200.123").
// Each tool downstream passes it on, so the last one times the whole pipeline (the metrics'
// k8slb_status_write_duration_seconds). Readers that do not know it ignore it.
inline constexpr const char* kObservedAtAnnotation = "k8slb.io/observed-at";
std::string observed_at_text(std::chrono::system_clock::time_point time);
// The time in `document`, if it is a List that carries a well-formed one.
std::optional<std::chrono::system_clock::time_point> observed_at(const json& document);
// Sets it on `document` (a List), when `time` is set.
void set_observed_at(json& document, const std::optional<std::chrono::system_clock::time_point>& time);

// `document` as one line: the text of document.dump(-1, ' ', false, error_handler_t::replace)
// (no spaces, UTF-8 kept, invalid UTF-8 replaced by U+FFFD), with ASCII strings escaped
// without nlohmann's per-byte UTF-8 decoder: a node's line at 10,000 Services is 5 MB of
// config text, and its dump was a seventh of a rendering.
std::string dump_line(const json& document);

// Reads one JSON document after another from a stream (NDJSON or concatenated documents).
// next() returns nullopt at end of input. A malformed or oversized document throws Error
// naming `source` and the document number, after skipping the rest of its line: the caller
// may call next() again and the stream goes on with the next line.
class JsonStreamReader {
public:
  JsonStreamReader(std::istream& in, std::string source, Limits limits = {});
  ~JsonStreamReader();
  std::optional<json> next();
  // Whether the next document has begun to arrive, so that next() will not wait for it long
  // (a reader of watch events handles a burst as one batch).
  bool ready();
  int count() const { return count_; } // documents started so far
  std::string name() const;            // "<source>: document N" for the last one

private:
  class Buffer;
  std::unique_ptr<Buffer> buffer_;
  std::unique_ptr<std::istream> in_;
  std::string source_;
  Limits limits_;
  int count_ = 0;
};

// Parses one JSON document (the whole text). Throws Error naming `source` (and the path of a
// duplicate key).
json parse_json(std::string_view text, std::string_view source, const Limits& limits = {});

// Parses text holding JSON documents or YAML documents (multi-document, `---`), as
// `kubectl apply -f` accepts. Returns one json per document (empty YAML documents dropped).
// Throws Error naming `source`.
std::vector<json> parse_documents(std::string_view text, std::string_view source, const Limits& limits = {});

// Converts a YAML text with one document to json (plain scalars that look like numbers or
// booleans become numbers or booleans, as Kubernetes reads them).
json yaml_to_json(std::string_view text, std::string_view source, const Limits& limits = {});

// Flattens documents into their elements: a `List` (any kind ending in "List") gives its
// items, anything else is one element. Null documents are dropped. No checks.
std::vector<json> flatten_items(const std::vector<json>& documents);

// The Kubernetes objects of an input, and what was left out of it.
struct Objects {
  std::vector<json> items;         // objects with apiVersion and kind, in input order
  std::vector<std::string> errors; // "<source>: items[2]: kind: is required", one per element left out
  bool explicit_list = false;      // a List was read (an empty List is a valid "no objects")
  // True when the input holds no object at all and is not an explicit (empty) List: an empty
  // input, a bare scalar, objects without apiVersion/kind. Such an input is refused whole.
  bool none() const { return items.empty() && !explicit_list; }
  std::map<std::string, std::string> seen_; // kind/namespace/name -> where it was read first
};

// Takes the objects out of the documents of one input (moving them). Elements that are not
// Kubernetes objects (not an object; apiVersion or kind missing or not a string; metadata,
// its name or namespace of the wrong type) and an object that repeats an earlier one (same
// kind, namespace and name: the first is kept) go to `errors`, named by `source`.
Objects take_objects(std::vector<json> documents, std::string_view source);
void take_objects(std::vector<json> documents, std::string_view source, Objects& into);

// Throws Error naming `source` when `objects.none()`: the input holds no Kubernetes object.
void require_objects(const Objects& objects, std::string_view source);

// The error for a watch event read before any List: a tool on events needs every object first.
std::string list_first_error(std::string_view source);

// Wraps objects in a `v1 List` document.
json make_list(std::vector<json> items);

// Reads a whole file ("-" is stdin); throws Error naming the path, also when it holds more
// than `max_bytes`.
std::string read_file(const std::string& path, std::size_t max_bytes = Limits{}.max_bytes);

// Reads every Kubernetes object from the files (JSON or YAML, Lists flattened; "-" is stdin),
// in order. Throws Error when a file cannot be read or parsed, or when the files together hold
// no object (require_objects).
Objects read_objects(const std::vector<std::string>& paths);

} // namespace k8slb
