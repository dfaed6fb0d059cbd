"""Package discovery for `pip install .`; every other setting is in pyproject.toml.

pyproject.toml's [tool.setuptools.package-dir] maps each source folder to its installed package
(backbone/ -> rwkv_mm.backbone, cuda/ -> rwkv_mm.kernels, ...). Each mapped package is installed
with every Python package found below its folder, under the mapped name, so adding a subpackage
(backbone/goldfinch/, rwkv_mm/<modality>/) needs no list to be edited.
"""

import tomllib
from pathlib import Path

from setuptools import find_namespace_packages, find_packages, setup

HERE = Path(__file__).resolve().parent


def mapped_packages() -> list[str]:
    """Every package to install: the mapped ones and the packages found below their folders."""
    config = tomllib.loads((HERE / "pyproject.toml").read_text(encoding="utf-8"))
    folders = config["tool"]["setuptools"]["package-dir"]
    found = set(folders)
    for name, folder in folders.items():
        root = HERE / folder
        # a Python package: its subpackages; a data folder (recipes/): its subfolders, as package data
        find = find_packages if (root / "__init__.py").is_file() else find_namespace_packages
        found.update(f"{name}.{sub}" for sub in find(str(root)))
    return sorted(found)


setup(packages=mapped_packages())
