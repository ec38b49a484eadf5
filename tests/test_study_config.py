"""Study files: unknown keys and bad values are refused naming the key; --dry-run prints public commands."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from study_support import make_dataset, make_family

from study.cli import main
from study.config import StudyConfigError, load_study

REPO = Path(__file__).parents[1]


def _write(tmp_path, raw) -> Path:
    file = tmp_path / "study.yml"
    file.write_text(yaml.safe_dump(raw, sort_keys=False))
    return file


def _base(root) -> dict:
    return {
        "output": str(root / "out"),
        "data": {"json_root": str(root / "json"), "data_root": str(root / "data"), "source": "Tiny-FF",
                 "test": ["Tiny-A"]},
        "families": {"tiny": {"path": str(root / "family")}},
        "merges": {"ties": {"grid": {"density": [0.3, 0.7]}, "select": {"mode": "full_finetune"}}},
        "soups": {"greedy": {}},
    }  # fmt: skip


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r.update(mergse=r.pop("merges")), "unknown key 'mergse': did you mean 'merges'?"),
        (lambda r: r["merges"]["ties"].update(gird={}), "unknown key 'merges.ties.gird': did you mean 'grid'?"),
        (lambda r: r["data"].update(val_split="test"), "data.val_split: Value error, selection must never read a test"),
        (lambda r: r["families"]["tiny"].update(confg="x.yaml"), "unknown key 'families.tiny.confg': did you mean"),
        (lambda r: r["eval"].update(devcie="cuda") if "eval" in r else r.update(eval={"devcie": "cuda"}),
         "unknown key 'eval.devcie': did you mean 'device'?"),
        (lambda r: r["soups"].update(best={}), "soups.best: method must be one of ['uniform', 'greedy']"),
        (lambda r: r["families"].update(pe={"config": "a.yaml", "backbone_from": "nope"}),
         "families.pe.backbone_from 'nope': name a family listed before it (tiny)"),
        (lambda r: r.update(selection={"tie_break": "acc_val_threshold"}),
         "selection.tie_break: Value error, tie_break 'acc_val_threshold': choose a frame metric from"),
        (lambda r: r.update(selection={"tie_break": "video_auc"}), "tie_break 'video_auc': choose a frame metric"),
    ],
)
def test_config_errors_name_the_key(tmp_path, edit, message):
    raw = _base(tmp_path)
    edit(raw)
    with pytest.raises(StudyConfigError) as err:
        load_study(_write(tmp_path, raw))
    assert message in str(err.value)


def test_set_overrides_and_cli_error_line(tmp_path):
    file = _write(tmp_path, _base(tmp_path))
    study = load_study(file, ["merges.ties.grid.density=[0.1,0.2,0.5]", "eval.device=cuda"])
    assert study.merges["ties"].points() == [{"density": 0.1}, {"density": 0.2}, {"density": 0.5}]
    assert study.eval.device == "cuda"
    result = CliRunner().invoke(main, ["run", str(file), "--set", "selection.metric=eer", "--dry-run"])
    assert result.exit_code == 1
    assert result.output.startswith("Error:") and "selection.metric" in result.output


def test_unknown_method_gets_did_you_mean(tmp_path, tiny_spec):
    make_family(tmp_path / "family", tiny_spec)
    raw = _base(tmp_path)
    raw["merges"] = {"tie": {"grid": {"density": 0.5}}}
    result = CliRunner().invoke(main, ["run", str(_write(tmp_path, raw)), "--dry-run"])
    assert result.exit_code == 1
    assert "unknown merge method 'tie': did you mean 'ties'?" in result.output


def test_dry_run_prints_public_commands_and_writes_runnable_recipes(tmp_path, tiny_spec):
    make_family(tmp_path / "family", tiny_spec)
    for i, name in enumerate(["Tiny-FF", "Tiny-A"]):
        make_dataset(tmp_path / "json", tmp_path / "data", name, videos=2, frames=1, seed=i)
    result = CliRunner().invoke(main, ["run", str(_write(tmp_path, _base(tmp_path))), "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = [shlex.split(line) for line in result.output.splitlines() if not line.startswith("#")]
    tools = [words[0] for words in lines]
    assert tools == ["mergekit-yaml", "mergekit-yaml", "clip-eval", "clip-eval", "clip-eval"]
    for words in lines[:2]:
        recipe = yaml.safe_load(Path(words[1]).read_text())
        assert recipe["merge_method"] == "ties" and recipe["base_model"] == str(tmp_path / "family" / "base")
        assert words[2].startswith(str(tmp_path / "out" / "candidates" / "ties"))  # content-keyed folder
    assert lines[2][:4] == ["clip-eval", "soup", "--method", "greedy"] and "--val" in lines[2]
    assert lines[3][lines[3].index("--split") + 1] == "val"
    assert lines[4][lines[4].index("--split") + 1] == "test"
    assert not (tmp_path / "out" / "candidates").exists()  # nothing merged


def test_dry_run_prints_the_robustness_step_after_selection(tmp_path, tiny_spec):
    make_family(tmp_path / "family", tiny_spec)
    raw = _base(tmp_path) | {"robustness": {"perturbations": ["GB:9", "gend"], "seed": 3}}
    result = CliRunner().invoke(main, ["run", str(_write(tmp_path, raw)), "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    robust = shlex.split(lines[-2])
    assert lines[-3].startswith("# after selection") and robust[:4] == ["clip-eval", "SELECTED_MERGE", "SELECTED_SOUP",
                                                                        "REFERENCE"]  # fmt: skip
    assert robust[robust.index("--datasets") + 1] == "Tiny-A" and robust[robust.index("--split") + 1] == "test"
    assert [robust[i + 1] for i, w in enumerate(robust) if w == "--perturb"] == ["GB:9", "gend"]
    assert robust[robust.index("--perturb-seed") + 1] == "3"


def test_shipped_studies_validate():
    for file in sorted((REPO / "studies").glob("*.yml")):
        study = load_study(file)
        assert study.merges or study.soups, file.name
