// Inputs that hold no Kubernetes object, duplicates, and hostile texts: each is an error naming
// the input (and the object, key or field), in bounded time and memory (issue 7, items 1, 10,
// 11, 13).
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "k8slb/documents.hpp"
#include "k8slb/error.hpp"
#include "k8slb/model.hpp"

namespace k8slb {
namespace {

// The error parse_documents + take_objects + require_objects give for a text; "" when none.
std::string input_error(const std::string& text) {
  try {
    require_objects(take_objects(parse_documents(text, "in.yaml"), "in.yaml"), "in.yaml");
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

std::string nested(const std::string& open, const std::string& close, int depth) {
  std::string text;
  for (int i = 0; i < depth; ++i) text += open;
  for (int i = 0; i < depth; ++i) text += close;
  return text;
}

// Nine levels of nine aliases: 9^9 values once expanded.
std::string alias_bomb() {
  std::string text = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n";
  for (char c = 'b'; c <= 'i'; ++c) {
    std::string prev(1, static_cast<char>(c - 1));
    text += std::string(1, c) + ": &" + c + " [";
    for (int i = 0; i < 9; ++i) text += (i ? ",*" : "*") + prev;
    text += "]\n";
  }
  return text;
}

TEST(Input, WhatIsNotAKubernetesObjectIsRefusedNamingTheInput) {
  struct Case {
    const char* description;
    std::string text;
    const char* error; // substring of the error
  };
  const Case cases[] = {
      {"empty input", "", "in.yaml: holds no Kubernetes object"},
      {"only whitespace and comments", "\n# nothing\n", "in.yaml: holds no Kubernetes object"},
      {"a bare word", "garbage\n", "in.yaml: a string (\"garbage\"), not a Kubernetes object"},
      {"a bare number", "5", "in.yaml: a number (5), not a Kubernetes object"},
      {"an object without apiVersion/kind", "{\"foo\": 1}", "in.yaml: apiVersion: is required"},
      {"kind of the wrong type", "{\"apiVersion\": \"v1\", \"kind\": 5}", "in.yaml: kind: must be a string, not a number"},
      {"metadata.namespace of the wrong type",
       "{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"a\", \"namespace\": 5}}",
       "in.yaml: metadata.namespace: must be a string"},
      {"binary data", std::string("\0\0\0\x01garbage", 11), "in.yaml: holds a NUL byte (offset 0)"},
      {"a List of garbage", "{\"kind\": \"List\", \"apiVersion\": \"v1\", \"items\": [\"x\"]}",
       "in.yaml: items[0]: a string (\"x\"), not a Kubernetes object"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    std::string error = input_error(c.text);
    EXPECT_NE(error.find(c.error), std::string::npos) << error;
  }
}

TEST(Input, AnEmptyListIsAValidNoObjects) {
  EXPECT_EQ(input_error(R"({"apiVersion": "v1", "kind": "List", "items": []})"), "");
  EXPECT_EQ(input_error("apiVersion: v1\nkind: ServiceList\nitems: []\n"), "");
}

TEST(Input, ABadElementIsLeftOutAndTheOthersKept) {
  auto objects = take_objects(parse_documents(R"({"apiVersion": "v1", "kind": "List", "items": [
    {"apiVersion": "v1", "kind": 5},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "good"}}]})", "<stdin>"), "<stdin>");
  ASSERT_EQ(objects.items.size(), 1u);
  EXPECT_EQ(objects.items[0]["metadata"]["name"], "good");
  ASSERT_EQ(objects.errors.size(), 1u);
  EXPECT_EQ(objects.errors[0], "<stdin>: items[0]: kind: must be a string, not a number (5)");
}

TEST(Input, DuplicatesAreErrorsNamingTheObjectAndKey) {
  struct Case {
    const char* description;
    std::string text;
    const char* error;
  };
  const Case cases[] = {
      {"a JSON key twice", R"({"pools": {"default": {"network": "a"}, "default": {"network": "b"}}})",
       "in.yaml: document 1: pools: duplicate key 'default'"},
      {"a YAML key twice", "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  name: b\n",
       "in.yaml: line 5, column 3: metadata: duplicate key 'name'"},
      {"a YAML key twice in a list item", "items:\n- port: 80\n  port: 81\n", "items[0]: duplicate key 'port'"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    try {
      parse_documents(c.text, "in.yaml");
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.error), std::string::npos) << e.what();
    }
  }
}

TEST(Input, TheSameObjectTwiceIsAProblemForItAndOnlyTheFirstIsKept) {
  auto objects = take_objects(parse_documents(R"(
{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"}, "spec": {"n": 1}}
{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"n": 2}}
{"apiVersion": "v1", "kind": "EndpointSlice", "metadata": {"name": "web"}}
)", "<stdin>"), "<stdin>");
  ASSERT_EQ(objects.items.size(), 2u); // the Service once, the EndpointSlice of the same name
  EXPECT_EQ(objects.items[0]["spec"]["n"], 1);
  ASSERT_EQ(objects.errors.size(), 1u);
  EXPECT_EQ(objects.errors[0],
            "web: Service appears twice in the input (<stdin>: document 1 and <stdin>: document 2): the first is used");
}

TEST(Input, HostileTextsEndInBoundedTimeWithAnError) {
  struct Case {
    const char* description;
    std::string text;
    const char* error;
  };
  const Case cases[] = {
      {"a YAML alias bomb", alias_bomb(), "values in one document once aliases are expanded"},
      {"a recursive alias", "a: &a [*a]\n", "a recursive alias"},
      {"a lone comma", ",", "malformed YAML"},
      {"a comma after a document", "--- [1, 2]\n,\n", "malformed YAML"},
      {"JSON nested 100,000 deep", nested("[", "]", 100000), "nested more than 512 deep"},
      {"JSON objects nested 100,000 deep", nested("{\"a\":", "}", 100000), "nested more than 512 deep"},
      {"YAML nested 100,000 deep", "a: " + nested("[", "]", 100000), "in.yaml"},
      {"invalid UTF-8 in a JSON string", "{\"a\": \"\xff\"}", "malformed JSON"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    try {
      parse_documents(c.text, "in.yaml", Limits{std::size_t{1} << 20, 1'000'000, 512});
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.error), std::string::npos) << e.what();
    }
  }
}

TEST(Input, ADocumentPastTheSizeLimitIsRefused) {
  std::string big = "{\"a\": \"" + std::string(2000, 'x') + "\"}";
  EXPECT_THROW(parse_json(big, "in.json", Limits{1000, 100, 10}), Error);
  EXPECT_THROW(parse_documents("a: " + std::string(2000, 'x'), "in.yaml", Limits{1000, 100, 10}), Error);
  EXPECT_NO_THROW(parse_json(big, "in.json", Limits{3000, 100, 10}));
}

TEST(Input, InAStreamABadDocumentIsThatDocumentsErrorAndTheStreamGoesOn) {
  std::string big = "{\"a\": \"" + std::string(5000, 'x') + "\"}";
  std::istringstream in("{\"a\": 1}\n{\"b\": }\n" + big + "\n{\"a\": {\"x\": 1, \"x\": 2}}\n{\"c\": 3}\n");
  JsonStreamReader reader(in, "<stdin>", Limits{1000, 100, 10});
  std::vector<std::string> seen;
  while (true) {
    try {
      auto document = reader.next();
      if (!document) break;
      seen.push_back(document->dump().substr(0, 60));
    } catch (const Error& e) {
      seen.push_back(std::string("error: ") + e.what());
    }
  }
  ASSERT_EQ(seen.size(), 5u);
  EXPECT_EQ(seen[0], "{\"a\":1}");
  EXPECT_NE(seen[1].find("error: <stdin>: document 2: malformed JSON"), std::string::npos) << seen[1];
  EXPECT_EQ(seen[2], "error: <stdin>: document 3: larger than 1000 bytes");
  EXPECT_EQ(seen[3], "error: <stdin>: document 4: a: duplicate key 'x'");
  EXPECT_EQ(seen[4], "{\"c\":3}");
}

TEST(Input, ATypeErrorInAServiceIsThatServicesErrorNamingTheField) {
  struct Case {
    const char* description;
    std::string service;
    const char* error;
  };
  const Case cases[] = {
      {"port as a string with invalid UTF-8",
       R"({"kind": "Service", "metadata": {"name": "a"}, "spec": {"ports": [{"port": ")" "\xff\xfe" R"("}]}})",
       "default/a: spec.ports[0].port: must be an integer, not \"\xef\xbf\xbd\xef\xbf\xbd\""},
      {"namespace not a string", R"({"kind": "Service", "metadata": {"name": "a", "namespace": 5}})",
       "metadata.namespace: must be a string"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    // YAML reads invalid UTF-8 as it is (nlohmann's JSON parser would refuse it whole).
    std::vector<json> items;
    items.push_back(yaml_to_json(c.service, "in.yaml"));
    auto snapshot = model::make_snapshot(std::move(items));
    ASSERT_EQ(snapshot.errors.size(), 1u);
    EXPECT_NE(snapshot.errors[0].find(c.error), std::string::npos) << snapshot.errors[0];
  }
}

TEST(Messages, HugeValuesAreCutToAReadableLengthWithAMarker) {
  std::string value(200 * 1024, 'v');
  std::string message = describe("default/web", "metadata.annotations[loadbalancer/mode]",
                                 "'" + value + "' is not one of tcp, http");
  EXPECT_LT(message.size(), 600u);
  EXPECT_NE(message.find("...[204"), std::string::npos) << message;
  EXPECT_NE(message.find(" bytes cut]..."), std::string::npos);
  EXPECT_TRUE(message.ends_with("' is not one of tcp, http")) << message; // what is wrong stays
  EXPECT_EQ(shorten("short"), "short");
  // Cut on a character boundary: no half of a UTF-8 sequence.
  std::string accents;
  for (int i = 0; i < 400; ++i) accents += "\xc3\xa9";
  std::string cut = shorten(accents, 101);
  EXPECT_NO_THROW(json(cut).dump(-1, ' ', false, json::error_handler_t::strict));
}

} // namespace
} // namespace k8slb

