"""Every config composes; schema errors surface at compose time with the key's full path."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from occaist.schemas import TARGET_GROUPS, conf_dir, schema_name
from occaist.tasks import NON_FINITE_OBJECTIVE, objective_value
from tests.helpers import composed

CONF = conf_dir()


def _names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("experiment", _names("experiment"))
def test_every_experiment_composes(experiment: str) -> None:
    with composed([f"experiment={experiment}"]) as cfg:
        assert cfg.data._target_ and cfg.model._target_
        OmegaConf.to_container(cfg.model, resolve=False)


@pytest.mark.parametrize(
    "override",
    [f"trainer={n}" for n in _names("trainer")]
    + [f"logger={n}" for n in _names("logger")]
    + [f"callbacks={n}" for n in _names("callbacks")]
    + [f"debug={n}" for n in _names("debug")]
    + [f"hparams_search={n}" for n in _names("hparams_search")]
    + [f"data={n}" for n in _names("data")]
    + [f"model={n}" for n in _names("model")],
)
def test_every_group_option_composes(override: str) -> None:
    with composed([override]) as cfg:
        assert "trainer" in cfg


def test_eval_config_composes() -> None:
    with composed(["ckpt_path=some.ckpt"], config_name="eval.yaml") as cfg:
        assert cfg.ckpt_path == "some.ckpt"


def test_every_target_yaml_declares_its_schema() -> None:
    for group in TARGET_GROUPS:
        for path in sorted((CONF / group).glob("*.yaml")):
            raw = OmegaConf.load(path)
            has_target = "_target_" in raw or any(
                isinstance(v, dict) and "_target_" in v
                for v in OmegaConf.to_container(raw).values()
            )
            if has_target:
                assert schema_name(path) in list(raw.get("defaults", [])), (
                    f"{path} has a _target_ but does not list {schema_name(path)} in its defaults"
                )


def _write_experiment(dir_: Path, name: str, body: str) -> str:
    exp = dir_ / "experiment"
    exp.mkdir(parents=True, exist_ok=True)
    (exp / f"{name}.yaml").write_text("# @package _global_\n" + body)
    return f"hydra.searchpath=[file://{dir_}]"


def test_misspelled_key_in_experiment_fails_with_full_key(tmp_path: Path) -> None:
    searchpath = _write_experiment(tmp_path, "typo_exp", "model:\n  definitely_not_a_key: 3\n")
    with (
        pytest.raises(ConfigCompositionException) as err,
        composed([searchpath, "experiment=typo_exp"]),
    ):
        pass
    text = f"{err.value} {err.value.__cause__}"
    assert "definitely_not_a_key" in text
    assert "model.definitely_not_a_key" in text


def test_wrong_type_in_experiment_fails_with_full_key(tmp_path: Path) -> None:
    searchpath = _write_experiment(tmp_path, "type_exp", "trainer:\n  max_steps: many\n")
    with (
        pytest.raises(ConfigCompositionException) as err,
        composed([searchpath, "experiment=type_exp"]),
    ):
        pass
    text = f"{err.value} {err.value.__cause__}"
    assert "many" in text
    assert "trainer.max_steps" in text


def test_wrong_type_on_command_line_fails() -> None:
    with (
        pytest.raises(ConfigCompositionException, match=r"trainer\.max_epochs"),
        composed(["trainer.max_epochs=abc"]),
    ):
        pass


def test_objective_value_turns_nan_into_penalty() -> None:
    assert objective_value({"val/loss": float("nan")}, "val/loss") == NON_FINITE_OBJECTIVE
    assert objective_value({"val/loss": 0.25}, "val/loss") == 0.25
    assert objective_value({"val/loss": 1.0}, None) is None
    assert math.isfinite(objective_value({"val/loss": float("inf")}, "val/loss"))


def test_objective_penalty_is_on_the_wrong_side_of_the_direction() -> None:
    """A trial that never logged its metric (or got NaN) must lose, whichever way we optimise."""
    assert objective_value({"val/loss": 1.0}, "val/other") == NON_FINITE_OBJECTIVE
    assert objective_value({}, "val/iou", direction="maximize") == -NON_FINITE_OBJECTIVE
    nan = {"val/iou": float("nan")}
    assert objective_value(nan, "val/iou", direction="maximize") == -NON_FINITE_OBJECTIVE
    assert objective_value({"val/iou": 0.5}, "val/iou", direction="maximize") == 0.5


def test_default_callbacks_instantiate_with_constructor_defaults(tmp_path: Path) -> None:
    """Constructor defaults that YAML cannot express (objects) are left to the constructor."""
    from hydra.utils import instantiate

    with composed(["callbacks=default"], output_dir=tmp_path) as cfg:
        callbacks = {name: instantiate(node) for name, node in cfg.callbacks.items()}
    assert callbacks["rich_progress_bar"].theme is not None
    assert callbacks["model_checkpoint"].save_last is True


def test_plain_hydra_compose_works_in_a_fresh_interpreter(repo_root: Path) -> None:
    """The standard Compose API, with no occaist call first (the Hydra plugin registers)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from hydra import compose, initialize_config_dir\n"
        "with initialize_config_dir(config_dir=sys.argv[1], version_base='1.3'):\n"
        "    cfg = compose('train', overrides=['experiment=aist_constrained'])\n"
        "print(cfg.model._target_)\n"
        "print(cfg.data.renders_root)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(repo_root / "conf")],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    target, renders_root = result.stdout.split()[-2:]
    assert target == "occaist.models.aist.module.AISTCycleGAN"
    assert renders_root == str(repo_root / "data" / "world" / "shapenet_renders")


