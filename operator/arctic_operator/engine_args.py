"""``spec.extraArgs`` read the way vLLM's argument parser reads them (pure; no vLLM import).

The operator sets some engine flags from the spec (``MANAGED_ENGINE_FLAGS``: the model, the port, the
parallel layout, the speculative and additional configs). vLLM 0.26's ``FlexibleArgumentParser``
accepts more spellings of a flag than its canonical one, and each of these would override the
operator's value while passing an exact-spelling check:

- ``_`` for ``-`` in the name (``--tensor_parallel_size 2``), before any ``=`` or ``.``;
- unambiguous prefixes (argparse's ``allow_abbrev``, on in vLLM: ``--tensor-parallel 2``, ``--port``'s
  ``--po``);
- dotted keys into a JSON flag (``--speculative-config.method ngram``), merged into one value that
  vLLM appends after every other argument (so it wins);
- ``--config FILE``: a YAML file whose keys become flags (its content cannot be checked here).

``managed_spellings(args)`` returns the arguments that name a managed flag in any of these ways (or
``--config``), for the Degraded condition; the CRD's CEL rule catches the common spellings already.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from arctic_operator.api import MANAGED_ENGINE_FLAGS

#: Flags the plan itself writes besides MANAGED_ENGINE_FLAGS (the plugin's section, a model URI's
#: loader): overriding them breaks the engine's contract with the operator too.
PLANNED_FLAGS = ("--additional-config", "--load-format")


def _long_name(arg: str) -> str:
    """The flag name vLLM resolves for a ``--`` argument: up to ``=`` and ``.``, ``_`` as ``-``."""
    name = arg.split("=", 1)[0].split(".", 1)[0]
    return "--" + name[2:].replace("_", "-")


def _names_managed(name: str, managed: Iterable[str]) -> bool:
    # exact, or an abbreviation argparse may expand to it (any strict prefix longer than "--")
    return any(flag == name or (len(name) > 2 and flag.startswith(name)) for flag in managed)


def _short(arg: str, flag: str) -> bool:
    # -tp 2, -tp=2, -tp2 (argparse accepts a short option's value attached)
    return arg == flag or arg.startswith(flag + "=") or (arg.startswith(flag) and arg[len(flag) :].isdigit())


def managed_spellings(args: Sequence[str]) -> list[str]:
    """The arguments of ``args`` that would set a flag the operator manages (see the module doc)."""
    managed = [f for f in (*MANAGED_ENGINE_FLAGS, *PLANNED_FLAGS) if f.startswith("--")]
    short = [f for f in MANAGED_ENGINE_FLAGS if not f.startswith("--")]
    found = []
    for arg in args:
        if arg.startswith("--") and len(arg) > 2:
            name = _long_name(arg)
            if name == "--config" or _names_managed(name, managed):
                found.append(arg)
        elif arg.startswith("-") and not arg.startswith("--") and any(_short(arg, f) for f in short):
            found.append(arg)
    return found
