"""FSAFCMN (ResNet50-IBN-a + bottleneck self-attention + ECA + fusion): the paper's shapes, parameter and GMac
counts, the attention against a direct computation of its formula on non-square maps, the IBN-a checkpoint
format loading by name, the options, and the paper's cells."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from reidbench.errors import ReidbenchError
from reidbench.models import create_model
from reidbench.models.fsafcmn import IBN, BatchNormThenECA, block_input_size
from reidbench.models.pretrained import load_pretrained
from reidbench.profile import parameter_counts

BASELINE = {"attention": "none", "eca": "none", "fusion": "none"}  # Table 2's "Baseline": R50-IBN-a + BNNeck
SAM = {"fusion": "none"}  # "Baseline + SAM": self-attention in conv4_x/conv5_x + ECA


def _deploy(**options) -> int:
    return parameter_counts(create_model("fsafcmn", num_classes=751, **options))[1]


def _relative_tables(input_size: tuple[int, int] = (256, 128)) -> int:
    """Relative-position parameters: ((2H - 1) + (2W - 1)) x d per attention block, H x W its input map."""
    total = 0
    for layer, blocks, planes in ((3, 6, 256), (4, 3, 512)):
        for index in range(blocks):
            height, width = block_input_size(input_size, layer, index, last_stride=2)
            total += (2 * height - 1 + 2 * width - 1) * planes // 4
    return total


def test_parameter_counts_without_classifier_match_the_issue_figures():
    baseline, sam, full = _deploy(**BASELINE), _deploy(**SAM), _deploy()
    assert baseline == pytest.approx(23.51e6, rel=0.005)
    assert sam == pytest.approx(16.47e6, rel=0.005) and full == pytest.approx(16.47e6, rel=0.005)
    # how the model shrinks: each of the 9 replaced 3x3 convs (9 p^2) becomes 1x1 q, k, v (3 p^2); the relative
    # position tables are parameters and are counted; ECA adds one 1-D kernel (3, 5, 5, 5, 7) per stage
    replaced = sum(6 * planes * planes * blocks for planes, blocks in ((256, 6), (512, 3)))
    assert _relative_tables() == 32256
    assert sam == baseline - replaced + _relative_tables() + (3 + 5 + 5 + 5 + 7)
    assert full - sam == 2 * (3584 - 2048)  # the fused 3584-d BNNeck (weight and frozen bias)


def test_gmacs_at_256x128(tmp_path, monkeypatch):
    from reidbench.profile import profile_config

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    baseline = profile_config("fsafcmn", BASELINE, None, use_cache=False)
    full = profile_config("fsafcmn", {}, None, use_cache=False)
    assert baseline.input == [256, 128] and full.input == [256, 128]
    assert baseline.gmacs == pytest.approx(2.685, rel=0.005)
    assert full.gmacs == pytest.approx(2.59, rel=0.01)  # attention matmuls and softmax counted


def test_shapes_follow_the_paper_at_256x128():
    model = create_model("fsafcmn", num_classes=10).eval()
    with torch.no_grad():
        c3, c4, c5 = model.forward_features(torch.randn(2, 3, 256, 128))
        fused = model.fuse([c3, c4, c5])
        out = model.forward_head([c3, c4, c5])
    assert (c3.shape[1:], c4.shape[1:], c5.shape[1:]) == ((512, 32, 16), (1024, 16, 8), (2048, 8, 4))
    assert fused.shape[1:] == (3584, 8, 4)
    assert torch.equal(fused[:, :512], torch.nn.functional.max_pool2d(c3, 4))
    assert torch.equal(fused[:, 512:1536], torch.nn.functional.max_pool2d(c4, 2))
    assert out["embedding"].shape == (2, 3584)
    assert torch.allclose(out["global"], fused.mean(dim=(2, 3)), atol=1e-6)
    layer3 = model.backbone.layer3
    assert [tuple(block.conv2.pos_embed.height_rel.shape) for block in layer3[:2]] == [(63, 64), (31, 64)]


def test_training_outputs_and_gradients_reach_the_attention():
    model = create_model("fsafcmn", num_classes=7, input_size=[128, 64]).train()
    out = model(torch.randn(4, 3, 128, 64))
    assert out["global"].shape == (4, 3584) and out["logits"].shape == (4, 7)
    (out["logits"].logsumexp(1).mean() + out["global"].pow(2).mean()).backward()
    attention = model.backbone.layer4[0].conv2
    assert attention.qkv.weight.grad is not None and attention.pos_embed.width_rel.grad.abs().sum() > 0
    assert model.stage_eca[4].conv.weight.grad is not None


def _direct_attention(attention: torch.nn.Module, x: torch.Tensor, position_logits, stride: int = 1) -> torch.Tensor:
    """Multi-head attention written from its formula: logits_ij = q_i . k_j / sqrt(d) + q_i . p(i, j), softmax
    over j, heads concatenated; a stride-2 block then average-pools 2 x 2."""
    batch, _, height, width = x.shape
    heads = attention.num_heads
    q, k, v = torch.nn.functional.conv2d(x, attention.qkv.weight).flatten(2).chunk(3, dim=1)
    q, k, v = (t.reshape(batch, heads, -1, height * width).transpose(2, 3) for t in (q, k, v))  # [B, h, HW, d]
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    positions = position_logits(q, ys, xs)  # [B, h, HW, HW]
    logits = q @ k.transpose(2, 3) / math.sqrt(q.shape[-1]) + positions
    out = (logits.softmax(dim=-1) @ v).transpose(2, 3).reshape(batch, -1, height, width)
    return torch.nn.functional.avg_pool2d(out, 2) if stride == 2 else out


@pytest.mark.parametrize(("layer", "index", "size"), [(3, 0, (32, 16)), (3, 1, (16, 8)), (4, 0, (16, 8)),
                                                      (4, 1, (8, 4))])
def test_relative_attention_matches_its_formula_on_non_square_maps(layer, index, size):
    torch.manual_seed(0)
    model = create_model("fsafcmn", num_classes=5)
    attention = getattr(model.backbone, f"layer{layer}")[index].conv2
    height, width = size
    table_h, table_w = attention.pos_embed.height_rel, attention.pos_embed.width_rel
    assert table_h.shape[0] == 2 * height - 1 and table_w.shape[0] == 2 * width - 1

    def relative(q, ys, xs):  # r_h[y_j - y_i] + r_w[x_j - x_i]
        r = table_h[ys[None, :] - ys[:, None] + height - 1] + table_w[xs[None, :] - xs[:, None] + width - 1]
        return torch.einsum("bhid,ijd->bhij", q, r)

    x = torch.randn(2, attention.qkv.in_channels, height, width)
    stride = 2 if index == 0 else 1  # last stride 2: the first block of each layer halves the map
    with torch.no_grad():
        got, want = attention(x), _direct_attention(attention, x, relative, stride)
    assert got.shape == (2, attention.qkv.in_channels, height // stride, width // stride)
    assert torch.allclose(got, want, atol=1e-5)


def test_absolute_position_variant_matches_its_formula():
    torch.manual_seed(0)
    model = create_model("fsafcmn", num_classes=5, attention="absolute")
    attention = model.backbone.layer3[1].conv2
    emb_h, emb_w = attention.pos_embed.height_emb, attention.pos_embed.width_emb  # [heads, H or W, d]

    def absolute(q, ys, xs):  # q_i . (e_h[y_j] + e_w[x_j]), one embedding per head
        return torch.einsum("bhid,hjd->bhij", q, emb_h[:, ys] + emb_w[:, xs])

    x = torch.randn(2, 256, 16, 8)
    with torch.no_grad():
        assert torch.allclose(attention(x), _direct_attention(attention, x, absolute), atol=1e-5)
    assert _deploy(attention="absolute") - _deploy() == sum(
        planes * (h + w) - (2 * h - 1 + 2 * w - 1) * planes // 4
        for layer, blocks, planes in ((3, 6, 256), (4, 3, 512)) for index in range(blocks)
        for h, w in [block_input_size((256, 128), layer, index, 2)])


def _ibn_net_state_dict(reference: torchvision.models.ResNet) -> dict[str, torch.Tensor]:
    """A state dict in the layout of IBN-Net's published resnet50_ibn_a file: in layers 1-3, every bottleneck's
    bn1 is `bn1.IN.{weight,bias}` (first half of the channels) and `bn1.BN.*` (the rest); fc included."""
    state = {}
    for key, value in reference.state_dict().items():
        parts = key.split(".")
        if parts[0] in ("layer1", "layer2", "layer3") and parts[2] == "bn1":
            prefix, name = ".".join(parts[:3]), parts[3]
            half = reference.get_submodule(prefix).num_features // 2
            if name in ("weight", "bias"):
                state[f"{prefix}.IN.{name}"] = value[:half].clone()
            state[f"{prefix}.BN.{name}"] = value if name == "num_batches_tracked" else value[half:].clone()
        else:
            state[key] = value
    return state


def test_ibn_a_checkpoint_format_loads_by_name_with_nothing_missing(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet50()
    for module in reference.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.normal_(module.weight)
            torch.nn.init.normal_(module.running_mean)
    path = tmp_path / "resnet50_ibn_a-d9d0bb7b.pth"
    state = _ibn_net_state_dict(reference)
    torch.save(state, path)
    assert sum(".IN." in k for k in state) == 2 * (3 + 4 + 6)

    baseline = create_model("fsafcmn", num_classes=5, **BASELINE)
    assert baseline.pretrained_cfg.name == "resnet50_ibn_a" and baseline.pretrained_cfg.sha256_prefix == "d9d0bb7b"
    report = load_pretrained(baseline, baseline.pretrained_cfg, path)
    assert report.unexpected == [] and report.skipped_shape == []
    assert [k for k in report.missing if not k.startswith("head.")] == []  # the whole trunk came from the file
    block = baseline.backbone.layer2[1]
    assert isinstance(block.bn1, IBN) and block.bn1.IN.weight.shape == (64,)
    assert torch.equal(block.bn1.IN.weight, reference.layer2[1].bn1.weight[:64])
    assert torch.equal(block.bn1.BN.running_mean, reference.layer2[1].bn1.running_mean[64:])
    assert isinstance(baseline.backbone.layer4[0].bn1, torch.nn.BatchNorm2d)  # layer4 stays plain

    full = create_model("fsafcmn", num_classes=5)
    report = load_pretrained(full, full.pretrained_cfg, path)
    assert report.unexpected == [] and report.skipped_shape == []
    new = {k for k in report.missing if not k.startswith("head.")}
    assert all(".conv2." in k or k.startswith("stage_eca.") for k in new)  # only the attention and ECA are new
    assert torch.equal(full.backbone.layer3[2].conv1.weight, reference.layer3[2].conv1.weight)


def test_ibn_splits_instance_and_batch_normalisation():
    ibn = IBN(6).eval()
    x = torch.randn(2, 6, 5, 4)
    out = ibn(x)
    assert torch.allclose(out[:, :3], torch.nn.functional.instance_norm(x[:, :3], eps=1e-5), atol=1e-5)
    assert torch.allclose(out[:, 3:], x[:, 3:] / math.sqrt(1 + 1e-5), atol=1e-5)  # BN with fresh statistics


def test_eca_placements_and_fusion_options():
    stage = create_model("fsafcmn", num_classes=5)
    assert [m.conv.kernel_size[0] for m in stage.stage_eca] == [3, 5, 5, 5, 7]
    block = create_model("fsafcmn", num_classes=5, eca="block")
    assert block.stage_eca is None
    assert sum(isinstance(b.bn3, BatchNormThenECA) for layer in block.backbone.stages() for b in layer) == 16
    summed = create_model("fsafcmn", num_classes=5, fusion="sum", input_size=[128, 64]).eval()
    with torch.no_grad():
        assert summed(torch.randn(2, 3, 128, 64))["embedding"].shape == (2, 2048)
    stride1 = create_model("fsafcmn", num_classes=5, last_stride=1, input_size=[128, 64]).eval()
    with torch.no_grad():
        maps = stride1.forward_features(torch.randn(1, 3, 128, 64))
    assert [tuple(m.shape[-2:]) for m in maps] == [(16, 8), (8, 4), (8, 4)]


def test_basic_block_depths_for_cpu_sized_runs():
    """depth 18 (the regression suite's FSAFCMN case): IBN-a, attention sized for each block's output, ECA on the
    last BN of every block with eca=block, 896-d fusion, IBN-Net's ResNet18-IBN-a weights."""
    model = create_model("fsafcmn", num_classes=5, depth=18, input_size=[64, 32])
    stages = model.backbone.stages()
    assert all(isinstance(block.bn1, IBN) for layer in stages[:3] for block in layer)
    # a basic block strides in conv1: its attention runs at the block's output size (64x32 -> 4x2, then 2x1)
    sizes = [(block.conv2.pos_embed.height, block.conv2.pos_embed.width) for layer in stages[2:] for block in layer]
    assert sizes == [(4, 2), (4, 2), (2, 1), (2, 1)]
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 32))
    assert out["embedding"].shape == (2, 128 + 256 + 512)
    assert model.pretrained_cfg.name == "resnet18_ibn_a"
    block = create_model("fsafcmn", num_classes=5, depth=18, eca="block", input_size=[64, 32])
    assert sum(isinstance(b.bn2, BatchNormThenECA) for layer in block.backbone.stages() for b in layer) == 8
    with pytest.raises(ReidbenchError, match="depth: expected one of 18, 34, 50"):
        create_model("fsafcmn", num_classes=5, depth=101)


