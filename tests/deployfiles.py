"""Readers for the deployment files, for tests/test_deploy.py.

No Docker engine runs where the tests do, so the files are read as data: the
Dockerfile by a small line parser, the stack files with PyYAML plus Compose's
variable interpolation, durations the way Docker parses them (Go's syntax).
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SWARM = ROOT / "swarm"


# -- Dockerfile ------------------------------------------------------------------

@dataclass
class Stage:
    """One build stage: its FROM line and its instructions in order."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        """The arguments of every ``keyword`` instruction of the stage."""
        return [args for kw, args in self.instructions if kw == keyword.upper()]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


def parse_dockerfile(path: Path) -> list[Stage]:
    """Split a Dockerfile into stages, with ARGs before the first FROM substituted.

    Continuation lines are joined; comments and blank lines dropped. Enough
    for the Dockerfiles of this repository, not a general parser.
    """
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "ARG" and not stages:
            name, _, default = args.partition("=")
            global_args[name] = default
        elif keyword == "FROM":
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args[m[1] or m[2]], args)
            image, _, alias = re.sub(r"--platform=\S+\s+", "", base).partition(" AS ")
            stages.append(Stage(image.strip(), alias.strip() or None))
        else:
            stages[-1].instructions.append((keyword, args))
    return stages


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form instruction (raises ValueError for shell form)."""
    value = json.loads(args)
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise ValueError(f"not an exec-form JSON array of strings: {args}")
    return value


def instruction_flags(args: str) -> tuple[dict[str, str], str]:
    """Split ``--flag=value`` options off an instruction's arguments."""
    flags: dict[str, str] = {}
    rest = args
    while rest.startswith("--"):
        option, _, rest = rest.partition(" ")
        name, _, value = option[2:].partition("=")
        flags[name] = value
        rest = rest.strip()
    return flags, rest


# -- Compose files -----------------------------------------------------------------

_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Apply Compose's variable interpolation to every string in ``value``.

    ``$$`` is a literal ``$``; ``${V:-d}`` / ``${V-d}`` default when V is unset
    or empty / unset; ``${V:?msg}`` / ``${V?msg}`` fail; ``${V}`` and ``$V``
    become the value or "".
    """
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name = match["braced"] or match["bare"]
        op, arg = match["op"] or "", match["arg"] or ""
        current = env.get(name)
        missing = current is None or (op.startswith(":") and current == "")
        if op.endswith("-"):
            return arg if missing else str(current)
        if op.endswith("?") and missing:
            raise KeyError(f"${{{name}}} is required: {arg}")
        return current or ""

    return _VARIABLE.sub(substitute, value)


def load_compose(name: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Load ``swarm/<name>`` and interpolate it as ``docker stack deploy`` would with ``env``.

    The default, an empty environment, is a deploy with nothing exported:
    every ``${VAR:-default}`` takes its default.
    """
    data = yaml.safe_load((SWARM / name).read_text())
    assert isinstance(data, dict), f"{name} is not a mapping"
    return dict(interpolate(data, env or {}))


def read_dotenv(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a Compose .env file (Compose's simple syntax)."""
    pairs: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=value: {line!r}"
            pairs[key.strip()] = value.strip()
    return pairs


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_s(text: str) -> float:
    """Seconds in a Compose/Go duration: ``90s``, ``2m``, ``1m30s``, ``1.5h``, ``500ms``.

    Raises:
        ValueError: not a duration (a bare number has no unit, so it is not one).
    """
    text = str(text).strip()
    parts = _DURATION_PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def option(command: list[str], flag: str) -> str | None:
    """The value given to ``flag`` in an argv list (``--flag V`` or ``--flag=V``)."""
    for i, arg in enumerate(command):
        if arg == flag and i + 1 < len(command):
            return command[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def published_ports(service: Mapping[str, Any]) -> list[tuple[int, int]]:
    """(published, target) pairs of a service, from long or short port syntax."""
    pairs = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            if port.get("published") is not None:
                pairs.append((int(port["published"]), int(port["target"])))
            continue
        spec = str(port).split("/")[0].split(":")
        if len(spec) >= 2:
            pairs.append((int(spec[-2]), int(spec[-1])))
    return pairs


def volume_targets(service: Mapping[str, Any]) -> dict[str, str]:
    """target -> named volume source, for the service's named-volume mounts."""
    mounts = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "volume" and volume.get("source"):
                mounts[volume["target"]] = volume["source"]
            continue
        source, _, target = str(volume).partition(":")
        if target and not source.startswith((".", "/", "~")):
            mounts[target.split(":")[0]] = source
    return mounts


def secret_sources(service: Mapping[str, Any]) -> dict[str, str]:
    """secret name -> the path it is mounted at in the service's containers."""
    mounts = {}
    for secret in service.get("secrets") or []:
        if isinstance(secret, dict):
            source = secret["source"]
            target = secret.get("target") or source
        else:
            source = target = secret
        mounts[source] = target if target.startswith("/") else f"/run/secrets/{target}"
    return mounts
