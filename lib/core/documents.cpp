#include "k8slb/documents.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <streambuf>
#include <tuple>

#include <fmt/format.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include "k8slb/error.hpp"

namespace k8slb {

namespace {

// Builds a json tree from parse events (nlohmann's SAX or yaml-cpp's), holding the limits:
// values counted, depth bounded, a key twice in one object refused. Where it fails, path()
// names the place ("items[3].metadata").
class TreeBuilder {
public:
  explicit TreeBuilder(const Limits& limits) : limits_(limits) {}

  // The error, empty when none (the builder stops at the first).
  const std::string& error() const { return error_; }
  json take() { return std::move(root_); }
  bool done() const { return stack_.empty() && started_; }
  std::size_t values() const { return values_; }

  // Adds a value where the tree is; returns it, or nullptr after an error. `count` is how
  // many values it holds (more than 1 for a copy of a YAML anchor's value).
  json* add(json value, std::size_t count = 1) {
    if (!error_.empty()) return nullptr;
    values_ += count;
    if (values_ > limits_.max_values)
      return fail(fmt::format("more than {} values in one document{}", limits_.max_values,
                              count > 1 ? " once aliases are expanded" : ""));
    if (stack_.empty()) {
      root_ = std::move(value);
      started_ = true;
      return &root_;
    }
    Level& top = stack_.back();
    if (top.value->is_array()) {
      auto& array = top.value->get_ref<json::array_t&>();
      array.push_back(std::move(value));
      return &array.back();
    }
    if (top.slot == nullptr) return fail("a value without a key"); // cannot happen with a conforming parser
    json* slot = top.slot;
    *slot = std::move(value);
    top.slot = nullptr;
    return slot;
  }

  // Starts an array or object where the tree is; returns it, or nullptr after an error.
  json* start(json container) {
    json* value = add(std::move(container));
    if (value == nullptr) return nullptr;
    if (stack_.size() >= limits_.max_depth)
      return fail(fmt::format("nested more than {} deep", limits_.max_depth));
    stack_.push_back(Level{value, nullptr, nullptr});
    return value;
  }

  bool end() {
    if (!error_.empty()) return false;
    stack_.pop_back();
    return true;
  }

  bool key(std::string name) {
    if (!error_.empty()) return false;
    Level& top = stack_.back();
    auto& object = top.value->get_ref<json::object_t&>();
    auto [it, inserted] = object.emplace(std::move(name), nullptr);
    if (!inserted) {
      fail(fmt::format("duplicate key '{}'", shorten(it->first, 80)));
      return false;
    }
    top.key = &it->first;
    top.slot = &it->second;
    return true;
  }

  bool in_object_expecting_key() const {
    return !stack_.empty() && stack_.back().value->is_object() && stack_.back().slot == nullptr;
  }

  std::nullptr_t fail(std::string message) {
    if (error_.empty()) {
      std::string where = path();
      error_ = where.empty() ? std::move(message) : where + ": " + message;
    }
    return nullptr;
  }

  // The path of the innermost container: "items[3].metadata".
  std::string path() const {
    std::string out;
    for (std::size_t i = 0; i + 1 < stack_.size(); ++i) {
      const Level& level = stack_[i];
      if (level.value->is_array()) {
        out += fmt::format("[{}]", level.value->size() - 1);
      } else if (level.key != nullptr) {
        if (!out.empty()) out += '.';
        out += shorten(*level.key, 80);
      }
    }
    return shorten(out, 160);
  }

private:
  struct Level {
    json* value;
    const std::string* key; // the last key read in this object
    json* slot;             // where the value of that key goes; nullptr when a key is expected
  };
  const Limits& limits_;
  json root_;
  std::vector<Level> stack_;
  std::size_t values_ = 0;
  bool started_ = false;
  std::string error_;
};

// nlohmann's SAX interface over a TreeBuilder.
class JsonSax {
public:
  explicit JsonSax(const Limits& limits) : tree(limits) {}
  TreeBuilder tree;
  std::string parse_error_;

