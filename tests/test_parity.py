"""Every model family whose authors released code computes what that code computes (golden outputs).

Each file in tests/data/parity/ was recorded once by hand (docs/papers/*.md, "Parity with the released code"):
the released model was built outside the project, our model's weights drawn by ``seeded_weights``
(tests/parity.py) were copied into it tensor by tensor, and its outputs on ``seeded_images`` were summarised in
float64, in eval mode (the test feature) and in training mode (logits and the features the losses read). The file
names the released repository and commit, how its model was built and how its outputs map onto ours, and the
differences measured between the two models then (0 or float rounding).

Here our model alone is rebuilt with the same weights and images, in float32, and compared with those outputs.
Where a family's own loss terms were compared too (MHSA-Net), the file also names the recipe and the ``--set``
keys that give the released loss, the ids of the batch and the released criterion's value of each term; our
loss terms on our training outputs must give them within the same tolerance.
Tolerance, per output: ``max(FLOOR, MARGIN x e) x max|reference|`` per element, where ``e`` is the float32
rounding measured at recording time (our float32 output against the float64 reference, relative to the output's
largest value; ~1e-7 in eval mode, up to 5e-4 in training mode, where batch statistics amplify rounding).
Another CPU, thread count or torch version rounds differently but by the same order, hence a margin of 20 and a
floor of 1e-5; sums and norms get the bound the element tolerance implies. A real change of the function is far
larger: torchvision's stem ReLU, which BoT's released code lacks, moves BoT's test feature by over 600 times
the tolerance (``test_the_tolerance_catches_the_bot_stem_relu``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from reidbench.losses import build_losses
from reidbench.models import create_model
from reidbench.recipes.loading import load_recipe

from .parity import seeded_images, seeded_weights

GOLDEN = Path(__file__).parent / "data" / "parity"
FAMILIES = ("bot", "msinet", "osnet", "alignedreid", "aap_reid", "cdnet", "mgn", "mhsa_net")
FLOOR, MARGIN = 1e-5, 20.0


def load(family: str) -> dict:
    return json.loads((GOLDEN / f"{family}.json").read_text())


def build(golden: dict, **changes) -> torch.nn.Module:
    """Our model with the seeded weights; built on the meta device (no initialisation work) and then filled."""
    with torch.device("meta"):
        model = create_model(golden["model"], **{**golden["options"], **changes})
    model = model.to_empty(device="cpu")
    seeded_weights(model, golden["weights_seed"])
    return model


def outputs(model: torch.nn.Module, golden: dict, modes: tuple[str, ...] = ("eval", "train")) -> dict:
    images = seeded_images(golden["input"]["shape"], golden["input"]["seed"])
    result = {}
    with torch.no_grad():
        for mode in modes:  # eval first: a training pass changes the BN running statistics
            model.train(mode == "train")
            out = model(images)
            aux = out.get("aux") or {}
            result[mode] = {**out, **{f"aux.{name}": value for name, value in aux.items()}}  # as recorded
    return result


def mismatches(ours: dict, golden: dict) -> list[str]:
    problems = []
    for mode, expected in golden["outputs"].items():
        if mode not in ours:
            continue
        for key, ref in expected.items():
            if key not in ours[mode]:
                problems.append(f"{mode}/{key}: missing")
                continue
            got = ours[mode][key].detach().to(torch.float64)
            if list(got.shape) != ref["shape"]:
                problems.append(f"{mode}/{key}: shape {list(got.shape)}, expected {ref['shape']}")
                continue
            measured = golden["parity"][mode]["float32_error_rel"][key]
            tol = max(FLOOR, MARGIN * measured) * ref["max_abs"]
            flat, rows = got.reshape(-1), got.reshape(got.shape[0], -1)
            n, row_n = flat.numel(), rows.shape[1]
            checks = {
                "values": ((flat[ref["index"]] - torch.tensor(ref["sample"], dtype=torch.float64)).abs().max(), tol),
                "max_abs": (abs(flat.abs().max() - ref["max_abs"]), tol),
                "row_norms": ((rows.norm(dim=1) - torch.tensor(ref["row_norms"], dtype=torch.float64)).abs().max(),
                              tol * math.sqrt(row_n)),
                "norm": (abs(flat.norm() - ref["norm"]), tol * math.sqrt(n)),
                "sum": (abs(flat.sum() - ref["sum"]), tol * n),
                "abs_sum": (abs(flat.abs().sum() - ref["abs_sum"]), tol * n),
            }
            for what, (error, bound) in checks.items():
                if float(error) > bound:
                    problems.append(f"{mode}/{key} {what}: off by {float(error):.3g}, tolerance {bound:.3g}")
    return problems


def loss_mismatches(train_outputs: dict, golden: dict) -> list[str]:
    """The released training loss, term by term: the recipe with the golden file's ``--set`` keys, on our
    training outputs and each case's ids, against the released criterion's values (weights included). The
    first case holds every term; a further case may pin one term where other ids make a reading matter."""
    spec = golden["losses"]
    recipe = load_recipe(spec["recipe"], overrides=spec["set"])
    weights = {f"{t.name}:{t.output}": t.weight for t in recipe.loss}
    losses = build_losses(recipe.loss, golden["options"]["num_classes"])
    problems = []
    for number, case in enumerate(spec["cases"]):
        with torch.no_grad():
            _total, values = losses(train_outputs, torch.tensor(case["labels"]))
        if number == 0 and sorted(values) != sorted(case["values"]):
            problems.append(f"loss terms {sorted(values)}, expected {sorted(case['values'])}")
            continue
        for name, ref in case["values"].items():
            got = weights[name] * float(values[name])
            tol = max(FLOOR, MARGIN * case["float32_error_rel"][name]) * abs(ref)
            if abs(got - ref) > tol:
                problems.append(f"ids {case['labels']}, loss {name}: {got:.8g}, released {ref:.8g}, "
                                f"tolerance {tol:.3g}")
    return problems


@pytest.mark.parametrize("family", FAMILIES)
def test_model_matches_the_released_code(family):
    golden = load(family)
    for mode, recorded in golden["parity"].items():  # the hand check itself passed: released == ours then
        if mode in golden["outputs"]:
            for key, diff in recorded["max_abs_diff_float32"].items():
                assert diff <= max(FLOOR, MARGIN * recorded["float32_error_rel"][key]) * \
                    golden["outputs"][mode][key]["max_abs"], (mode, key)
    ours = outputs(build(golden), golden)
    assert mismatches(ours, golden) == []
    if "losses" in golden:  # families whose own loss terms were compared too (MHSA-Net)
        for case in golden["losses"]["cases"]:
            for name, diff in case["max_abs_diff_float32"].items():
                assert diff <= max(FLOOR, MARGIN * case["float32_error_rel"][name]) * abs(case["values"][name]), name
        assert loss_mismatches(ours["train"], golden) == []


def test_the_tolerance_catches_the_bot_stem_relu():
    """The released BoT backbone has no ReLU after the stem; torchvision's stem (stem_relu=True) is refused."""
    golden = load("bot")
    assert golden["options"]["stem_relu"] is False
    problems = mismatches(outputs(build(golden, stem_relu=True), golden, modes=("eval",)), golden)
    assert any(p.startswith("eval/embedding values") for p in problems), problems


def test_every_golden_file_is_tested_and_small():
    assert sorted(p.stem for p in GOLDEN.glob("*.json")) == sorted(FAMILIES)
    assert all(p.stat().st_size < 16_000 for p in GOLDEN.glob("*.json"))


def test_seeded_weights_fill_every_tensor_the_same_way():
    a, b = create_model("cdnet", num_classes=4), create_model("cdnet", num_classes=4)
    seeded_weights(a, 3)
    seeded_weights(b, 3)
    state_a, state_b = a.state_dict(), b.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    bn = a.stem[0].bn
    assert (bn.running_var > 0).all() and not torch.equal(bn.weight, torch.ones_like(bn.weight))
    with pytest.raises(ValueError, match="non-persistent"):
        module = torch.nn.Linear(2, 2)
        module.register_buffer("table", torch.zeros(2), persistent=False)
        seeded_weights(module, 0)
