"""Exit 0 when an ArcticInferenceService's engines run the caps its cap controller set.

    kubectl get ais NAME -o json | python3 e2e/caps_followed.py

Reads the resource's status (written by the operator): the controller's last cap change must have
been taken (``result`` "Ok"), and every pod with a configured cap must report the same effective
soft and hard caps with no ``capError``. Prints what it saw as one JSON line. Used by e2e/run.sh
(the kind suite); standard library only.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def caps_followed(resource: dict[str, Any]) -> bool:
    status = resource.get("status") or {}
    changes = (status.get("capController") or {}).get("lastChanges") or []
    pods = [p for p in status.get("pods") or [] if p.get("configuredSoftCap") is not None]
    if not changes or changes[-1].get("result") != "Ok" or not pods:
        return False
    return all(
        p.get("effectiveSoftCap") == p["configuredSoftCap"]
        and p.get("effectiveHardCap") == p.get("configuredHardCap")
        and not p.get("capError")
        for p in pods
    )


def main() -> int:
    resource = json.load(sys.stdin)
    status = resource.get("status") or {}
    seen = {
        "lastChange": ((status.get("capController") or {}).get("lastChanges") or [])[-1:],
        "pods": status.get("pods") or [],
    }
    print(json.dumps(seen))
    return 0 if caps_followed(resource) else 1


if __name__ == "__main__":
    sys.exit(main())