  bool null() { return tree.add(nullptr) != nullptr; }
  bool boolean(bool value) { return tree.add(value) != nullptr; }
  bool number_integer(json::number_integer_t value) { return tree.add(value) != nullptr; }
  bool number_unsigned(json::number_unsigned_t value) { return tree.add(value) != nullptr; }
  bool number_float(json::number_float_t value, const json::string_t&) { return tree.add(value) != nullptr; }
  bool string(json::string_t& value) { return tree.add(std::move(value)) != nullptr; }
  bool binary(json::binary_t& value) { return tree.add(json::binary(std::move(value))) != nullptr; }
  bool start_object(std::size_t) { return tree.start(json::object()) != nullptr; }
  bool key(json::string_t& value) { return tree.key(std::move(value)); }
  bool end_object() { return tree.end(); }
  bool start_array(std::size_t) { return tree.start(json::array()) != nullptr; }
  bool end_array() { return tree.end(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) {
    parse_error_ = e.what();
    return false;
  }

  // The error after sax_parse returned false.
  std::string error() const {
    if (!tree.error().empty()) return tree.error();
    return "malformed JSON: " + parse_error_;
  }
};

bool looks_like_json(std::string_view text) {
  for (char c : text) {
    if (std::isspace(static_cast<unsigned char>(c))) continue;
    return c == '{' || c == '[';
  }
  return false;
}

// Binary data (a NUL byte) is never JSON or YAML text.
void refuse_binary(std::string_view text, std::string_view source) {
  if (auto nul = text.find('\0'); nul != std::string_view::npos)
    throw Error(fmt::format("{}: holds a NUL byte (offset {}): binary data, not JSON or YAML", source, nul));
}

void refuse_oversized(std::string_view text, std::string_view source, const Limits& limits) {
  if (text.size() > limits.max_bytes)
    throw Error(fmt::format("{}: larger than {} bytes", source, limits.max_bytes));
}

json scalar_to_json(const std::string& tag, const std::string& value) {
  if (tag == "!") return value; // quoted: always a string
  if (tag != "?" && !tag.empty()) {
    if (tag == "tag:yaml.org,2002:str") return value;
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

// yaml-cpp's events over a TreeBuilder, one per document. Aliases are expanded by copying the
// anchor's value, counted against the limits; an alias inside the node it names (a recursive
// alias) is refused.
class YamlEvents : public YAML::EventHandler {
public:
  struct Stop {}; // thrown out of the parser on the first error
  explicit YamlEvents(const Limits& limits) : limits_(limits) {}

  std::vector<json> documents;
  std::string error;                                 // empty when none
  YAML::Mark error_mark;

  bool stuck = false; // a document started where the previous one did
  YAML::Mark start;

  void OnDocumentStart(const YAML::Mark& mark) override {
    if (started_ && mark.pos == start.pos) stuck = true;
    started_ = true;
    start = mark;
    tree_ = std::make_unique<TreeBuilder>(limits_);
    anchors_.clear();
    open_.clear();
  }
  void OnDocumentEnd() override {
    if (!tree_->error().empty()) return;
    json document = tree_->take();
    if (!document.is_null()) documents.push_back(std::move(document));
  }
  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override { scalar(mark, "?", anchor, "~", true); }
  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                const std::string& value) override {
    scalar(mark, tag, anchor, value, false);
  }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    if (!ok()) return;
    auto it = anchors_.find(anchor);
    if (it == anchors_.end()) fail(mark, "a recursive alias (an alias inside the node its anchor names)");
    if (tree_->in_object_expecting_key()) {
      if (!it->second.value.is_string()) fail(mark, "a mapping key must be a string");
      tree_->key(it->second.value.get<std::string>());
      return check(mark);
    }
    tree_->add(it->second.value, it->second.count);
    check(mark);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    container(mark, anchor, json::array());
  }
  void OnSequenceEnd() override { close(); }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    container(mark, anchor, json::object());
  }
  void OnMapEnd() override { close(); }

private:
  struct Anchor {
    json value;
    std::size_t count = 1;
  };
  struct Open {
    YAML::anchor_t anchor;
    json* value;
    std::size_t values_before;
  };

  bool ok() const { return error.empty() && tree_ && tree_->error().empty(); }

  // Stops the parse at once (yaml-cpp would go on expanding or recursing).
  [[noreturn]] void fail(const YAML::Mark& mark, const std::string& message) {
    error = message;
    error_mark = mark;
    throw Stop{};
  }
  void check(const YAML::Mark& mark) {
    if (!tree_->error().empty()) fail(mark, tree_->error());
  }