def test_optimizer_is_swapped_for_another_target_from_the_command_line() -> None:
    """Hydra would merge SGD's keys into Adam's node; a different _target_ replaces it."""
    import torch
    from hydra.utils import instantiate

    from occaist.schemas import validate_targets

    sgd = "model.optimizer={_target_: torch.optim.SGD, _partial_: true, lr: 0.01, momentum: 0.9}"
    with composed(["experiment=dpc_baseline", sgd]) as cfg:
        validate_targets(cfg)
        assert set(cfg.model.optimizer) == {"_target_", "_partial_", "lr", "momentum"}
        optimizer = instantiate(cfg.model.optimizer)([torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["momentum"] == 0.9
    # the same target keeps Hydra's merge: only lr changes
    with composed(["experiment=dpc_baseline", "model.optimizer={lr: 0.5}"]) as cfg:
        assert cfg.model.optimizer._target_ == "torch.optim.Adam"
        assert cfg.model.optimizer.lr == 0.5 and "betas" in cfg.model.optimizer


def test_a_swapped_target_is_still_validated_before_building(tmp_path: Path) -> None:
    from occaist.schemas import validate_targets
    from occaist.utils.errors import UserError

    typo = "model.optimizer={_target_: torch.optim.SGD, _partial_: true, lr: 0.1, momentumm: 1}"
    with (
        composed(["experiment=dpc_baseline", typo]) as cfg,
        pytest.raises(UserError, match=r"model\.optimizer: Key 'momentumm' not in 'SGD'"),
    ):
        validate_targets(cfg)
    searchpath = _write_experiment(tmp_path, "nested_typo", "model:\n  optimizer:\n    lrr: 0.1\n")
    with (
        composed([searchpath, "experiment=nested_typo"]) as cfg,
        pytest.raises(UserError, match=r"model\.optimizer: Key 'lrr' not in 'Adam'"),
    ):
        validate_targets(cfg)


def test_own_experiments_from_a_config_dir(repo_root: Path, tmp_path: Path) -> None:
    """README: experiments kept outside the package, found through ``--config-dir``."""
    import subprocess
    import sys

    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "my_run.yaml").write_text(
        "# @package _global_\ntask_name: my_run\nmodel:\n  optimizer:\n    lr: 0.123\n"
    )
    result = subprocess.run(
        [sys.executable, "train.py", "--config-dir", str(tmp_path), "experiment=my_run",
         "--cfg", "job"],
        cwd=repo_root, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "task_name: my_run" in result.stdout and "lr: 0.123" in result.stdout


def test_optimizer_swap_on_the_train_py_command_line(repo_root: Path) -> None:
    """The swap through ``@hydra.main`` too (its search path names ``pkg://occaist/conf``)."""
    import subprocess
    import sys

    sgd = "model.optimizer={_target_: torch.optim.SGD, _partial_: true, lr: 0.01, momentum: 0.9}"
    result = subprocess.run(
        [sys.executable, "train.py", "--cfg", "job", "experiment=dpc_baseline", sgd],
        cwd=repo_root, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    optimizer = result.stdout.split("optimizer:", 1)[1].split("scheduler:", 1)[0]
    assert "torch.optim.SGD" in optimizer and "momentum: 0.9" in optimizer
    assert "betas" not in optimizer
