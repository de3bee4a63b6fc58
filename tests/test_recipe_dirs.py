"""Where recipes and papers are found: users' folders first, then the recipes shipped with reidbench."""

from __future__ import annotations

import pytest

from reidbench.papers.loading import list_papers, load_paper
from reidbench.recipes.loading import RECIPES_DIR, RecipeError, load_recipe, recipe_dirs, resolve_path

PAPER = """paper: mine
title: My paper
datasets: {M: {train: market1501}}
tables:
  - id: Table 1
    groups: [M]
    metrics: [R1, mAP]
    rows:
      - {name: Mine, model: msinet, recipe: "mine_{slug}", values: {M: [90.0, 80.0]}}
"""


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("REIDBENCH_RECIPES", raising=False)  # restored after the test, also when the CLI sets it
    folder = tmp_path / "my-recipes"
    (folder / "mine").mkdir(parents=True)
    (folder / "mine" / "paper.yaml").write_text(PAPER)
    # inherits a shipped recipe by name and changes one key
    (folder / "mine_market1501.yaml").write_text("base: masenet/msinet_base.yaml\nname: mine\ntrain: {epochs: 7}\n")
    # the same name as a shipped recipe: the user's copy wins
    (folder / "bot").mkdir()
    (folder / "bot" / "resnet50_market1501.yaml").write_text("base: masenet/msinet_base.yaml\nname: shadow\n")
    return folder


def test_the_shipped_recipes_are_found_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REIDBENCH_RECIPES", raising=False)
    assert recipe_dirs() == [RECIPES_DIR]
    assert load_recipe("masenet/masenet_market1501").model.name == "masenet"
    assert "masenet" in list_papers()
    with pytest.raises(RecipeError, match="recipe file not found"):
        resolve_path("masenet/nothing_like_this")


def test_environment_folder_comes_before_the_shipped_recipes(user_folder, monkeypatch):
    monkeypatch.setenv("REIDBENCH_RECIPES", str(user_folder))
    assert recipe_dirs() == [user_folder, RECIPES_DIR]
    recipe = load_recipe("mine_market1501")
    assert recipe.train.epochs == 7 and recipe.optim.lr == 0.065  # the shipped base, one key changed
    assert load_recipe("bot/resnet50_market1501").name == "shadow"
    assert list_papers() == ["aap-reid", "fsafcmn", "masenet", "mhsa-net", "mine"]
    assert load_paper("mine").table("Table 1").rows[0].recipes == {"M": "mine_market1501"}


def test_recipes_dir_option_adds_a_paper_to_reproduce(user_folder, run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("REIDBENCH_DATA", str(tmp_path / "data"))
    code, out, err = run_cli("--recipes-dir", str(user_folder), "reproduce", "mine", "--dry-run")
    assert code == 0, err
    assert "mine: 1 cells" in out and "1 dataset missing" in out  # the user's paper, planned like a shipped one
    code, _, err = run_cli("--recipes-dir", str(tmp_path / "absent"), "reproduce", "mine", "--dry-run")
    assert code == 2 and "--recipes-dir" in err and "not a folder" in err
