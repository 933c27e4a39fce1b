// Watch events and the store they are applied to: pure functions of their inputs.
#include "k8slb/kube.hpp"

#include <cassert>

#include "k8slb/documents.hpp"

namespace k8slb::kube {

std::string_view to_string(EventType type) {
  switch (type) {
  case EventType::added: return "ADDED";
  case EventType::modified: return "MODIFIED";
  case EventType::deleted: return "DELETED";
  case EventType::bookmark: return "BOOKMARK";
  case EventType::error: return "ERROR";
  }
  return "?";
}

std::string WatchEvent::resource_version() const {
  if (!object.is_object()) return "";
  auto metadata = object.find("metadata");
  if (metadata == object.end() || !metadata->is_object()) return "";
  auto rv = metadata->find("resourceVersion");
  return rv != metadata->end() && rv->is_string() ? rv->get<std::string>() : "";
}

WatchEvent decode_watch_event(std::string_view line) {
  json doc = parse_json(line, "watch event"); // bounded: depth, size, duplicate keys
  if (!doc.is_object()) fail("watch event", "", "expected an object with type and object");
  auto type = doc.find("type");
  if (type == doc.end() || !type->is_string()) fail("watch event", "type", "missing");
  auto object = doc.find("object");
  if (object == doc.end() || !object->is_object()) fail("watch event", "object", "missing or not an object");
  const std::string name = type->get<std::string>();
  WatchEvent event;
  if (name == "ADDED") event.type = EventType::added;
  else if (name == "MODIFIED") event.type = EventType::modified;
  else if (name == "DELETED") event.type = EventType::deleted;
  else if (name == "BOOKMARK") event.type = EventType::bookmark;
  else if (name == "ERROR") event.type = EventType::error;
  else fail("watch event", "type", "unknown type \"" + name + "\"");
  event.object = std::move(*object);
  if (event.type == EventType::error) return event; // a Status; see status_code()
  auto metadata = event.object.find("metadata");
  if (metadata == event.object.end() || !metadata->is_object())
    fail("watch event", "object.metadata", "missing or not an object");
  if (event.type == EventType::bookmark) return event;
  auto object_name = metadata->find("name");
  if (object_name == metadata->end() || !object_name->is_string() ||
      object_name->get_ref<const std::string&>().empty())
    fail("watch event", "object.metadata.name", "missing or not a string");
  auto ns = metadata->find("namespace");
  if (ns != metadata->end() && !ns->is_null() && !ns->is_string())
    fail("watch event", "object.metadata.namespace", "must be a string");
  return event;
}

// "namespace/name"; "" when the object has no name (such an object is not stored).
std::string object_key(const json& object) {
  auto text = [](const json& parent, const char* key) {
    auto it = parent.find(key);
    return it != parent.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  if (!object.is_object()) return {};
  auto metadata = object.find("metadata");
  if (metadata == object.end() || !metadata->is_object()) return {};
  std::string name = text(*metadata, "name");
  if (name.empty()) return {};
  std::string ns = text(*metadata, "namespace");
  return ns.empty() ? name : ns + "/" + name;
}

Store::Store(ResourceKind kind) : kind_(std::move(kind)) {}

// The text kept and printed: compact, keys sorted (nlohmann's objects are), invalid UTF-8
// replaced. Two objects with the same content have the same text.
std::string Store::text_of(const json& object) {
  return object.dump(-1, ' ', false, json::error_handler_t::replace);
}

json Store::normalised(json object) const {
  object["kind"] = kind_.kind;
  object["apiVersion"] = kind_.api_version();
  // Bookkeeping that k8slb never reads and that can be larger than the rest of the object:
  // server-side apply's field owners and kubectl's copy of the last applied manifest.
  if (auto metadata = object.find("metadata"); metadata != object.end() && metadata->is_object()) {
    metadata->erase("managedFields");
    if (auto annotations = metadata->find("annotations");
        annotations != metadata->end() && annotations->is_object()) {
      annotations->erase(kLastAppliedAnnotation);
      if (annotations->empty()) metadata->erase(annotations);
    }
  }
  return object;
}

std::optional<Change> Store::apply(const WatchEvent& event) {
  assert(event.type != EventType::error && "ERROR events are handled by the watcher");
  if (std::string rv = event.resource_version(); !rv.empty()) resource_version_ = std::move(rv);
  switch (event.type) {
  case EventType::bookmark:
  case EventType::error:
    return std::nullopt;
  case EventType::added:
  case EventType::modified: {
    json object = normalised(event.object);
    std::string key = object_key(object);
    std::string text = text_of(object);
    auto [it, inserted] = objects_.try_emplace(key, text);
    if (!inserted) {
      if (it->second == text) return std::nullopt; // replayed or unchanged
      it->second = text;
    }
    return Change{std::move(key), std::move(object), std::move(text)};
  }
  case EventType::deleted: {
    std::string key = object_key(event.object);
    if (objects_.erase(key) == 0) return std::nullopt;
    return Change{std::move(key), std::nullopt, {}};
  }
  }
  return std::nullopt;
}

std::vector<Change> Store::replace(std::vector<json> items, std::string resource_version) {
  std::map<std::string, std::pair<json, std::string>> fresh; // key -> (object, text)
  for (auto& item : items) {
    std::string key = object_key(item);
    if (key.empty()) continue; // not an object with a name: nothing k8slb could use
    json object = normalised(std::move(item));
    std::string text = text_of(object);
    fresh.insert_or_assign(std::move(key), std::make_pair(std::move(object), std::move(text)));
  }
  std::vector<Change> changes;
  auto old_it = objects_.begin();
  auto new_it = fresh.begin();
  while (old_it != objects_.end() || new_it != fresh.end()) {
    if (new_it == fresh.end() || (old_it != objects_.end() && old_it->first < new_it->first)) {
      changes.push_back({old_it->first, std::nullopt, {}});
      ++old_it;
    } else if (old_it == objects_.end() || new_it->first < old_it->first) {
      changes.push_back({new_it->first, std::move(new_it->second.first), new_it->second.second});
      ++new_it;
    } else {
      if (old_it->second != new_it->second.second)
        changes.push_back({new_it->first, std::move(new_it->second.first), new_it->second.second});
      ++old_it;
      ++new_it;
    }
  }
  objects_.clear();
  for (auto& [key, entry] : fresh) objects_.emplace_hint(objects_.end(), key, std::move(entry.second));
  resource_version_ = std::move(resource_version);
  return changes;
}

} // namespace k8slb::kube
