"""The seed aggregation: on synthetic summaries, and on a folder holding the shared tiny run beside an eval of it."""

import json
import shutil
from pathlib import Path

import pytest

from src.aggregate import main
from src.mnist.report import aggregate
from tests.helpers import recipe_params, run_cli


def write_summary(
    folder: Path, recipe: str, seed: int, test_acc: float, first: int | None, validated: bool = True
) -> None:
    """A summary as a run writes it; `validated=False`: a run that evaluated nothing during training (`speedrun`)."""
    folder.mkdir(parents=True)
    summary = {
        "recipe": recipe, "params": 9320, "seed": seed, "epochs": 19, "test_acc": test_acc, "test_loss": 0.02,
        "best_val_acc": test_acc + 0.1 if validated else None, "best_epoch": 12 if validated else None,
        "first_epoch_at_or_above_99_4": first,
        "seconds_to_99_4": None if first is None else 30.0 * first,
        "train_seconds": 600.0, "device": "CPU (2 cores)",
        "per_epoch": [{"epoch": epoch, "val_acc": test_acc - 0.1 * (epoch == 18) if validated else None}
                      for epoch in range(1, 20)],
    }  # fmt: skip
    (folder / "summary.json").write_text(json.dumps(summary))


def test_rows_give_mean_std_min_and_first_epoch_per_seed(tmp_path: Path) -> None:
    write_summary(tmp_path / "sweep" / "0", "dropout_steplr", 2, 99.40, 9)
    write_summary(tmp_path / "sweep" / "1", "dropout_steplr", 1, 99.50, 16)
    write_summary(tmp_path / "sweep" / "2", "dropout_steplr", 3, 99.30, None)
    write_summary(tmp_path / "other" / "0", "baseline", 1, 98.70, None)
    write_summary(tmp_path / "speed" / "0", "speedrun", 1, 99.41, None, validated=False)
    main([str(tmp_path), "--out", str(tmp_path / "table")])
    rows = {row["recipe"]: row for row in aggregate([json.loads(p.read_text()) for p in tmp_path.rglob("*.json")])}
    steplr = rows["dropout_steplr"]
    assert steplr["seeds"] == "1,2,3"
    assert steplr["final test acc % (mean ± std)"] == "99.40 ± 0.10"
    assert (steplr["min"], steplr["max"]) == ("99.30", "99.50")
    assert steplr["first epoch ≥ 99.4 % (per seed)"] == "16, 9, never"
    assert steplr["minutes to 99.4 % from start (per seed)"] == "8.0, 4.5, never"
    assert steplr["minutes per run"] == "10.0"
    assert steplr["last-3-epochs min"] == "99.20"  # seed 3's epoch 18
    assert steplr["device"] == "CPU (2 cores)"
    assert rows["baseline"]["final test acc % (mean ± std)"] == "98.70 ± 0.00"
    assert (rows["speedrun"]["best-epoch acc % (mean)"], rows["speedrun"]["last-3-epochs min"]) == ("n/a", "n/a")
    markdown = (tmp_path / "table.md").read_text()
    assert markdown.count("\n") == 5 and "| dropout_steplr |" in markdown
    assert (tmp_path / "table.csv").read_text().startswith("recipe,params,epochs,seeds")


def test_a_table_of_several_dirs_needs_its_own_name(tmp_path: Path) -> None:
    """Written into the first dir by default, it would replace that sweep's own table."""
    write_summary(tmp_path / "a" / "0", "tiny", 1, 99.40, 9)
    write_summary(tmp_path / "b" / "0", "tiny", 2, 99.50, 9)
    main([str(tmp_path / "a")])
    table = (tmp_path / "a" / "results.md").read_text()
    with pytest.raises(SystemExit, match=r"^error: a table of 2 dirs needs --out STEM \(where to write"):
        main([str(tmp_path / "a"), str(tmp_path / "b")])
    assert (tmp_path / "a" / "results.md").read_text() == table


def test_a_real_run_beside_an_eval_of_it_gives_one_row(
    trained_run: Path, evaluated_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What an outputs/ folder holds after `make train` and `python -m src.eval`: only the training run counts."""
    shutil.copytree(trained_run, tmp_path / "runs" / "record", ignore=shutil.ignore_patterns("*.ckpt", "tensorboard"))
    shutil.copytree(evaluated_run, tmp_path / "evals" / "eval")
    summary = json.loads((trained_run / "summary.json").read_text())
    main([str(tmp_path), "--out", str(tmp_path / "table")])
    lines = (tmp_path / "table.md").read_text().splitlines()
    assert len(lines) == 3, lines
    cells = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert cells[:5] == ["record", f"{recipe_params('record'):,}", "2", "1", f"{summary['test_acc']:.2f} ± 0.00"]
    assert capsys.readouterr().out == (tmp_path / "table.md").read_text()


def test_dir_without_summaries_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no summary.json of a tested run under"):
        main([str(tmp_path)])


@pytest.mark.slow
def test_cli_error_is_one_line(tmp_path: Path) -> None:
    """`python -m src.aggregate` has its own exit path (argparse, no Hydra); it imports no torch, so this is cheap."""
    result = run_cli(str(tmp_path / "nowhere"), str(tmp_path), module="src.aggregate", data_dir=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"error: not a directory: {tmp_path / 'nowhere'}"]
    empty = run_cli(str(tmp_path), module="src.aggregate", data_dir=tmp_path)
    assert empty.returncode == 1
    assert empty.stderr.splitlines() == [
        f"error: no summary.json of a tested run under {tmp_path}; finished runs leave one each"
    ]
