"""A regular (non-editable) install ships every subpackage, kernels/ and models/ mapped in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_install_has_every_subpackage_and_data(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(ROOT)],
                   check=True, capture_output=True, text=True)
    code = ("import camonnx, camonnx.kernels, camonnx.models, camonnx.methods, camonnx.ops;"
            "assert camonnx.__file__.startswith(%r), camonnx.__file__;"
            "assert 'smoothgradcam++' in camonnx.methods.METHODS;"
            "assert camonnx.models.default_image().exists();"
            "assert len(camonnx.models.imagenet_labels()) == 1000" % str(target))
    env = dict(os.environ, PYTHONPATH=str(target))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env=env)
