"""MHSA-Net: parameter counts and GMac of both readings, shapes, the attention and fusion arithmetic, the
FDRT / IHTL / ACM losses against hand computations, the step warm-up schedule, and ranking by another
output of the same run (MHSA-Net*, one head)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reidbench.engine.features import evaluate_features
from reidbench.engine.optim import lr_factor
from reidbench.errors import ReidbenchError
from reidbench.evaluation.features import FeatureSet, load_features, save_features, select_feature
from reidbench.losses import build_losses
from reidbench.losses.mhsa import AttentionCompetition, FeatureDiversity, ImprovedHardTriplet
from reidbench.models import create_model
from reidbench.profile import count_flops, parameter_counts
from reidbench.recipes.schema import EvalSection, LossTerm, ScheduleSection


def small(name: str = "mhsa_net", **options):
    return create_model(name, num_classes=5, trunk="small", small_width=8, dim=16, **options)


# METHODS.md §4.2-4.3: deploy parameters (without classifiers) and fvcore GMac at 384 x 128, within 0.5%.
@pytest.mark.parametrize(("options", "deploy_m", "gmacs"), [
    ({}, 26.68, 6.33),
    ({"reading": "released"}, 41.88, 8.29),  # its extra Bottleneck computed once per branch, as coded
    pytest.param({"reading": "released", "extra_bottleneck": "once"}, 41.88, 7.44, marks=pytest.mark.slow),
])
def test_parameters_and_gmacs_of_both_readings(options, deploy_m, gmacs):
    model = create_model("mhsa_net", num_classes=751, **options)
    _total, deploy, backbone = parameter_counts(model)
    assert deploy / 1e6 == pytest.approx(deploy_m, rel=0.005)
    assert backbone == 23_508_032  # torchvision ResNet-50 without fc
    measured, _skipped, _ = count_flops(model, 384, 128)
    assert measured == pytest.approx(gmacs, rel=0.005)
    if options.get("reading") == "released":  # the official model's 49,017,382 parameters less its unused
        assert deploy == 41_876_040  # modules (6,756,079) and the 512 x 751 shared classifier
        return
    with torch.no_grad():  # shapes at 384 x 128 (count_flops left the model in eval mode)
        feature_map = model.backbone(torch.randn(1, 3, 384, 128))
        out = model.forward_head((feature_map, feature_map))
    assert feature_map.shape == (1, 2048, 24, 8)  # Q, J = 192
    assert out["embedding"].shape == (1, 1024) and out["parts"].shape == (1, 8, 512)
    assert torch.equal(out["embedding"], torch.cat([out["global"], out["local"]], dim=1))


@pytest.mark.parametrize("reading", ["paper", "released"])
def test_training_outputs_and_attention_normalisation(reading):
    model = small(reading=reading, heads=3).train()
    out = model(torch.randn(4, 3, 64, 32))  # small trunk: 4 x 2 = 8 positions
    assert out["attention"].shape == (4, 3, 8) and out["parts"].shape == (4, 3, 16)
    assert out["logits"].shape == out["local_logits"].shape == out["aux"]["residual_logits"].shape == (4, 5)
    alpha = out["attention"]
    # paper: softmax over the K heads on each pixel; released: over the J positions of each head
    sums = alpha.sum(dim=1) if reading == "paper" else alpha.sum(dim=2)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-6)
    # released: one classifier (its global_softmax) for q*, p* and z
    shared = model.gfb_classifier is model.fused_classifier is model.residual_classifier
    assert shared == (reading == "released")
    assert len(model.get_classifier()) == (1 if shared else 3)


def test_released_reading_initialises_the_new_layers_as_the_released_code():
    torch.manual_seed(0)
    paper, released = small(heads=4), small(reading="released", heads=4)
    own = small(reading="released", heads=4, init="default")  # the option wins over the reading
    # classifiers: N(0, 0.001) by default; released: Kaiming normal, fan-out (std sqrt(2 / 5 classes))
    assert paper.gfb_classifier.weight.std() < 0.01 and own.gfb_classifier.weight.std() < 0.01
    assert released.gfb_classifier.weight.std().item() == pytest.approx(math.sqrt(2 / 5), rel=0.3)
    bn = released.gfb.reduction[1]  # BN weight N(1, 0.02), zero bias
    assert not bn.bias.any() and 0 < (bn.weight - 1).abs().max() < 0.1
    assert not released.mhsam.head_fc.bias.any()
    # Xavier uniform on the attention MLP's hidden layers: bound sqrt(6 / (fan_in + fan_out)), twice PyTorch's
    first = released.mhsam.scores[0]
    bound = math.sqrt(6 / (first.in_features + first.out_features))
    assert 0.9 * bound < first.weight.abs().max() <= bound
    assert own.mhsam.scores[0].weight.abs().max() <= 1 / math.sqrt(first.in_features)


def test_heads_pool_as_each_reading_says():
    for reading, scale in (("paper", 1 / 8), ("released", 1.0)):
        model = small(reading=reading, heads=2).eval()
        feature_map = torch.randn(1, 32, 4, 2)
        alpha, parts = model.mhsam(feature_map)
        tokens = feature_map.flatten(2)[0].T  # [J, C]
        pooled = scale * (alpha[0] @ tokens)  # paper: AvgPool(alpha * Q); released: alpha^T Q
        assert torch.allclose(parts[0], model.mhsam.head_fc(pooled), atol=1e-5)


@pytest.mark.parametrize("reading", ["paper", "released"])
def test_fusion_of_equal_heads_gives_that_head(reading):
    # SAFFM's weights sum to one over the heads (per channel, or per head), so K equal heads fuse to one
    model = small(reading=reading, heads=4).eval()
    head = torch.randn(2, 1, 16)
    fused = model.fuse(head.expand(2, 4, 16))
    expected = model.layer_norm(head[:, 0]) if reading == "released" else head[:, 0]
    assert torch.allclose(fused, expected, atol=1e-5)


def test_concat_sum_and_no_rlm_variants():
    parts = torch.randn(2, 3, 16)
    concat, plain_sum = small(heads=3, fusion="concat").eval(), small(heads=3, fusion="sum").eval()
    assert torch.equal(concat.fuse(parts), parts.flatten(1)) and torch.equal(plain_sum.fuse(parts), parts.sum(1))
    assert concat.fused_classifier.in_features == 48
    without = small(rlm=False).train()
    assert without(torch.randn(4, 3, 64, 32))["aux"] == {}
    with pytest.raises(ReidbenchError, match="shared_classifier"):
        small(reading="released", fusion="concat")


def test_residual_learning_module_by_hand():
    model = small(heads=2).eval()
    q, parts = torch.randn(3, 16), torch.randn(3, 2, 16)
    norm = torch.nn.functional.layer_norm
    expected = norm(q + parts[:, 0], (16,)) + norm(q + parts[:, 1], (16,))  # LN starts as the identity affine
    assert torch.allclose(model.residual(q, parts), expected, atol=1e-5)
    released = small(reading="released", heads=2).eval()
    assert torch.allclose(released.residual(q, parts), norm(expected, (16,)), atol=1e-5)


def test_baseline_is_the_gfb_alone():
    model = small("mhsa_baseline").train()
    out = model(torch.randn(4, 3, 64, 32))
    assert set(out) == {"global", "logits"} and out["global"].shape == (4, 16)
    assert (out["global"] >= 0).all()  # GAP -> 1x1 conv -> BN -> ReLU
    model.eval()
    with torch.no_grad():
        test = model(torch.randn(2, 3, 64, 32))
    assert torch.equal(test["embedding"], test["global"])


@pytest.mark.parametrize(("options", "message"), [
    ({"reading": "code"}, "reading"), ({"attention_softmax": "rows"}, "attention_softmax"),
    ({"fusion": "max"}, "fusion"), ({"heads": 0}, "heads"), ({"trunk": "vgg"}, "trunk"),
])
def test_bad_options_are_user_errors_naming_the_option(options, message):
    with pytest.raises(ReidbenchError, match=message):
        create_model("mhsa_net", num_classes=5, **options)


# ---- losses against hand computations ----------------------------------------------------------

def test_fdrt_of_an_orthogonal_set_is_zero_in_both_readings():
    parts = torch.eye(4, 6).unsqueeze(0).repeat(2, 1, 1) * torch.tensor([1.0, 2.0, 3.0, 0.5])[None, :, None]
    assert FeatureDiversity("paper")(parts, torch.zeros(2)).item() == pytest.approx(0.0, abs=1e-7)
    assert FeatureDiversity("released")(parts, torch.zeros(2)).item() == pytest.approx(0.0, abs=1e-6)


def test_fdrt_of_two_equal_heads():
    parts = torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[0.0, 3.0], [0.0, 3.0]]])  # two images, K = 2
    # paper: G = all ones, |G - I|_1 = 2, / K^2 = 0.5 per image, mean over the batch
    assert FeatureDiversity("paper")(parts, torch.zeros(2)).item() == pytest.approx(0.5)
    # released: rows then columns of G normalised -> every entry 1/sqrt(2); ||G - I||_F = sqrt(4 - 2 sqrt 2),
    # / 25, summed over the two images
    expected = 2 * math.sqrt(4 - 2 * math.sqrt(2)) / 25
    assert FeatureDiversity("released")(parts, torch.zeros(2)).item() == pytest.approx(expected, rel=1e-5)


def _ihtl_example() -> tuple[torch.Tensor, torch.Tensor]:
    # four images, K = 2 one-dimensional heads; ids 0, 0, 1, 1
    parts = torch.tensor([[0.0, 1.0], [2.0, 3.0], [10.0, 11.0], [5.0, 6.0]]).unsqueeze(2)
    return parts, torch.tensor([0, 0, 1, 1])


def test_ihtl_paper_reading_by_hand():
    parts, ids = _ihtl_example()
    # squared distances; positive: the largest head-to-head distance to the other image of the id,
    # negative: the smallest to any image of the other id
    # a: pos b max|0-3|^2 = 9, neg min(|1-10|^2, |1-5|^2) = 16;  b: pos 9, neg |3-5|^2 = 4
    # c: pos d max(|10-6|^2, |11-5|^2) = 36, neg |10-3|^2 = 49;  d: pos 36, neg |5-3|^2 = 4
    margins = torch.tensor([9 - 16, 9 - 4, 36 - 49, 36 - 4], dtype=torch.float)
    expected = torch.nn.functional.softplus(margins).mean().item()
    assert ImprovedHardTriplet()(parts, ids).item() == pytest.approx(expected, rel=1e-5)


def test_ihtl_released_reading_by_hand():
    parts, ids = _ihtl_example()
    # Euclidean distances; the anchor's own heads count as a positive (distance 1 here, never the hardest)
    margins = torch.tensor([3 - 4, 3 - 2, 6 - 7, 6 - 2], dtype=torch.float)
    expected = torch.nn.functional.softplus(margins).mean().item()
    loss = ImprovedHardTriplet(distance="euclidean", include_self=True)(parts, ids)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    spread = torch.tensor([[0.0, 20.0], [2.0, 3.0], [10.0, 11.0], [5.0, 6.0]]).unsqueeze(2)
    # image a's own heads are 20 apart: with include_self that is its hardest positive
    with_self = ImprovedHardTriplet(distance="euclidean", include_self=True)(spread, ids)
    without = ImprovedHardTriplet(distance="euclidean")(spread, ids)
    assert with_self.item() > without.item()


def test_acm_by_hand():
    alpha = torch.tensor([[[0.0005, 0.002, 0.5, 0.4975]], [[0.25, 0.25, 0.25, 0.25]]])  # [N=2, K=1, J=4]
    # paper: sum min(alpha, gamma)^2 per image (gamma 1e-3), mean over the batch
    paper = (0.0005 ** 2 + 3 * 0.001 ** 2 + 4 * 0.001 ** 2) / 2
    assert AttentionCompetition(1e-3)(alpha, torch.zeros(2)).item() == pytest.approx(paper, rel=1e-5)
    # released: the sum of the weights below 0.01, over the whole batch
    assert AttentionCompetition(0.01, "released")(alpha, torch.zeros(2)).item() == pytest.approx(0.0025, rel=1e-5)


def test_loss_terms_read_aux_outputs_and_weight_zero_switches_a_term_off():
    model = small(heads=2).train()
    terms = [LossTerm("cross_entropy", "aux.residual_logits", 1.0, {"label_smoothing": 0.1}),
             LossTerm("triplet", "aux.residual", 1.0, {"margin": None, "distance": "sqeuclidean"}),
             LossTerm("fdrt", "parts", 1e-4), LossTerm("ihtl", "parts", 1.0), LossTerm("acm", "attention", 0.0)]
    losses = build_losses(terms, 5)
    out = model(torch.randn(8, 3, 64, 32))
    total, values = losses(out, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    assert set(values) == {"cross_entropy:aux.residual_logits", "triplet:aux.residual", "fdrt:parts", "ihtl:parts"}
    assert total.item() == pytest.approx(sum(t.weight * values[f"{t.name}:{t.output}"].item() for t in terms[:4]),
                                         rel=1e-5)
    without_rlm = small(heads=2, rlm=False).train()(torch.randn(8, 3, 64, 32))
    with pytest.raises(ReidbenchError, match="aux.residual"):
        losses(without_rlm, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))


def test_released_step_warmup_schedule():
    schedule = ScheduleSection(name="multistep", milestones=[200, 300], gamma=0.1, warmup_epochs=50,
                               warmup_method="step", warmup_step=5)
    base = 1e-3
    expected = {0: 1e-4, 4: 1e-4, 5: 2e-4, 44: 9e-4, 45: 1e-3, 49: 1e-3, 50: 1e-3, 199: 1e-3, 200: 1e-4,
                299: 1e-4, 300: 1e-5, 399: 1e-5}
    for epoch, lr in expected.items():  # 1e-4 x (epoch // 5 + 1) below 50, then 1e-3 / 1e-4 / 1e-5
        assert base * lr_factor(schedule, epoch, 400) == pytest.approx(lr), epoch


# ---- ranking by another output of the same run ------------------------------------------------

def _feature_set() -> FeatureSet:
    rng = torch.Generator().manual_seed(0)
    ids = np.array([0, 1, 2, 3])
    parts_q, parts_g = torch.randn(4, 3, 5, generator=rng), torch.randn(4, 3, 5, generator=rng)
    parts_g[:, 1] = parts_q[:, 1] + 0.01  # head 2 matches each query with its own id
    query, gallery = torch.randn(4, 8, generator=rng), torch.randn(4, 8, generator=rng)
    return FeatureSet(query_features=query, gallery_features=gallery,
                      query_pids=ids, query_camids=np.zeros(4, dtype=int), gallery_pids=ids,
                      gallery_camids=np.ones(4, dtype=int), meta={"feature": "embedding"},
                      extra={"parts": (parts_q, parts_g), "local": (parts_q[:, 0], parts_g[:, 0])})


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_features_file_keeps_extra_outputs_and_ranks_by_one_head(tmp_path, suffix):
    path = save_features(tmp_path / f"features{suffix}", _feature_set())
    loaded = load_features(path)
    assert set(loaded.extra) == {"parts", "local"} and loaded.extra["parts"][0].shape == (4, 3, 5)
    head = evaluate_features(loaded, EvalSection(feature="parts", part=2, metric="sqeuclidean"))
    assert head.rank(1) == 1.0 and head.mAP == 1.0
    assert select_feature(loaded, "parts").query_features.shape == (4, 15)  # all heads, concatenated
    assert torch.equal(select_feature(loaded, "local").query_features, loaded.extra["local"][0])
    with pytest.raises(ReidbenchError, match="extra_features"):
        evaluate_features(loaded, EvalSection(feature="global"))
    with pytest.raises(ReidbenchError, match="eval.part"):
        evaluate_features(loaded, EvalSection(feature="parts", part=4))


# ---- the paper's eleven tables as cells --------------------------------------------------------

LOSS_INDEX = {"0": ("cross_entropy", "logits"), "3": ("cross_entropy", "aux.residual_logits"),
              "4": ("triplet", "aux.residual"), "5": ("fdrt", "parts"), "6": ("ihtl", "parts"),
              "7": ("acm", "attention")}


@pytest.fixture(scope="module")
def mhsa_plan(tmp_path_factory):
    from reidbench.papers.loading import load_paper, select_cells
    from reidbench.papers.plan import plan_cells

    root = tmp_path_factory.mktemp("plan")
    paper = load_paper("mhsa-net")
    return plan_cells(select_cells(paper), "smoke", 1, root / "data", root / "runs", with_cost=False)


def test_every_own_row_of_the_eleven_tables_is_a_runnable_cell(mhsa_plan):
    from reidbench.papers.plan import unique_runs

    own = [p for p in mhsa_plan if not p.cell.row.cited]
    # the eleven tables, and the K sweeps of Figs. 9-10 (their +FDRT / +IHTL cells print no numbers)
    assert {p.cell.table.id for p in own} == {f"Table {n}" for n in "I II III IV V VI VII VIII IX X XI".split()} | {
        "Fig. 9", "Fig. 10"}
    assert all(p.runnable for p in own), [p.cell.label for p in own if not p.runnable]
    assert len(unique_runs(mhsa_plan)) < len(own)  # rows that differ only in evaluation share their runs


def test_row_variants_name_the_loss_terms_they_mean(mhsa_plan):
    for item in (p for p in mhsa_plan if not p.cell.row.cited and p.cell.row.model == "mhsa_net"):
        recipe = item.runs[0].recipe
        for override in item.cell.row.overrides:
            key = override.split("=")[0].split(".")
            if key[0] == "loss":
                term = recipe.loss[int(key[1])]
                assert (term.name, term.output) == LOSS_INDEX[key[1]], item.cell.label


def _cell(plan, label):
    return next(p for p in plan if p.cell.label == label)


def test_cells_that_train_the_same_thing_share_one_run(mhsa_plan):
    def run_of(label):
        return _cell(mhsa_plan, label).runs[0].hash

    plain = run_of("Table I / MHSA-Net (K=8) / CD")
    for label in ("Table I / MHSA-Net* (K=8) / CD", "Table I / MHSA-Net+Re-ranking [79] (K=8) / CD",
                  "Table V / MHSA-Net (K=8) / CD", "Table VI / P⊥(x)_3 / CD"):
        assert run_of(label) == plain, label
    assert run_of("Table V / MHSA-Net† (K=8) / CD") != plain
    assert run_of("Table VII / K=8 / CD") == run_of("Table V / Baseline+MHSAM (K=8) / CD") == \
        run_of("Table IX / Baseline+MHSAM / CD")
    assert run_of("Table IX / K=8, λ1=1e-4 / CD") == run_of("Table V / Baseline+MHSAM+FDRT (K=8) / CD")
    assert run_of("Table X / K=8, λ2=1.0 / CD") == run_of("Table V / Baseline+MHSAM+IHTL (K=8) / CD")
    assert run_of("Table XI / λ3=1e-3, γ=1e-3 / CD") == run_of("Table V / Baseline+MHSAM+ACM (K=8) / CD")
    assert run_of("Table X / K=7 Baseline+MHSAM / CD") == run_of("Table VII / K=7 / CD")
    head = _cell(mhsa_plan, "Table VI / P⊥(x)_3 / OD").evaluation
    assert (head.feature, head.part) == ("parts", 3)
    assert _cell(mhsa_plan, "Table II / MHSA-Net* (K=8) / OD").evaluation.feature == "local"


def test_protocols_of_the_occluded_and_partial_cells(mhsa_plan):
    partial = _cell(mhsa_plan, "Table IV / MHSA-Net (K=8) / PR").runs[0].recipe
    assert (partial.data.train, partial.data.test) == ("market1501", "partial_reid")
    assert _cell(mhsa_plan, "Table IV / Baseline / PI").runs[0].recipe.data.test == "partial_ilids"
    assert _cell(mhsa_plan, "Table IV / Baseline / PI").cell.metrics == ["R1", "R3"]
    assert _cell(mhsa_plan, "Table III / MHSA-Net† (K=8) / PD").runs[0].recipe.loss[0].weight == 0
    from reidbench.data.registry import get_dataset

    assert get_dataset("partial_reid").protocol == get_dataset("partial_ilids").protocol == "partial"
    assert get_dataset("occluded_duke").protocol == get_dataset("p_dukemtmc").protocol == "market"


def test_table_vi_heads_re_evaluate_one_training_run(tmp_path, monkeypatch, run_cli):
    for name, sub in (("REIDBENCH_DATA", "data"), ("REIDBENCH_RUNS", "runs"), ("REIDBENCH_LEADERBOARDS", "lb"),
                      ("XDG_CACHE_HOME", "cache")):
        monkeypatch.setenv(name, str(tmp_path / sub))
    code, out, err = run_cli("reproduce", "mhsa-net", "--table", "Table VI", "--dataset", "OD", "--row", "P",
                             "--scale", "smoke", "--set", "train.epochs=1", "--set", "train.eval_every=1")
    assert code == 0, err
    assert len(list((tmp_path / "runs").rglob("run.json"))) == 1  # eight cells, one training
    import pandas as pd

    frame = pd.read_csv(tmp_path / "lb" / "mhsa-net.smoke.csv")
    heads = frame[frame["metric"] == "mAP"]
    assert len(heads) == 8 and heads["run_ids"].nunique() == 1
    assert heads["reproduced"].nunique() > 1  # each head ranks the gallery its own way


@pytest.mark.slow
def test_short_synthetic_training_lowers_the_loss_and_beats_the_untrained_model_on_occluded_duke(tmp_path):
    import json

    from reidbench.engine.trainer import Trainer
    from reidbench.recipes.loading import load_recipe

    recipe = load_recipe("mhsa-net/mhsa_net_occluded_duke", scale="smoke",
                         overrides=["train.epochs=10", "train.eval_every=10", "schedule.milestones=[100]"])
    trainer = Trainer(recipe, run_dir=tmp_path / "run", device="cpu", data_root=tmp_path / "data", quiet=True)
    untrained = trainer.evaluate(trainer.feature_set())
    record = trainer.run()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    totals = [line["total"] for line in lines if "total" in line]
    assert totals[-1] < 0.8 * totals[0]
    assert record.metrics["mAP"] > untrained.mAP + 0.02
    assert record.test_dataset == "occluded_duke" and record.synthetic


@pytest.mark.slow
def test_ablate_renders_table_viii_with_deltas_to_its_first_row(tmp_path, monkeypatch, run_cli):
    for name, sub in (("REIDBENCH_DATA", "data"), ("REIDBENCH_RUNS", "runs"), ("REIDBENCH_LEADERBOARDS", "lb"),
                      ("XDG_CACHE_HOME", "cache")):
        monkeypatch.setenv(name, str(tmp_path / sub))
    monkeypatch.setenv("COLUMNS", "240")  # the table's rows on one line each
    code, out, err = run_cli("ablate", "mhsa-net", "--table", "Table VIII", "--scale", "smoke",
                             "--set", "train.epochs=1", "--set", "train.eval_every=1")
    assert code == 0, err
    assert "mhsa-net Table VIII (smoke)" in out
    for row in ("MHSA-Net*", "(CONCAT)", "(SUM)", "w/o RLM"):
        assert row in out
    assert out.count("(+") + out.count("(-") >= 12  # three rows x four metrics carry a delta to the first
