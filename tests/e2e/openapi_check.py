"""Checks Kubernetes objects against the API's schemas, as `kubectl apply --validate=strict`
does: every field known to its type (unknown fields are errors), values of the declared types,
required fields present. The schemas are the models of Debian's python3-kubernetes (the
official Python client, generated from the Kubernetes OpenAPI document)."""

import kubernetes.client as models

SCALARS = {"str": str, "bool": bool, "float": (int, float)}


def _required(cls):
    """Fields a model refuses to be without (its generated setters raise on None)."""
    config = models.Configuration()
    config.client_side_validation = True
    required = set()
    instance = cls.__new__(cls)
    instance.local_vars_configuration = config
    for attribute in cls.openapi_types:
        try:
            setattr(instance, attribute, None)
        except ValueError:
            required.add(attribute)
    return required


def _check(value, type_name, path, errors):
    if type_name.startswith("list["):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for index, item in enumerate(value):
            _check(item, type_name[5:-1], f"{path}[{index}]", errors)
    elif type_name.startswith("dict("):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping, got {type(value).__name__}")
            return
        item_type = type_name[5:-1].split(", ", 1)[1]
        for key, item in value.items():
            _check(item, item_type, f"{path}.{key}", errors)
    elif type_name == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{path}: expected an integer, got {value!r}")
    elif type_name in SCALARS:
        if not isinstance(value, SCALARS[type_name]):
            errors.append(f"{path}: expected {type_name}, got {value!r}")
    elif type_name in ("object", "datetime"):
        return  # IntOrString, RawExtension, times: any scalar or mapping
    else:
        cls = getattr(models, type_name)
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a {type_name} mapping, got {value!r}")
            return
        by_json_name = {json: attribute for attribute, json in cls.attribute_map.items()}
        for key, item in value.items():
            if key not in by_json_name:
                errors.append(f"{path}.{key}: unknown field of {type_name}")
                continue
            _check(item, cls.openapi_types[by_json_name[key]], f"{path}.{key}", errors)
        for attribute in _required(cls):
            if cls.attribute_map[attribute] not in value:
                errors.append(f"{path}.{cls.attribute_map[attribute]}: required by {type_name}")


def errors_of(document):
    """The schema errors of one object (an empty list when it is valid)."""
    group_version = document.get("apiVersion", "")
    version = group_version.split("/")[-1]
    type_name = version.capitalize() + document.get("kind", "")
    if not hasattr(models, type_name):
        return [f"{group_version} {document.get('kind')}: no schema for this kind"]
    errors = []
    name = document.get("metadata", {}).get("name", "?")
    _check(document, type_name, f"{document['kind']}/{name}", errors)
    return errors