namespace k8slb {
namespace {

TEST(ObservedAt, ReadBackAsWrittenAndOnlyWhenWellFormed) {
  const auto time = std::chrono::system_clock::time_point(std::chrono::microseconds(1764331200123456));
  EXPECT_EQ(observed_at_text(time), "1764331200.123456");
  json list = {{"apiVersion", "v1"}, {"kind", "List"}, {"items", json::array()}};
  set_observed_at(list, time);
  auto read = observed_at(list);
  ASSERT_TRUE(read.has_value());
  EXPECT_LT(std::chrono::abs(*read - time), std::chrono::microseconds(2));
  struct Case {
    std::string annotation;
    bool read;
  };
  const std::vector<Case> cases = {
      {"1764331200.5", true}, {"1764331200", true}, {"", false},  {"soon", false},
      {"-5", false},          {"12x", false},       {"0", false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.annotation);
    json document = {{"kind", "List"}, {"metadata", {{"annotations", {{kObservedAtAnnotation, c.annotation}}}}}};
    EXPECT_EQ(observed_at(document).has_value(), c.read);
  }
  EXPECT_FALSE(observed_at(json::array()).has_value());
  EXPECT_FALSE(observed_at(json{{"metadata", {{"annotations", {{kObservedAtAnnotation, 5}}}}}}).has_value());
  json untouched = {{"kind", "List"}};
  set_observed_at(untouched, std::nullopt);
  EXPECT_EQ(untouched, (json{{"kind", "List"}}));
}

} // namespace
} // namespace k8slb
