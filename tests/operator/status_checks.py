"""Checks every status the operator writes in the tests goes through: the typed model and the CRD.

``typed_status_problems`` is empty when a status object (a whole one from ``compute_status``, or
the control loop's fields) is exactly what the models produce and what the generated CRD keeps:

* it validates strictly against ``ArcticInferenceServiceStatus`` from its JSON text, as the
  operator's ``validate()`` parses resources (no coercion: "2" is no integer, 2.0 no int32);
* the model dumps it back unchanged (``dump()`` of the fields it was given), so nothing in it is
  dropped or reshaped by the model;
* the committed CRD's ``status`` schema keeps it as written (``structural_errors``): a key the code
  writes that the CRD lacks would be pruned silently by the API server, and fails here.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from arctic_operator.api import ArcticInferenceServiceStatus
from tests.operator.apiserver_rules import load_crd, openapi, structural_errors

STATUS_SCHEMA: dict[str, Any] = openapi(load_crd())["properties"]["status"]


def typed_status_problems(status: dict[str, Any]) -> list[str]:
    """Why ``status`` is not a typed status the CRD keeps as written (empty: it is)."""
    problems = [f"CRD: {e}" for e in structural_errors(STATUS_SCHEMA, status, "status")]
    try:
        model = ArcticInferenceServiceStatus.model_validate_json(json.dumps(status), strict=True)
    except ValidationError as exc:
        return [*problems, f"model: {exc}"]
    again = model.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_unset=True)
    if again != status:
        problems.append(f"model: dumps back as {again!r}, not as written")
    return problems


def assert_typed_status(status: dict[str, Any]) -> dict[str, Any]:
    """``status``, after checking ``typed_status_problems`` finds nothing."""
    problems = typed_status_problems(status)
    assert problems == [], "\n".join(problems)
    return status
