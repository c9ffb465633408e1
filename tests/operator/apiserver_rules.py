"""What the Kubernetes API server does with a custom resource, emulated from the CRD's YAML alone.

* ``apply_defaults``: structural defaulting (the apiextensions algorithm: a missing property gets
  its schema default, then every present property, defaulted or not, is defaulted in turn);
* ``schema_errors``: OpenAPI v3 validation with ``jsonschema`` (Draft 4: OpenAPI 3.0's boolean
  ``exclusiveMinimum``), strict about unknown fields as kubectl's default field validation is;
* ``CelRules``: the ``x-kubernetes-validations`` rules evaluated with cel-python, ``self`` typed
  from the schema (integer -> int, number -> double) as the API server types it;
* ``structural_problems``: the structural-schema rules the API server enforces on a CRD.

Nothing here knows about ArcticInferenceService: it reads the generated YAML, so the tests check
what a cluster would get. cel-python and jsonschema are required (an ImportError fails the run).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

from arctic_operator.crd import CRD_FILE_NAME

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "crds" / CRD_FILE_NAME
SAMPLES_DIR = REPO / "docs" / "samples"

INT_OR_STRING_ANY_OF = [{"type": "integer"}, {"type": "string"}]


def load_crd(path: Path = CRD_PATH) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        crd: dict[str, Any] = yaml.safe_load(f)
    return crd


def openapi(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def load_yaml(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        obj: dict[str, Any] = yaml.safe_load(f)
    return obj


# --------------------------------------------------------------------------------------------
# Schema walking
# --------------------------------------------------------------------------------------------


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every node of a structural schema with its JSON path (``spec.env[].name``)."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}" if path else name)
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")


def node_at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """The node at a dotted path of properties (``spec.speculation``)."""
    node = schema
    for part in path.split("."):
        node = node["properties"][part]
    return node


# --------------------------------------------------------------------------------------------
# Defaulting
# --------------------------------------------------------------------------------------------


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """``value`` defaulted by ``schema`` as the API server does it (a new object; input untouched)."""
    value = copy.deepcopy(value)
    _default(schema, value)
    return value


def _default(schema: dict[str, Any], value: Any) -> None:
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name, sub in properties.items():
            if "default" in sub and value.get(name) is None:
                value[name] = copy.deepcopy(sub["default"])
        for name, item in value.items():
            if name in properties:
                _default(properties[name], item)
            elif isinstance(schema.get("additionalProperties"), dict):
                _default(schema["additionalProperties"], item)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            _default(schema["items"], item)


# --------------------------------------------------------------------------------------------
# OpenAPI validation
# --------------------------------------------------------------------------------------------


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with unknown fields forbidden wherever it lists properties (kubectl's default
    ``--validate=strict``), except metadata, whose other fields the API server knows itself."""
    strict = copy.deepcopy(schema)
    for path, node in walk(strict):
        if (
            path != "metadata"
            and "properties" in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
            and "additionalProperties" not in node
        ):
            node["additionalProperties"] = False
    return strict


def schema_errors(schema: dict[str, Any], obj: Any, *, strict: bool = True) -> list[tuple[str, str]]:
    """(JSON path, message) for every schema violation of ``obj`` (validated as given: default it
    first to check what the API server stores)."""
    validator = jsonschema.Draft4Validator(strict_schema(schema) if strict else schema)
    errors = []
    for error in validator.iter_errors(obj):
        path = ""
        for part in error.absolute_path:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        errors.append((path, error.message))
    return sorted(errors)


# --------------------------------------------------------------------------------------------
# Structural check (no jsonschema): what the API server prunes or rejects in a value it stores
# --------------------------------------------------------------------------------------------

_INT32 = (-(2**31), 2**31 - 1)


def _is_time(value: str) -> bool:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return "T" in value


