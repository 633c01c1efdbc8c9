"""Packaging beyond pyproject.toml: the top-level ``suites/`` folder ships as the package ``cabench.suites``.

``suites/`` stays where it is in the repository (suites and recipes are data that contributors edit in place);
the wheel maps it, and every sub-folder of it, into the ``cabench`` package with its YAML and JSON files, so an
installed cabench (not only an editable one) finds its suites, recipes and counts lock.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
DATA = ["*.yaml", "*.yml", "*.json"]

suite_dirs = [HERE / "suites", *sorted(p for p in (HERE / "suites").rglob("*") if p.is_dir())]
suite_packages = {
    ".".join(["cabench", *d.relative_to(HERE).parts]): d.relative_to(HERE).as_posix()
    for d in suite_dirs
    if not d.name.startswith((".", "__"))
}

setup(
    packages=[*find_packages(include=["cabench", "cabench.*"]), *suite_packages],
    package_dir=suite_packages,
    package_data={"cabench": ["py.typed"], **dict.fromkeys(suite_packages, DATA)},
)
