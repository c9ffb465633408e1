"""Generic patching of vLLM symbols: what a patch point is, how it is checked and applied.

This module knows nothing about which symbols we patch: the table lives in ``patches``
(``PATCH_POINTS``), the implementations in the modules it names. Keeping the mechanism apart from the
table means the implementations can ask what is applied (``applied_targets``) without importing the
table that imports them.

A patch point is one vLLM attribute we ``wrap`` (keep the original, run ours around it), ``replace``
(ours instead of the original, kept for inspection but not called) or ``add`` (a new attribute).
``check`` verifies, before anything is changed, that the target exists and that the original's
parameters are the ones our code relies on; ``apply`` is idempotent (a second call in the same
process, or a forked child that inherited the patches, changes nothing) and keeps static and class
methods static and class methods.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

Action = Literal["wrap", "replace", "add"]


@dataclass(frozen=True)
class PatchPoint:
    """One vLLM symbol we wrap, replace or add (see the module docstring)."""

    target: str  # "module.path:Class.attribute"
    action: Action
    #: wrap/replace: the original's parameter names, in order, that our code relies on.
    #: add: the parameter names of the method we add.
    params: tuple[str, ...]
    process: str  # where it runs: "front end", "engine core" or "worker"
    reason: str
    #: wrap/replace: takes the original, returns the replacement. add: the method itself.
    implementation: Callable[..., Any]

    @property
    def module(self) -> str:
        return self.target.split(":", 1)[0]

    @property
    def owner_path(self) -> str:
        return self.target.split(":", 1)[1].rsplit(".", 1)[0]

    @property
    def attribute(self) -> str:
        return self.target.rsplit(".", 1)[1]


class PatchError(RuntimeError):
    """A registered target is missing or differs from what the registry expects."""


#: The points applied in this process, by target (inherited by forked children with the patches).
_APPLIED: dict[str, PatchPoint] = {}


def _resolve_owner(point: PatchPoint) -> Any:
    try:
        owner: Any = importlib.import_module(point.module)
    except ImportError as exc:
        raise PatchError(f"{point.target}: module {point.module} not importable ({exc})") from exc
    for part in point.owner_path.split("."):
        if not hasattr(owner, part):
            raise PatchError(f"{point.target}: {part!r} not found in {point.module}")
        owner = getattr(owner, part)
    return owner


def _function(attr: Any) -> Any:
    """The plain function behind a class attribute (unwrapping staticmethod/classmethod)."""
    return attr.__func__ if isinstance(attr, staticmethod | classmethod) else attr


def _param_names(func: Callable[..., Any]) -> tuple[str, ...]:
    return tuple(inspect.signature(func).parameters)


def _original(func: Any) -> Any:
    """The vLLM function under our wrapper (or the function itself if unwrapped)."""
    func = _function(func)
    return getattr(func, "__arctic_original__", func)


def check(point: PatchPoint) -> None:
    """Raise PatchError unless ``point`` can be applied to the installed vLLM as registered."""
    owner = _resolve_owner(point)
    current = owner.__dict__.get(point.attribute)
    if point.action in ("wrap", "replace"):
        if current is None:
            raise PatchError(f"{point.target}: not defined on {point.owner_path} (inherited or removed)")
        found = _param_names(_original(current))
        if found != point.params:
            raise PatchError(f"{point.target}: expected parameters {point.params}, vLLM has {found}")
    else:
        if current is not None and getattr(_function(current), "__arctic_patch__", None) != point.target:
            raise PatchError(f"{point.target}: vLLM now defines this name itself; ours would shadow it")
        found = _param_names(point.implementation)
        if found != point.params:
            raise PatchError(
                f"{point.target}: our method has parameters {found}, registry says {point.params}"
            )


def is_applied(point: PatchPoint) -> bool:
    """Whether ``point`` is in place in this process (imports nothing: unimported = unpatched)."""
    owner: Any = sys.modules.get(point.module)
    for part in point.owner_path.split("."):
        owner = getattr(owner, part, None)
    attr = None if owner is None else owner.__dict__.get(point.attribute)
    return getattr(_function(attr), "__arctic_patch__", None) == point.target


def apply(point: PatchPoint) -> bool:
    """Apply one patch point; a second call in the same process is a no-op. Returns True if applied now."""
    check(point)
    if is_applied(point):
        _APPLIED[point.target] = point
        return False
    owner = _resolve_owner(point)
    replacement: Any
    if point.action in ("wrap", "replace"):
        current = owner.__dict__[point.attribute]
        original = _function(current)
        replacement = functools.wraps(original)(point.implementation(original))
        replacement.__arctic_original__ = original
        replacement.__arctic_patch__ = point.target
        if isinstance(current, staticmethod):
            replacement = staticmethod(replacement)
        elif isinstance(current, classmethod):
            replacement = classmethod(replacement)
    else:
        replacement = point.implementation
        replacement.__arctic_patch__ = point.target
    setattr(owner, point.attribute, replacement)
    _APPLIED[point.target] = point
    return True


def apply_all(points: Iterable[PatchPoint]) -> list[str]:
    """Apply every point (check all first, so a mismatch leaves vLLM untouched); the targets
    applied now."""
    points = list(points)
    for point in points:
        check(point)
    return [point.target for point in points if apply(point)]


def applied_targets() -> list[str]:
    """The targets patched in this process, in the order they were applied."""
    return [target for target, point in _APPLIED.items() if is_applied(point)]