  void scalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor, const std::string& value,
              bool is_null) {
    if (!ok()) return;
    if (tree_->in_object_expecting_key()) {
      tree_->key(is_null ? std::string() : value);
      check(mark);
      return;
    }
    json converted = is_null ? json(nullptr) : scalar_to_json(tag, value);
    if (anchor != YAML::NullAnchor) anchors_[anchor] = Anchor{converted, 1};
    tree_->add(std::move(converted));
    check(mark);
  }

  void container(const YAML::Mark& mark, YAML::anchor_t anchor, json empty) {
    if (!ok()) return;
    if (tree_->in_object_expecting_key()) fail(mark, "a mapping key must be a string, not a list or mapping");
    std::size_t before = tree_->values();
    json* value = tree_->start(std::move(empty));
    check(mark);
    if (!ok()) return;
    open_.push_back(Open{anchor, value, before});
  }

  void close() {
    if (!ok()) return;
    Open done = open_.back();
    open_.pop_back();
    tree_->end();
    if (done.anchor != YAML::NullAnchor) anchors_[done.anchor] = Anchor{*done.value, tree_->values() - done.values_before};
  }

  const Limits& limits_;
  bool started_ = false;
  std::unique_ptr<TreeBuilder> tree_;
  std::map<YAML::anchor_t, Anchor> anchors_;
  std::vector<Open> open_;
};

// All documents of a YAML text. yaml-cpp can loop on some malformed texts (a lone ',' gives
// an endless run of empty documents): a document that starts where the last one started is
// refused.
std::vector<json> parse_yaml(std::string_view text, std::string_view source, const Limits& limits) {
  refuse_oversized(text, source, limits);
  refuse_binary(text, source);
  std::istringstream in{std::string(text)};
  YamlEvents events(limits);
  try {
    YAML::Parser parser(in);
    while (parser.HandleNextDocument(events)) {
      if (events.stuck)
        throw Error(fmt::format("{}: malformed YAML at line {}, column {}", source, events.start.line + 1,
                                events.start.column + 1));
    }
  } catch (const YamlEvents::Stop&) {
    throw Error(fmt::format("{}: line {}, column {}: {}", source, events.error_mark.line + 1,
                            events.error_mark.column + 1, events.error));
  } catch (const YAML::Exception& e) {
    throw Error(fmt::format("{}: malformed YAML: {}", source, e.what()));
  }
  return std::move(events.documents);
}

std::string type_phrase(const json& value) {
  switch (value.type()) {
  case json::value_t::string: return fmt::format("a string (\"{}\")", shorten(value.get_ref<const std::string&>(), 60));
  case json::value_t::array: return "a list";
  case json::value_t::object: return "an object";
  case json::value_t::null: return "null";
  case json::value_t::boolean: return fmt::format("a boolean ({})", value.get<bool>());
  default: return fmt::format("a number ({})", value.dump());
  }
}

// What is wrong with an element as a Kubernetes object: {field, message}; empty when nothing.
std::pair<std::string, std::string> object_fault(const json& item) {
  if (!item.is_object()) return {"", type_phrase(item) + ", not a Kubernetes object"};
  for (const char* key : {"apiVersion", "kind"}) {
    auto it = item.find(key);
    if (it == item.end() || it->is_null()) return {key, "is required: not a Kubernetes object"};
    if (!it->is_string()) return {key, "must be a string, not " + type_phrase(*it)};
    if (it->get_ref<const std::string&>().empty()) return {key, "is required: not a Kubernetes object"};
  }
  auto metadata = item.find("metadata");
  if (metadata == item.end() || metadata->is_null()) return {};
  if (!metadata->is_object()) return {"metadata", "must be an object, not " + type_phrase(*metadata)};
  for (const char* key : {"name", "namespace"}) {
    auto it = metadata->find(key);
    if (it != metadata->end() && !it->is_null() && !it->is_string())
      return {std::string("metadata.") + key, "must be a string, not " + type_phrase(*it)};
  }
  return {};
}

std::string metadata_string(const json& item, const char* key) {
  auto metadata = item.find("metadata");
  if (metadata == item.end() || !metadata->is_object()) return {};
  auto it = metadata->find(key);
  return it != metadata->end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool is_list(const json& document) {
  if (!document.is_object()) return false;
  auto kind = document.find("kind");
  if (kind == document.end() || !kind->is_string()) return false;
  const auto& name = kind->get_ref<const std::string&>();
  auto items = document.find("items");
  return name.size() >= 4 && name.ends_with("List") && items != document.end() &&
         (items->is_array() || items->is_null());
}

} // namespace

// A stream buffer over the input that reads what is available (never waits for more than one
// byte: a pipe delivers one document at a time) and ends a document after `limit` bytes: the
// get area never reaches past the limit, whatever is already buffered.
class JsonStreamReader::Buffer : public std::streambuf {
public:
  explicit Buffer(std::streambuf* source) : source_(source) { setg(data_, data_, data_); }