def structural_errors(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Problems of ``value`` under a structural schema node, one ``path: what`` line each.

    Checks what decides whether the API server keeps a value as written: the type (``integer``
    takes no float or bool, ``int-or-string`` an int or a string, ``format: int32`` its range,
    ``format: date-time`` a time), ``null`` (pruned unless ``nullable``), ``enum``, ``required``,
    the bounds (length, items, minimum/maximum, pattern), the keys of ``x-kubernetes-list-type:
    map`` lists, and unknown properties: under an object that lists ``properties`` or has no
    ``additionalProperties`` schema, a key it does not know is silently pruned unless
    ``x-kubernetes-preserve-unknown-fields`` is set, so here it is an error."""
    where = path or "<root>"
    if value is None:
        return [] if schema.get("nullable") else [f"{where}: null (the API server prunes it)"]
    if schema.get("x-kubernetes-int-or-string"):
        ok = isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
        return [] if ok else [f"{where}: {value!r} is not an integer or a string"]
    kind = schema.get("type")
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__} where an object is expected"]
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{where}: required {name} missing")
        for name, item in value.items():
            sub = f"{path}.{name}" if path else name
            if name in properties:
                errors += structural_errors(properties[name], item, sub)
            elif isinstance(extra, dict):
                errors += structural_errors(extra, item, sub)
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(f"{sub}: unknown field (not in the schema: the API server prunes it)")
        return errors
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: {type(value).__name__} where an array is expected"]
        if len(value) > schema.get("maxItems", len(value)) or len(value) < schema.get("minItems", 0):
            errors.append(
                f"{where}: {len(value)} items, outside "
                f"[{schema.get('minItems', 0)}, {schema.get('maxItems')}]"
            )
        if schema.get("x-kubernetes-list-type") == "map":
            keys = [
                tuple(item.get(k) for k in schema["x-kubernetes-list-map-keys"])
                for item in value
                if isinstance(item, dict)
            ]
            if len(set(keys)) != len(keys):
                errors.append(f"{where}: duplicate keys {schema['x-kubernetes-list-map-keys']}")
        for i, item in enumerate(value):
            errors += structural_errors(schema.get("items", {}), item, f"{path}[{i}]")
        return errors
    if kind == "string":
        if not isinstance(value, str):
            return [f"{where}: {value!r} is not a string"]
        if len(value) > schema.get("maxLength", len(value)) or len(value) < schema.get("minLength", 0):
            errors.append(f"{where}: length {len(value)} outside the schema's bounds")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
        if schema.get("format") == "date-time" and not _is_time(value):
            errors.append(f"{where}: {value!r} is not an RFC 3339 date-time")
        return errors
    if kind == "boolean":
        return errors if isinstance(value, bool) else [f"{where}: {value!r} is not a boolean"]
    if kind in ("integer", "number"):
        numeric = (int,) if kind == "integer" else (int, float)
        if isinstance(value, bool) or not isinstance(value, numeric):
            return [f"{where}: {value!r} is not {'an integer' if kind == 'integer' else 'a number'}"]
        low, high = schema.get("minimum"), schema.get("maximum")
        if schema.get("format") == "int32":
            low = _INT32[0] if low is None else max(low, _INT32[0])
            high = _INT32[1] if high is None else min(high, _INT32[1])
        if (low is not None and value < low) or (high is not None and value > high):
            errors.append(f"{where}: {value} outside [{low}, {high}]")
        return errors
    return [*errors, f"{where}: the schema has no type this check knows ({kind!r})"]


# --------------------------------------------------------------------------------------------
# CEL
# --------------------------------------------------------------------------------------------


def to_cel(schema: dict[str, Any], value: Any) -> celtypes.Value:
    """``value`` as the API server hands it to CEL: typed by the schema, unknown fields pruned."""
    if schema.get("x-kubernetes-int-or-string"):
        return celtypes.IntType(value) if isinstance(value, int) else celtypes.StringType(value)
    kind = schema.get("type")
    if kind == "object":
        if "properties" in schema:
            props = schema["properties"]
            return celtypes.MapType(
                {celtypes.StringType(k): to_cel(props[k], v) for k, v in value.items() if k in props}
            )
        if isinstance(schema.get("additionalProperties"), dict):
            sub = schema["additionalProperties"]
            return celtypes.MapType({celtypes.StringType(k): to_cel(sub, v) for k, v in value.items()})
        return json_to_cel(value)
    if kind == "array":
        return celtypes.ListType([to_cel(schema["items"], item) for item in value])
    if kind == "integer":
        return celtypes.IntType(value)
    if kind == "number":
        return celtypes.DoubleType(value)
    if kind == "boolean":
        return celtypes.BoolType(value)
    if kind == "string":
        return celtypes.StringType(value)
    raise ValueError(f"no CEL type for schema {schema}")


@dataclass(frozen=True)
class CelFailure:
    path: str  # JSON path of the node whose rule failed
    rule: str
    message: str  # the rule's message, or the evaluation error


class CelRules:
    """Evaluates every ``x-kubernetes-validations`` rule of a schema on an object (compiled once)."""

    def __init__(self) -> None:
        self._env = celpy.Environment()
        self._programs: dict[str, celpy.Runner] = {}

    def program(self, rule: str) -> celpy.Runner:
        if rule not in self._programs:
            self._programs[rule] = self._env.program(self._env.compile(rule))
        return self._programs[rule]

    def evaluate(self, rule: str, schema: dict[str, Any], value: Any) -> bool | str:
        """True/False, or the evaluation error (the API server rejects the object then too)."""
        try:
            result = self.program(rule).evaluate({"self": to_cel(schema, value)})
        except CELEvalError as exc:
            return f"evaluation error: {exc}"
        if isinstance(result, CELEvalError):
            return f"evaluation error: {result}"
        if not isinstance(result, celtypes.BoolType):
            return f"evaluation error: not a bool: {result!r}"
        return bool(result)

    def failures(self, schema: dict[str, Any], obj: Any, path: str = "") -> list[CelFailure]:
        out: list[CelFailure] = []
        for entry in schema.get("x-kubernetes-validations", []):
            verdict = self.evaluate(entry["rule"], schema, obj)
            if verdict is not True:
                message = entry["message"] if verdict is False else str(verdict)
                out.append(CelFailure(path, entry["rule"], message))
        if isinstance(obj, dict):
            props = schema.get("properties", {})
            extra = schema.get("additionalProperties")
            for name, value in obj.items():
                sub = props.get(name, extra if isinstance(extra, dict) else None)
                if sub is not None:
                    out += self.failures(sub, value, f"{path}.{name}" if path else name)
        elif isinstance(obj, list) and "items" in schema:
            for i, item in enumerate(obj):
                out += self.failures(schema["items"], item, f"{path}[{i}]")
        return out

    def messages(self, schema: dict[str, Any], obj: Any) -> list[str]:
        return sorted(failure.message for failure in self.failures(schema, obj))


def admit(crd: dict[str, Any], obj: dict[str, Any], cel: CelRules) -> list[str]:
    """Every reason the API server would reject ``obj`` on create (empty: accepted)."""
    schema = openapi(crd)
    stored = apply_defaults(schema, obj)
    problems = [f"{path}: {message}" for path, message in schema_errors(schema, stored)]
    if not problems:
        problems += cel.messages(schema, stored)
    return problems


# --------------------------------------------------------------------------------------------
# Structural schema rules
# --------------------------------------------------------------------------------------------


def structural_problems(schema: dict[str, Any], cel: CelRules) -> list[str]:
    """Violations of the rules the API server applies to a CRD schema (those this schema could
    break): a type on every node, no $ref, anyOf only as int-or-string, no additionalProperties
    with properties or set to false, metadata restricted to name, list-map keys required scalars,
    fieldPaths that exist, and defaults that are pruned, valid and pass the CEL rules below them."""
    problems: list[str] = []
    for path, node in walk(schema):
        where = path or "(root)"
        if "$ref" in node or "$defs" in node or "definitions" in node:
            problems.append(f"{where}: references are not allowed")
        if "nullable" in node:
            problems.append(f"{where}: nullable is not used (absent means unset)")
        if node.get("x-kubernetes-int-or-string"):
            if "type" in node or node.get("anyOf") not in (None, INT_OR_STRING_ANY_OF):
                problems.append(
                    f"{where}: int-or-string must be exactly anyOf [integer, string] without type"
                )
        elif not node.get("type"):
            problems.append(f"{where}: no type")
        elif "anyOf" in node or "oneOf" in node or "allOf" in node or "not" in node:
            problems.append(f"{where}: anyOf/oneOf/allOf/not only in the int-or-string form")
        if node.get("additionalProperties") is False:
            problems.append(f"{where}: additionalProperties: false is not allowed")
        if "additionalProperties" in node and "properties" in node:
            problems.append(f"{where}: additionalProperties and properties together")
        if node.get("x-kubernetes-preserve-unknown-fields") and node.get("type") != "object":
            problems.append(f"{where}: x-kubernetes-preserve-unknown-fields on a non-object")
        if node.get("x-kubernetes-list-type") == "map":
            item = node["items"]
            for key in node.get("x-kubernetes-list-map-keys", []):
                if key not in item.get("required", []) and "default" not in item["properties"].get(key, {}):
                    problems.append(f"{where}: list-map key {key} is neither required nor defaulted")
                if item["properties"].get(key, {}).get("type") not in ("string", "integer", "boolean"):
                    problems.append(f"{where}: list-map key {key} is not a scalar")
        for entry in node.get("x-kubernetes-validations", []):
            field_path = entry.get("fieldPath")
            if field_path is not None:
                target = node
                for part in field_path.lstrip(".").split("."):
                    target = target.get("properties", {}).get(part, {})
                if not target:
                    problems.append(f"{where}: fieldPath {field_path} is not a field of this node")
        if "default" in node:
            default = apply_defaults(node, node["default"])
            for error_path, message in schema_errors(node, default):
                problems.append(f"{where}: default invalid at {error_path or '(itself)'}: {message}")
            for failure in cel.failures(node, default):
                problems.append(f"{where}: default fails CEL rule {failure.rule!r}: {failure.message}")
    metadata = schema.get("properties", {}).get("metadata")
    if metadata is not None:
        allowed = {"type", "properties"}
        if set(metadata) - allowed or set(metadata.get("properties", {})) - {"name", "generateName"}:
            problems.append("metadata: only type and restrictions on name and generateName are allowed")
        for name, sub in metadata.get("properties", {}).items():
            if "default" in sub:
                problems.append(f"metadata.{name}: a default is not allowed")
    return problems
