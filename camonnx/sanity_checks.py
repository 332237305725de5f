"""Sanity checks of saliency maps (Adebayo et al., NeurIPS 2018): docs/sanity.md.

One job: run the tests. The parameter layers and their randomisation are in
:mod:`camonnx.randomise`, the similarity measures in :mod:`camonnx.similarity`, the result and
its CSV / JSON / plot in :mod:`camonnx.sanity_report`.

**Model-parameter randomisation test (MPRT).** With P parameter layers numbered from the input
(0) to the logits (P − 1), randomisation *depth* j = 0 … P re-initialises

* ``mode="cascading"``: the j top-most layers, P − j … P − 1 ("from the logits down");
* ``mode="independent"``: layer P − j alone;

and j = 0 is the original model (re-written and re-loaded like every other step, so its
similarity 1 checks the pipeline). For every depth the randomised model is loaded as a new
:class:`~camonnx.explainer.Explainer` (same preprocessing, taps, class output; its mirror checked
against ONNX Runtime again), each method explains the same images at the same layers for the
**original** model's target classes, and each map M' is compared with the original map M:

    similarity[metric][method][step, layer, image] = sim(M, M'),   sim ∈ {spearman, ssim, hog}

A method whose maps depend on what the model learned falls toward 0 as j grows; one that stays
near 1 is explaining the input (edges, the architecture's prior), not the model.

**Random-logit test.** Per image, a class c' drawn uniformly from the classes other than its
target c (``numpy.random.default_rng(SeedSequence([seed, image, 1]))``) is explained on the
original model, and sim(M_c, M_c') is reported per layer and image. A class-sensitive method
scores below 1; a target-agnostic one (randomcam, eigencam) scores exactly 1.

**randomcam** is the baseline: its channel weights are random but seeded, so on the randomised
model its map changes only through the activations. A method whose curve lies on randomcam's
reacts to the randomisation no more than random weights would.

**Depths** (``steps``): ``None`` / ``"auto"`` gives all depths 0 … P when P ≤ 11, otherwise
depth 0 and 11 depths spaced geometrically from 1 to P (rounded, duplicates dropped: the early
steps, where the maps change most, are resolved finely and the full randomisation is always
last); ``"all"`` gives every depth; a list gives those depths.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from camonnx.errors import InputError, ParityError
from camonnx.randomise import ParameterLayer, Randomiser, load_like, write_model
from camonnx.sanity_report import SanityResult
from camonnx.similarity import METRICS, Reference

MODES = ("cascading", "independent")
#: The most depths ``steps="auto"`` gives (depth 0 included).
AUTO_STEPS = 12


def choose_steps(steps, count: int) -> list[int]:
    """The randomisation depths for ``count`` parameter layers (module docstring)."""
    if steps is None or (isinstance(steps, str) and steps == "auto"):
        if count < AUTO_STEPS:
            return list(range(count + 1))
        spaced = np.round(np.geomspace(1, count, AUTO_STEPS - 1)).astype(int)
        return [0] + sorted(set(spaced.tolist()))
    if isinstance(steps, str) and steps == "all":
        return list(range(count + 1))
    if isinstance(steps, str) or not isinstance(steps, Sequence) or not steps \
            or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in steps):
        raise InputError(f"steps takes 'auto', 'all' or a list of depths (integers 0–{count}); "
                         f"got {steps!r}.")
    bad = [int(s) for s in steps if not 0 <= s <= count]
    if bad:
        raise InputError(f"Randomisation depth {bad[0]} is out of range: the model has {count} "
                         f"parameter layers, so depths run from 0 (none) to {count} (all).")
    return sorted(set(int(s) for s in steps))


def randomised_layers(layers: Sequence[ParameterLayer], mode: str, depth: int) -> list[ParameterLayer]:
    """The parameter layers depth ``depth`` randomises in ``mode`` (module docstring)."""
    if depth == 0:
        return []
    return list(layers[-depth:]) if mode == "cascading" else [layers[-depth]]


def random_classes(classes: Sequence[int], n_classes: int, seed: int) -> list[int]:
    """Per image i, a class drawn uniformly from the n_classes − 1 others than ``classes[i]``."""
    if n_classes < 2:
        raise InputError("The random-logit test needs a model with at least 2 classes.")
    out = []
    for i, c in enumerate(classes):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed) & (2 ** 63 - 1), i, 1]))
        other = int(rng.integers(n_classes - 1))
        out.append(other + (other >= c))
    return out


def sanity(explainer, images, methods: Sequence[str] = ("gradcam",), layers="suggested",
           mode: str = "cascading", steps=None, seed: int = 0, targets=None,
           random_logit: bool = True, batch_size: int = 16, progress: bool = True) -> SanityResult:
    """The model-parameter randomisation test (and the random-logit test) of ``methods`` at the
    selected ``layers`` on ``images`` (anything :meth:`Explainer.explain` takes).

    ``mode``: "cascading" or "independent"; ``steps``: the depths (module docstring); ``seed``:
    the randomisation's, the random classes' and the methods' own (randomcam, smoothgradcam++);
    ``targets``: the classes explained (default: the original model's predictions; function
    targets are refused, since the randomised models are explained for these classes);
    ``progress``: a bar over the depths."""
    from camonnx.methods import get_method
    from camonnx.targets import class_indices

    total = time.perf_counter()
    if mode not in MODES:
        raise InputError(f"Unknown mode {mode!r}: use 'cascading' or 'independent'.")
    names = list(dict.fromkeys(get_method(m).name
                               for m in ([methods] if isinstance(methods, str) else methods)))
    if not names:
        raise InputError("No method given: name at least one, e.g. methods=('gradcam',).")
    randomiser = Randomiser(explainer.graph.model, seed, base_dir=explainer.model_path.parent)
    depths = choose_steps(steps, len(randomiser.layers))
    indices = [layer.index for layer in explainer.select_layers(layers)]
    x, _ = explainer.prepare(images)
    logits = explainer.forward(x, [explainer.graph.logits])[explainer.graph.logits]
    classes = class_indices(targets, logits)
    if classes is None:
        raise InputError("The sanity checks explain every randomised model for the original "
                         "model's classes: give class indices as targets (or None).")

    def explain_all(model_explainer, cls: list[int]) -> dict:
        return {m: model_explainer.explain(x, method=m, layers=indices, targets=cls, seed=seed,
                                           batch_size=batch_size, progress=False) for m in names}

    tick = time.perf_counter()
    originals = explain_all(explainer, classes)
    timings = {"original": time.perf_counter() - tick, "randomise": 0.0, "load": 0.0,
               "explain": 0.0, "compare": 0.0}
    references = {m: Reference(originals[m].maps) for m in names}
    shape = (len(depths),) + originals[names[0]].maps.shape[:2]
    similarity = {metric: {m: np.zeros(shape) for m in names} for metric in METRICS}
    with tempfile.TemporaryDirectory(prefix="camonnx-sanity-") as folder:
        path = Path(folder) / "randomised.onnx"
        for s, depth in enumerate(tqdm(depths, desc=f"sanity {mode}", unit="step",
                                       disable=not progress)):
            tick = time.perf_counter()
            write_model(randomiser.randomised(randomised_layers(randomiser.layers, mode, depth)), path)
            timings["randomise"] += time.perf_counter() - tick
            tick = time.perf_counter()
            try:
                randomised = load_like(explainer, path)
            except ParityError as exc:
                raise ParityError(f"The model randomised to depth {depth} ({mode}) fails the "
                                  f"parity check at load: {exc}") from None
            timings["load"] += time.perf_counter() - tick
            tick = time.perf_counter()
            maps = explain_all(randomised, classes)
            timings["explain"] += time.perf_counter() - tick
            tick = time.perf_counter()
            for m in names:
                for metric, values in references[m].compare(maps[m].maps).items():
                    similarity[metric][m][s] = values
            timings["compare"] += time.perf_counter() - tick
    logit_test = _random_logit(explainer, explain_all, references, classes, logits.shape[1],
                               seed) if random_logit else None
    steps_time = sum(timings[k] for k in ("randomise", "load", "explain", "compare"))
    timings.update(per_step=steps_time / len(depths), total=time.perf_counter() - total)
    first = originals[names[0]]
    return SanityResult(
        model=str(explainer.model_path), mode=mode, seed=seed, methods=names,
        layers=list(first.layers), layer_indices=indices, targets=list(classes),
        target_labels=[first.label(i) for i in range(len(classes))],
        parameter_layers=[layer.to_dict() for layer in randomiser.layers], steps=depths,
        randomised=[[layer.name for layer in randomised_layers(randomiser.layers, mode, d)]
                    for d in depths],
        similarity=similarity, random_logit=logit_test, timings=timings,
        options={"batch_size": batch_size, "steps": "auto" if steps is None else
                 steps if isinstance(steps, str) else [int(d) for d in steps]})


def _random_logit(explainer, explain_all, references: dict, classes: list[int], n_classes: int,
                  seed: int) -> dict:
    """The random-logit test's classes, their labels and {metric: {method: (L, N)}}."""
    other = random_classes(classes, n_classes, seed)
    maps = explain_all(explainer, other)
    similarity: dict[str, dict[str, np.ndarray]] = {metric: {} for metric in METRICS}
    for m, explanation in maps.items():
        for metric, values in references[m].compare(explanation.maps).items():
            similarity[metric][m] = values
    some = next(iter(maps.values()))
    return {"classes": other, "class_labels": [some.label(i) for i in range(len(other))],
            "similarity": similarity}