  // Starts counting a document's bytes.
  void mark(std::size_t limit) {
    start_ = position();
    limit_ = limit;
    hit_ = false;
    setg(eback(), gptr(), window_end());
  }
  bool hit() const { return hit_; }

  // Whether more than whitespace is here already: buffered, or waiting in the source.
  bool ready() {
    for (const char* p = gptr(); p < end_; ++p)
      if (!std::isspace(static_cast<unsigned char>(*p))) return true;
    return source_->in_avail() > 0;
  }

  // Skips to the end of the line (the next document of NDJSON).
  void skip_line() {
    mark(kUnlimited);
    while (true) {
      int_type c = sbumpc();
      if (traits_type::eq_int_type(c, traits_type::eof()) || c == '\n') return;
    }
  }

protected:
  int_type underflow() override {
    if (gptr() < egptr()) return traits_type::to_int_type(*gptr());
    if (limit_ != kUnlimited && position() - start_ >= limit_) {
      hit_ = true;
      return traits_type::eof();
    }
    if (gptr() == end_) {
      // Nothing buffered: one byte (waiting for it), then whatever else is there already.
      int_type first = source_->sbumpc();
      if (traits_type::eq_int_type(first, traits_type::eof())) return traits_type::eof();
      base_ += static_cast<std::size_t>(end_ - data_);
      data_[0] = traits_type::to_char_type(first);
      std::streamsize more = 0;
      std::streamsize available = source_->in_avail();
      if (available > 0)
        more = source_->sgetn(data_ + 1, std::min<std::streamsize>(available, sizeof data_ - 1));
      end_ = data_ + 1 + std::max<std::streamsize>(more, 0);
      setg(data_, data_, data_);
    }
    setg(eback(), gptr(), window_end());
    return traits_type::to_int_type(*gptr());
  }

private:
  static constexpr std::size_t kUnlimited = static_cast<std::size_t>(-1);
  std::size_t position() const { return base_ + static_cast<std::size_t>(gptr() - data_); }
  char* window_end() {
    if (limit_ == kUnlimited) return end_;
    std::size_t room = start_ + limit_ - base_; // offset in data_ where the limit falls
    return room < static_cast<std::size_t>(end_ - data_) ? std::max(gptr(), data_ + room) : end_;
  }

