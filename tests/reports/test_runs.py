"""Reading run and bench folders back: records, grouping, mean ± std, settings differences, errors."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest

from skyfuse.errors import ConfigError
from skyfuse.reports.runs import (
    ABSENT,
    collect_runs,
    config_diff,
    flatten,
    group_runs,
    run_differences,
)
from tests.reports.helpers import CLASSES, make_bench, make_run, scene_folder


def _metrics(run_dir: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((run_dir / "metrics.json").read_text())


def test_bench_and_run_folders_become_records(made: dict[str, Path]) -> None:
    runs = collect_runs([made["bench"], made["run"]])
    names = [r.name for r in runs]
    # the bench's model order (runs.csv), then seeds; probes after the models; the run last
    assert names == [
        "bench/concat-s0", "bench/concat-s1", "bench/image-s0", "bench/image-s1",
        "bench/probe-image-s0", "bench/probe-image-s1", "bench/probe-text-s0",
        "bench/probe-text-s1", "bench/probe-image+text-s0", "bench/probe-image+text-s1", "run",
    ]  # fmt: skip
    by_name = {r.name: r for r in runs}
    probe = by_name["bench/probe-text-s1"]
    assert (probe.model, probe.seed, probe.kind, probe.curves) == ("probe-text", 1, "probe", [])
    run = by_name["run"]
    m = _metrics(made["run"])
    assert (run.model, run.seed, run.kind, run.classes) == ("concat", 0, "train", list(CLASSES))
    assert run.oa == m["test"]["oa"] and run.confusion == m["test"]["confusion"]
    assert run.f1 == [pytest.approx(m["test"]["per_class"][c]["f1"]) for c in CLASSES]
    # curves: the select phase's history, one row per epoch, and the kept epoch
    assert [row["epoch"] for row in run.curves] == [0.0, 1.0, 2.0, 3.0]
    assert {"train_loss", "val_loss"} <= set(run.curves[0])
    assert run.chosen_epoch == m["training"]["best_epoch"]
    assert run.settings["train_config.epochs"] == 4 and run.settings["fusion_config.width"] == 16
    # a folder given twice, or a bench run given on its own too, counts once
    again = collect_runs([made["bench"], made["bench"] / "runs" / "concat-s0", made["bench"]])
    assert len(again) == 10


def test_groups_mean_and_sample_std_in_percent(made: dict[str, Path]) -> None:
    runs = collect_runs([made["bench"], made["run"]])
    groups = {g.label: g for g in group_runs(runs)}
    # the separate run trained otherwise (4 epochs, selection on val): a concat group of its own,
    # both labelled with the settings that tell them apart
    bench_label = "concat (epochs=2, selection=fixed)"
    run_label = "concat (epochs=4, selection=val)"
    assert list(groups) == [
        bench_label, run_label, "image", "probe-image", "probe-text", "probe-image+text",
    ]  # fmt: skip
    concat = groups[bench_label]
    dirs = [made["bench"] / "runs" / "concat-s0", made["bench"] / "runs" / "concat-s1"]
    for metric in ("oa", "aa", "kappa"):
        values = [100 * _metrics(d)["test"][metric] for d in dirs]
        mean, std = concat.mean_std(metric)
        assert mean == pytest.approx(statistics.mean(values))
        assert std == pytest.approx(statistics.stdev(values))
    assert concat.n == 2
    matrices = [_metrics(d)["test"]["confusion"] for d in dirs]
    assert concat.confusion_sum() == [
        [sum(m[i][j] for m in matrices) for j in range(3)] for i in range(3)
    ]
    f1 = [[_metrics(d)["test"]["per_class"][c]["f1"] for c in CLASSES] for d in dirs]
    assert concat.f1_mean() == pytest.approx(
        [100 * statistics.mean(col) for col in zip(*f1, strict=True)]
    )
    # one run: std 0, not nan
    one = groups[run_label]
    assert one.mean_std("oa") == (pytest.approx(100 * _metrics(made["run"])["test"]["oa"]), 0.0)


def test_same_model_other_settings_is_another_group(made: dict[str, Path], tmp_path: Path) -> None:
    from skyfuse.data.folder import SceneFolder

    other = make_bench(
        tmp_path / "bench3", SceneFolder(made["data"]), models=("concat",), seeds=(0,), epochs=3
    )
    groups = group_runs(collect_runs([made["bench"], other]))
    labels = [g.label for g in groups]
    assert labels[:3] == [
        "concat (epochs=2)",
        "concat (epochs=3)",
        "image",
    ]
    three = groups[1]
    assert three.n == 1 and three.distinguishing == {"train_config.epochs": 3}
    assert [r.name for r in three.runs] == ["bench3/concat-s0"]


def test_config_diff_flattens_and_marks_absent_keys() -> None:
    a = {"train": {"lr": 0.001, "epochs": 2}, "model": {"name": "dual", "width": 16}, "x": None}
    b = {"train": {"lr": 0.0003, "epochs": 2}, "model": {"name": "dual"}, "x": None, "y": [1, 2]}
    assert flatten(a) == {
        "train.lr": 0.001, "train.epochs": 2, "model.name": "dual", "model.width": 16, "x": None,
    }  # fmt: skip
    assert config_diff(a, b) == {
        "model.width": (16, ABSENT),
        "train.lr": (0.001, 0.0003),
        "y": (ABSENT, [1, 2]),
    }
    assert config_diff(a, a) == {}


def test_config_yaml_is_preferred_and_diffed(made: dict[str, Path], tmp_path: Path) -> None:
    import yaml

    first, second = tmp_path / "a", tmp_path / "b"
    for path, lr in ((first, 0.001), (second, 0.0003)):
        shutil.copytree(made["run"], path)
        doc = {"kind": "train", "model": {"name": "concat"}, "train": {"lr": lr, "seed": 0}}
        (path / "config.yaml").write_text(yaml.safe_dump(doc))
    runs = collect_runs([first, second])
    assert runs[0].settings == {"kind": "train", "model.name": "concat", "train.lr": 0.001,
                                "train.seed": 0}  # fmt: skip
    assert run_differences(runs) == [{}, {"train.lr": (0.001, 0.0003)}]
    # runs that differ only in a config.yaml setting are two groups, labelled by it
    assert [g.label for g in group_runs(runs)] == [
        "concat (lr=0.001)",
        "concat (lr=0.0003)",
    ]


def test_logger_csv_is_preferred_for_curves(made: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(made["run"], run)
    assert (run / "logs" / "metrics.csv").is_file()  # the csv logger's, read back as the curves
    assert len(collect_runs([run])[0].curves) == 4
    (run / "logs" / "metrics.csv").write_text(
        "epoch,step,train_loss,val_loss,val_acc\n0,0,1.5,1.2,0.4\n1,1,1.1,0.9,0.7\n"
    )
    record = collect_runs([run])[0]
    assert [r["val_acc"] for r in record.curves] == [0.4, 0.7]
    shutil.rmtree(run / "logs")  # without logs: the history in metrics.json
    history = _metrics(run)["training"]["history"]
    assert [r["train_loss"] for r in collect_runs([run])[0].curves] == [
        pytest.approx(h["train_loss"]) for h in history
    ]


def test_bad_folders_are_one_line_config_errors(made: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"empty: neither a run folder .* nor a bench folder"):
        collect_runs([made["bench"], empty])
    with pytest.raises(ConfigError, match="missing: not a folder"):
        collect_runs([tmp_path / "missing"])
    zs = tmp_path / "zs"
    zs.mkdir()
    (zs / "metrics.json").write_text(json.dumps({"method": "lit", "zsl": {"top1": {"mean": 0.5}}}))
    with pytest.raises(ConfigError, match="not a classification run"):
        collect_runs([zs])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.json").write_text("{")
    with pytest.raises(ConfigError, match="unreadable"):
        collect_runs([broken])
    with pytest.raises(ConfigError) as info:
        collect_runs([empty])
    assert "\n" not in str(info.value)


def test_runs_over_other_classes_are_refused(made: dict[str, Path], tmp_path: Path) -> None:
    folder = scene_folder(tmp_path / "data2", classes=("beach", "forest"))
    other = make_run(tmp_path / "two-classes", folder)
    with pytest.raises(ConfigError, match=r"two-classes: its classes .* differ from those of"):
        collect_runs([made["run"], other])


def test_short_keys_are_unambiguous_tails() -> None:
    from skyfuse.reports.runs import short_keys

    keys = ["train_config.epochs", "train_config.lr", "fusion_config.dropout", "a.dropout"]
    assert short_keys(keys) == {
        "train_config.epochs": "epochs",
        "train_config.lr": "lr",
        "fusion_config.dropout": "fusion_config.dropout",
        "a.dropout": "a.dropout",
    }


def test_an_evaluate_output_is_a_row_of_its_own(made: dict[str, Path], tmp_path: Path) -> None:
    scored = tmp_path / "eval"
    shutil.copytree(made["run"], scored)
    metrics = _metrics(scored)  # what `skyfuse evaluate --out` adds: the part it scored
    metrics.update(part="test", seed=None)
    (scored / "metrics.json").write_text(json.dumps(metrics))
    runs = collect_runs([made["run"], scored])
    assert [r.kind for r in runs] == ["train", "evaluate"]
    assert [g.label for g in group_runs(runs)] == ["concat", "concat [evaluate: test]"]


def test_bench_runs_read_the_bench_config_in_the_train_schema(
    made: dict[str, Path], tmp_path: Path
) -> None:
    from skyfuse.experiments.config import (
        BenchExperiment,
        FusionSection,
        ModelSection,
        TrainExperiment,
        save_experiment,
    )
    from skyfuse.training.config import TrainConfig

    bench, run = tmp_path / "bench", tmp_path / "run"
    shutil.copytree(made["bench"], bench)
    shutil.copytree(made["run"], run)
    grid = BenchExperiment(
        models=["concat", "image"], seeds=[0, 1], fusion=FusionSection(width=16, heads=2),
        training=TrainConfig(epochs=2),
    )  # fmt: skip
    save_experiment(grid, bench / "config.yaml")
    one = TrainExperiment(
        seed=0, model=ModelSection(name="concat", width=16, heads=2),
        training=TrainConfig(epochs=2, lr=3e-4),
    )  # fmt: skip
    save_experiment(one, run / "config.yaml")
    runs = {r.name: r for r in collect_runs([bench, run])}
    concat = runs["bench/concat-s1"].settings
    assert concat["model.name"] == "concat" and concat["seed"] == 1 and "models" not in concat
    assert set(concat) == set(runs["run"].settings)  # one schema: the differences are real ones
    assert run_differences([runs["bench/concat-s0"], runs["run"]])[1] == {
        "training.lr": (0.001, 0.0003)
    }
    probe = runs["bench/probe-text-s0"].settings
    assert probe["model.name"] == "probe-text" and not any(k.startswith("training.") for k in probe)
    labels = [g.label for g in group_runs(list(runs.values()))]
    assert labels[:3] == ["concat (lr=0.001)", "concat (lr=0.0003)", "image"]
