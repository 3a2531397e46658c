"""Installed, the code folders live under the one namespace `vanilla_transformer`, never as bare top-level packages."""

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE_FOLDERS = ["configuration", "modeling", "training", "inspection", "hub_card", "deployment"]


def test_wheel_puts_every_module_under_the_namespace(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("vanilla_transformer-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    code = [n for n in names if ".dist-info/" not in n]
    assert code and all(n.startswith("vanilla_transformer/") for n in code), code
    for folder in CODE_FOLDERS:
        assert f"vanilla_transformer/{folder}/__init__.py" in names
    assert "vanilla_transformer/modeling/modeling_vanilla_transformer.py" in names
    assert "vanilla_transformer/configuration/configuration_vanilla_transformer.py" in names
    assert "vanilla_transformer/deployment/server/index.html" in names  # the web page of `serve`
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "vanilla-transformer = vanilla_transformer.cli.main:main" in zipfile.ZipFile(wheel).read(
        entry_points).decode()


def test_tests_import_the_installed_package_not_bare_folders():
    for folder in CODE_FOLDERS:
        assert importlib.util.find_spec(folder) is None, f"bare top-level package {folder!r} is importable"
        assert importlib.util.find_spec(f"vanilla_transformer.{folder}") is not None