  std::streambuf* source_;
  char data_[65536];
  char* end_ = data_;         // end of what data_ holds
  std::size_t base_ = 0;      // offset in the input of data_[0]
  std::size_t start_ = 0;     // offset in the input where the current document started
  std::size_t limit_ = kUnlimited;
  bool hit_ = false;
};

JsonStreamReader::JsonStreamReader(std::istream& in, std::string source, Limits limits)
    : buffer_(std::make_unique<Buffer>(in.rdbuf())), in_(std::make_unique<std::istream>(buffer_.get())),
      source_(std::move(source)), limits_(limits) {}

JsonStreamReader::~JsonStreamReader() = default;

bool JsonStreamReader::ready() { return buffer_->ready(); }

std::string JsonStreamReader::name() const { return fmt::format("{}: document {}", source_, count_); }

std::optional<json> JsonStreamReader::next() {
  // Skip whitespace between documents; end of input is a normal end.
  using traits = std::char_traits<char>;
  while (true) {
    auto c = buffer_->sgetc();
    if (traits::eq_int_type(c, traits::eof())) return std::nullopt;
    if (!std::isspace(traits::to_char_type(c))) break;
    buffer_->sbumpc();
  }
  ++count_;
  buffer_->mark(limits_.max_bytes);
  in_->clear();
  JsonSax sax(limits_);
  bool parsed = false;
  try {
    parsed = json::sax_parse(*in_, &sax, json::input_format_t::json, false);
  } catch (const json::exception& e) {
    sax.parse_error_ = e.what();
  }
  if (parsed && sax.tree.done()) return sax.tree.take();
  std::string message = buffer_->hit() ? fmt::format("larger than {} bytes", limits_.max_bytes) : sax.error();
  // Go on from the next line: NDJSON (what k8slb-watch writes) has one document a line.
  in_->clear();
  buffer_->skip_line();
  throw Error(fmt::format("{}: {}", name(), message));
}

json parse_json(std::string_view text, std::string_view source, const Limits& limits) {
  refuse_oversized(text, source, limits);
  JsonSax sax(limits);
  bool parsed = false;
  try {
    parsed = json::sax_parse(text.begin(), text.end(), &sax, json::input_format_t::json, true);
  } catch (const json::exception& e) {
    sax.parse_error_ = e.what();
  }
  if (!parsed) throw Error(fmt::format("{}: {}", source, sax.error()));
  return sax.tree.take();
}

json yaml_to_json(std::string_view text, std::string_view source, const Limits& limits) {
  auto documents = parse_yaml(text, source, limits);
  return documents.empty() ? json() : std::move(documents.front());
}

std::vector<json> parse_documents(std::string_view text, std::string_view source, const Limits& limits) {
  refuse_binary(text, source);
  if (!looks_like_json(text)) return parse_yaml(text, source, limits);
  std::vector<json> documents;
  std::istringstream in{std::string(text)};
  JsonStreamReader reader(in, std::string(source), limits);
  while (auto document = reader.next()) documents.push_back(std::move(*document));
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
    if (is_list(document)) {
      const json& list_items = document["items"];
      if (list_items.is_array())
        for (const auto& item : list_items) items.push_back(item);
      continue;
    }
    items.push_back(document);
  }
  return items;
}

void take_objects(std::vector<json> documents, std::string_view source, Objects& into) {
  std::size_t count = documents.size();
  auto take = [&](json& item, const std::string& where) {
    auto [field, message] = object_fault(item);
    if (!message.empty()) {
      into.errors.push_back(describe(where, field, message));
      return;
    }
    std::string ns = metadata_string(item, "namespace");
    std::string name = metadata_string(item, "name");
    if (!name.empty()) {
      const std::string& kind = item["kind"].get_ref<const std::string&>();
      std::string shown = ns.empty() ? name : ns + "/" + name;
      std::string key = kind + "/" + (ns.empty() ? "default" : ns) + "/" + name;
      auto [first, inserted] = into.seen_.emplace(key, where);
      if (!inserted) {
        into.errors.push_back(describe(
            shown, "", fmt::format("{} appears twice in the input ({} and {}): the first is used", kind,
                                   first->second, where)));
        return;
      }
    }
    into.items.push_back(std::move(item));
  };
  for (std::size_t d = 0; d < count; ++d) {
    json& document = documents[d];
    std::string where = count > 1 ? fmt::format("{}: document {}", source, d + 1) : std::string(source);
    if (document.is_null()) continue;
    if (document.is_array() || is_list(document)) {
      json& elements = document.is_array() ? document : document["items"];
      // An empty List says "there are none"; a List of nothing but bad elements does not.
      if (!document.is_array() && elements.empty()) into.explicit_list = true;
      if (elements.is_null()) continue;
      for (std::size_t i = 0; i < elements.size(); ++i) take(elements[i], fmt::format("{}: items[{}]", where, i));
      continue;
    }
    take(document, where);
  }
}

Objects take_objects(std::vector<json> documents, std::string_view source) {
  Objects objects;
  take_objects(std::move(documents), source, objects);
  return objects;
}

void require_objects(const Objects& objects, std::string_view source) {
  if (!objects.none()) return;
  if (objects.errors.empty())
    throw Error(fmt::format("{}: holds no Kubernetes object (an empty input is refused; an empty List "
                            "says there are none)",
                            source));
  if (objects.errors.size() == 1) throw Error(objects.errors.front());
  throw Error(fmt::format("{}: holds no Kubernetes object; the first of {} elements refused: {}", source,
                          objects.errors.size(), objects.errors.front()));
}

std::string list_first_error(std::string_view source) {
  return fmt::format("{}: a watch event before the first List: the events must follow a List of every "
                     "object (as k8slb-watch --events prints them)",
                     source);
}

json make_list(std::vector<json> items) {
  return json{{"apiVersion", "v1"}, {"kind", "List"}, {"metadata", {{"resourceVersion", ""}}},
              {"items", std::move(items)}};
}

