"""The conda environment and pyproject.toml list the same dependencies."""

from __future__ import annotations

import re
import tomllib

import yaml

from tests.conftest import ROOT

#: conda-forge names that differ from PyPI's.
CONDA_NAMES = {"redis-py": "redis"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0].strip().lower()


def test_environment_yml_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted |= {_name(r) for r in extra}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    listed = {CONDA_NAMES.get(_name(d), _name(d)) for d in env["dependencies"] if isinstance(d, str)}
    assert wanted <= listed, f"missing from environment.yml: {sorted(wanted - listed)}"
    assert listed - wanted == {"python", "pip"}, f"not in pyproject.toml: {sorted(listed - wanted - {'python', 'pip'})}"
