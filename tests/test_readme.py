"""The README's Python example runs as written (in a fresh folder, on the bundled model)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_example() -> str:
    """The first ```python block of the README's "## Python" section."""
    section = README.read_text(encoding="utf-8").split("\n## Python\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README.md has no ```python block under ## Python"
    return match.group(1)


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(python_example(), str(README), "exec"), scope)  # noqa: S102
    explanation = scope["explanation"]
    layers = len(scope["explainer"].layers)
    assert explanation.maps.shape == (layers, 1, 224, 224)
    assert (tmp_path / "out" / "maps.npz").is_file() and (tmp_path / "cat.gif").is_file()
    assert set(scope["acts"]) == set(scope["grads"]) and len(scope["grads"]) == layers
    printed = capsys.readouterr().out.strip().splitlines()
    summaries = [scope["road"].summary(), scope["curves"][0].summary(), scope["checks"].summary()]
    assert printed == "\n".join(summaries).splitlines()
    assert scope["road"].layers == [scope["explainer"].suggested_layer.name]
    assert [(c.metric, c.method) for c in scope["curves"]] == [("deletion", "gradcam"),
                                                              ("drop", "gradcam")]
    assert (tmp_path / "out" / "index.html").is_file()