std::string read_file(const std::string& path, std::size_t max_bytes) {
  std::string name = path == "-" ? "<stdin>" : path;
  std::ifstream file;
  std::istream* in = &std::cin;
  if (path != "-") {
    file.open(path, std::ios::binary);
    if (!file) throw Error(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
    in = &file;
  }
  std::string text;
  char chunk[65536];
  while (true) {
    in->read(chunk, sizeof chunk);
    std::streamsize got = in->gcount();
    if (got <= 0) break;
    text.append(chunk, static_cast<std::size_t>(got));
    if (text.size() > max_bytes) throw Error(fmt::format("{}: larger than {} bytes", name, max_bytes));
  }
  if (in->bad()) throw Error(fmt::format("{}: cannot read: {}", name, std::strerror(errno)));
  return text;
}

Objects read_objects(const std::vector<std::string>& paths) {
  Objects objects;
  std::string names;
  for (const auto& path : paths) {
    std::string name = path == "-" ? "<stdin>" : path;
    names += (names.empty() ? "" : ", ") + name;
    take_objects(parse_documents(read_file(path), name), name, objects);
  }
  require_objects(objects, names);
  return objects;
}

namespace {

void append_escaped(std::string& out, const std::string& text) {
  const bool ascii = std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  if (!ascii) { // nlohmann's own escaping: UTF-8 decoded, invalid sequences replaced
    out += json(text).dump(-1, ' ', false, json::error_handler_t::replace);
    return;
  }
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  std::size_t clean = 0; // start of the run of bytes copied as they are
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(text, clean, i - clean);
    clean = i + 1;
    switch (c) {
    case '"': out += "\\\""; break;
    case '\\': out += "\\\\"; break;
    case '\b': out += "\\b"; break;
    case '\f': out += "\\f"; break;
    case '\n': out += "\\n"; break;
    case '\r': out += "\\r"; break;
    case '\t': out += "\\t"; break;
    default:
      out += "\\u00";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  out.append(text, clean, std::string::npos);
  out += '"';
}

void append_value(std::string& out, const json& value) {
  switch (value.type()) {
  case json::value_t::object: {
    out += '{';
    bool first = true;
    for (const auto& [key, member] : value.items()) {
      if (!first) out += ',';
      first = false;
      append_escaped(out, key);
      out += ':';
      append_value(out, member);
    }
    out += '}';
    return;
  }
  case json::value_t::array: {
    out += '[';
    bool first = true;
    for (const auto& member : value) {
      if (!first) out += ',';
      first = false;
      append_value(out, member);
    }
    out += ']';
    return;
  }
  case json::value_t::string: append_escaped(out, value.get_ref<const std::string&>()); return;
  case json::value_t::boolean: out += value.get<bool>() ? "true" : "false"; return;
  case json::value_t::null: out += "null"; return;
  case json::value_t::number_integer: out += std::to_string(value.get<std::int64_t>()); return;
  case json::value_t::number_unsigned: out += std::to_string(value.get<std::uint64_t>()); return;
  default: // floats (nlohmann's shortest form), binary, discarded
    out += value.dump(-1, ' ', false, json::error_handler_t::replace);
  }
}

} // namespace

std::string dump_line(const json& document) {
  std::string out;
  append_value(out, document);
  return out;
}

std::string observed_at_text(std::chrono::system_clock::time_point time) {
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(time.time_since_epoch()).count();
  return fmt::format("{}.{:06}", micros / 1000000, micros % 1000000);
}

std::optional<std::chrono::system_clock::time_point> observed_at(const json& document) {
  if (!document.is_object()) return std::nullopt;
  auto text = document.value(json::json_pointer("/metadata/annotations/k8slb.io~1observed-at"), json());
  if (!text.is_string()) return std::nullopt;
  const auto& value = text.get_ref<const std::string&>();
  double seconds = 0;
  auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), seconds);
  if (error != std::errc() || end != value.data() + value.size() || !(seconds > 0)) return std::nullopt;
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::duration<double>(seconds)));
}

void set_observed_at(json& document, const std::optional<std::chrono::system_clock::time_point>& time) {
  if (time && document.is_object()) document["metadata"]["annotations"][kObservedAtAnnotation] = observed_at_text(*time);
}

} // namespace k8slb