@pytest.mark.parametrize(("options", "message"), [
    ({"eca": "channel"}, "eca: expected one of stage, block, none"),
    ({"attention": "global"}, "attention: expected one of relative, absolute, none"),
    ({"input_size": [250, 128]}, "input_size: expected"),
    ({"heads": 3}, "heads: expected"),
])
def test_bad_options_are_user_errors_naming_the_option(options, message):
    with pytest.raises(ReidbenchError, match=message):
        create_model("fsafcmn", num_classes=5, **options)


def test_images_of_another_size_than_the_position_tables_are_a_user_error():
    model = create_model("fsafcmn", num_classes=5).eval()
    with pytest.raises(ReidbenchError, match=r"model.options.input_size: .* 256x128 images, got 128x64"):
        model(torch.randn(1, 3, 128, 64))


@pytest.fixture
def env(tmp_path, monkeypatch):
    for name, sub in (("REIDBENCH_DATA", "data"), ("REIDBENCH_RUNS", "runs"), ("REIDBENCH_LEADERBOARDS", "lb"),
                      ("XDG_CACHE_HOME", "cache")):
        monkeypatch.setenv(name, str(tmp_path / sub))
    return tmp_path


def test_paper_cells_are_set_variants_of_one_recipe(env):
    from reidbench.papers.loading import load_paper, select_cells
    from reidbench.papers.plan import CITED, NO_DATA, READY, plan_cells

    cells = select_cells(load_paper("fsafcmn"))

    def plan(scale: str) -> dict:
        planned = plan_cells(cells, scale, 1, env / "data", env / "runs", with_cost=False)
        return {p.cell.label: p for p in planned}

    full = plan("full")
    own = {label for label, p in full.items() if p.status != CITED}
    assert own == {
        "Table 1 / AlignedReID++[14] / M", "Table 1 / AlignedReID++[14] / D", "Table 1 / Our Method / M",
        "Table 1 / Our Method / D", "Table 2 / Baseline / M", "Table 2 / Baseline + SAM / M",
        "Table 2 / Baseline + SAM + Feature Fusion / M"}
    assert all(full[label].status == NO_DATA for label in own)  # runnable once the dataset is installed
    smoke = plan("smoke")
    assert all(smoke[label].status == READY for label in own)
    runs = {label: smoke[label].runs[0] for label in own}
    assert runs["Table 1 / Our Method / M"].hash == runs["Table 2 / Baseline + SAM + Feature Fusion / M"].hash
    assert len({run.hash for run in runs.values()}) == 6
    baseline = runs["Table 2 / Baseline / M"].recipe
    assert baseline.model.name == "fsafcmn" and baseline.model.options["attention"] == "none"
    assert baseline.model.options["input_size"] == [baseline.data.height, baseline.data.width] == [128, 64]
    ours = runs["Table 1 / Our Method / D"].recipe
    assert (ours.optim.name, ours.optim.lr, ours.eval.metric, ours.eval.feature) == ("adam", 3.5e-4, "cosine",
                                                                                   "embedding")


