"""What a non-editable install ships: every package directory of amp_advisor is listed in
pyproject.toml (setuptools installs only the listed ones; an unlisted subpackage imports from a
checkout and is missing from a wheel)."""

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_directory_is_listed_for_the_wheel():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "amp_advisor").rglob("__init__.py")}
    assert on_disk - listed == set()
    mapped = {name for name, folder in config.get("package-dir", {}).items()}
    assert listed - on_disk <= mapped  # anything listed but not under amp_advisor/ is mapped from elsewhere
