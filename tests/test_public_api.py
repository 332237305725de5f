"""The public API is what the README shows, and the command line's help imports nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import camonnx

HEAVY = ("torch", "numba", "onnx", "onnxruntime", "numpy", "matplotlib", "PIL", "scipy", "ray",
         "pyarrow", "pandas", "skimage")


def test_every_public_name_resolves_and_is_listed():
    assert set(camonnx.__all__) <= set(dir(camonnx))
    for name in camonnx.__all__:
        assert getattr(camonnx, name) is not None, name
    assert camonnx.Explainer.__name__ == "Explainer"
    assert callable(camonnx.animate) and callable(camonnx.ybroad) and callable(camonnx.road_score)
    assert camonnx.default_image().is_file()
    # an entry is a function even after the module defining it is imported (no module of the
    # same name shadows it)
    import importlib

    sanity_checks = importlib.import_module("camonnx.sanity_checks")
    report_page = importlib.import_module("camonnx.report_page")
    audit_run = importlib.import_module("camonnx.audit_run")
    assert camonnx.audit is audit_run.audit
    assert camonnx.sanity is sanity_checks.sanity
    assert camonnx.report is report_page.write_report
    assert callable(camonnx.evaluate)
    with pytest.raises(AttributeError, match="no attribute 'explainr'"):
        camonnx.explainr  # noqa: B018


def _modules_after(code: str) -> set[str]:
    """The heavy top-level packages imported by ``code`` in a fresh interpreter."""
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1])) & set(HEAVY)


def test_import_camonnx_is_light():
    assert _modules_after("import camonnx") == set()


@pytest.mark.parametrize("argv", [[], ["explain"], ["animate"], ["ybroad"], ["layers"],
                                  ["recipe"], ["export"], ["metrics"], ["sanity"], ["audit"],
                                  ["report"]])
def test_help_imports_nothing_heavy(argv):
    """``camonnx [COMMAND] --help`` builds every option (method names, presets, defaults)
    without torch, numba or ONNX: those load when a command runs."""
    code = ("import sys\nfrom camonnx.cli import main\n"
            f"try:\n    main({argv + ['--help']!r}, standalone_mode=False)\n"
            "except SystemExit:\n    pass")
    assert _modules_after(code) == set()