@pytest.mark.slow
def test_reproduce_and_ablate_at_smoke_scale(env, run_cli):
    """`reidbench reproduce fsafcmn --scale smoke` trains the 6 distinct runs of the 7 own cells on the synthetic
    miniature; `reidbench ablate fsafcmn --scale smoke` then renders Table 2 from the same runs."""
    import pandas as pd

    code, out, err = run_cli("reproduce", "fsafcmn", "--scale", "smoke", "--device", "cpu")
    assert code == 0, err
    frame = pd.read_csv(env / "lb" / "fsafcmn.smoke.csv")
    measured = frame[(frame["scale"] == "smoke") & frame["reproduced"].notna()]
    assert {(t, r) for t, r in zip(measured["table"], measured["row"], strict=True)} == {
        ("Table 1", "AlignedReID++[14]"), ("Table 1", "Our Method"), ("Table 2", "Baseline"),
        ("Table 2", "Baseline + SAM"), ("Table 2", "Baseline + SAM + Feature Fusion")}
    assert len(list((env / "runs").rglob("run.json"))) == 6
    code, out, err = run_cli("ablate", "fsafcmn", "--scale", "smoke", "--device", "cpu")
    assert code == 0, err
    assert "fsafcmn Table 2 (smoke)" in out and "not run" not in out  # every row measured, from the same runs
    assert len(list((env / "runs").rglob("run.json"))) == 6
