"""The HTML report in a real browser: Debian's Chromium driven by Playwright (never a downloaded
browser). One report, built once: `camonnx ybroad -m gradcam -m layercam --layers 0,10,20,30
--report` on the default model and the cat (two methods, a curve per method, four layers).

Without Chromium or Playwright these tests skip, saying what to install; with CI=true a missing
browser fails them. The module's set-up also writes docs/report.png (the README's screenshot),
only when its pixels changed.
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from camonnx.cli import main

INSTALL = "apt-get install chromium (Debian/Ubuntu) and pip install playwright"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "report.png"


def _chromium() -> str:
    """Chromium's path, or a skip (a failure under CI=true) naming what to install."""
    missing = [] if importlib.util.find_spec("playwright") else ["playwright"]
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        missing.append("chromium")
    if missing:
        message = f"no browser for the report tests ({' and '.join(missing)} missing): {INSTALL}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def browser():
    path = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def report(browser, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser") / "run"
    result = CliRunner().invoke(main, ["ybroad", "-m", "gradcam", "-m", "layercam", "--layers",
                                       "0,10,20,30", "--out", str(out), "--report"])
    assert result.exit_code == 0, result.output
    page = browser.new_page(viewport=DESKTOP)
    page.goto((out / "index.html").as_uri())
    _write_screenshot(page.screenshot())
    page.close()
    return out / "index.html"


def _write_screenshot(png: bytes) -> None:
    """docs/report.png: the top of the page at 1280×800, scaled to 960×600 and reduced to 256
    dithered colours (≈ 60 kB). Rewritten only when the page looks different: more than 0.5 % of
    its pixels changed by more than 24 levels (summed over RGB). The same page shot in another
    pytest process (after other tests ran in it) differed in 0.014 % of its pixels by more than
    that, scattered dithering changes: no reason to churn the file."""
    from camonnx.writer import write_file

    image = Image.open(io.BytesIO(png)).convert("RGB").resize((960, 600), Image.LANCZOS)
    small = image.quantize(colors=256, method=Image.Quantize.FASTOCTREE,
                           dither=Image.Dither.FLOYDSTEINBERG)
    if SCREENSHOT.is_file():
        with Image.open(SCREENSHOT) as old:
            if old.size == small.size:
                before = np.asarray(old.convert("RGB"), dtype=np.int32)
                after = np.asarray(small.convert("RGB"), dtype=np.int32)
                if (np.abs(before - after).sum(axis=2) > 24).mean() <= 0.005:
                    return
    if os.access(SCREENSHOT.parent, os.W_OK):
        write_file(SCREENSHOT, lambda tmp: small.save(tmp, format="PNG", optimize=True))


@pytest.fixture
def page(browser, report):
    """A fresh desktop page of the report, recording console errors and every request."""
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.problems, page.requests = [], []
    page.on("console", lambda m: m.type in ("error", "warning") and page.problems.append(m.text))
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    page.on("request", lambda r: page.requests.append(r.url))
    page.goto(report.as_uri())
    yield page
    context.close()


def data(page) -> dict:
    return page.evaluate("JSON.parse(document.getElementById('report-data').textContent)")


def caption(page, n: int = 0) -> dict:
    return {key: page.text_content(f"#caption-{n} .c-{key}") for key in ("layer", "pos", "method", "norm")}


def test_loads_offline_without_console_errors(page):
    assert page.problems == []
    assert page.requests and all(url.split(":", 1)[0] in ("file", "data") for url in page.requests)
    assert page.title().startswith("camonnx report")


def test_slider_and_arrow_keys_step_through_layers(page):
    views = data(page)["views"]
    frames = views[0]["frames"][0]["local"]
    assert caption(page)["pos"] == "layer 4 / 4 · #30"
    page.keyboard.press("ArrowLeft")
    assert caption(page) == {"layer": views[0]["layers"][2], "pos": "layer 3 / 4 · #20",
                             "method": "gradcam", "norm": "local"}
    assert page.get_attribute("#frame-0", "src") == frames[2]
    assert page.input_value("#layer") == "2"
    page.focus("#layer")
    page.keyboard.press("Home")  # the slider's own key handling fires its input event
    assert caption(page)["pos"] == "layer 1 / 4 · #0"
    assert page.get_attribute("#frame-0", "src") == frames[0]
    page.keyboard.press("ArrowRight")
    assert caption(page)["layer"] == views[0]["layers"][1]
    page.click("#next")
    assert caption(page)["pos"] == "layer 3 / 4 · #20"
    assert page.get_attribute("#layer", "aria-valuetext").startswith(views[0]["layers"][2])
    assert page.problems == []


def test_clicking_a_curve_point_moves_to_that_layer(page):
    views = data(page)["views"]
    layercam = next(v for v in views if v["method"] == "layercam")
    name = layercam["layers"][1]
    point = page.locator(f'circle.pt[data-method="layercam"][data-layer="{name}"]').first
    point.click()
    assert caption(page) == {"layer": name, "pos": "layer 2 / 4 · #10", "method": "layercam",
                             "norm": "local"}
    assert page.input_value("#method") == layercam["id"]
    assert page.get_attribute("#frame-0", "src") == layercam["frames"][0]["local"][1]
    assert "current" in point.get_attribute("class")
    assert page.locator("tr.current").get_attribute("data-layer") == name
    assert page.problems == []


def test_method_and_normalisation_switches(page):
    views = data(page)["views"]
    page.keyboard.press("ArrowLeft")  # layer 3 of 4: kept across the switches
    page.select_option("#method", label="layercam")
    assert caption(page)["method"] == "layercam" and caption(page)["pos"] == "layer 3 / 4 · #20"
    assert page.get_attribute("#frame-0", "src") == views[1]["frames"][0]["local"][2]
    page.click('label[for="norm-global"]')
    assert caption(page)["norm"] == "global"
    assert page.get_attribute("#frame-0", "src") == views[1]["frames"][0]["global"][2]
    page.select_option("#method", label="gradcam")
    assert page.get_attribute("#frame-0", "src") == views[0]["frames"][0]["global"][2]
    assert page.problems == []


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)


def test_layout_at_desktop_and_phone_width(page):
    image = page.locator("#frame-0")
    box = image.bounding_box()
    assert box["width"] >= 300 and box["height"] >= 300
    shot = _pixels(image.screenshot())
    assert shot.std() > 20 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 1000  # a photo, not a blank
    chart = page.locator("#maps .side svg").bounding_box()
    assert chart["width"] > 300 and chart["x"] >= box["x"] + box["width"]  # beside the image
    page.set_viewport_size(PHONE)
    box = image.bounding_box()
    assert 0 < box["width"] <= PHONE["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    chart = page.locator("#maps .side svg").bounding_box()
    assert chart["y"] >= box["y"] + box["height"]  # stacked under it
    assert _pixels(image.screenshot()).std() > 20


def test_readme_screenshot_is_small(report):
    assert SCREENSHOT.is_file() and SCREENSHOT.stat().st_size < 300_000
    with Image.open(SCREENSHOT) as image:
        assert image.size == (960, 600)
