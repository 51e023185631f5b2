"""Every command of README.md and docs/*.md, taken from the Markdown as a user would copy it.

Each ```bash line (continuations joined, comments dropped) is one of:

* **run**: quick on the tiny world, so it is executed in a fresh folder whose ``data/world`` is
  a copy of the tiny world (``--preset demo`` becomes ``tiny``, the only change made);
* **compose**: a Hydra entry point whose run takes longer (training, evaluation, studies): its
  config is composed in-process with the command's overrides, exactly as the entry point would,
  so a renamed option or config group fails; paths it reads under ``data/`` must exist;
* **skip**: a reason is given in :data:`SKIPPED`.

A command of no known kind fails the test, so a new documented command has to be classified.
Commands known to be wrong in docs this file does not own are in :data:`KNOWN_WRONG` (strict
xfail: once the doc is fixed, the entry must go).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

#: Hydra entry points: how the command is spelt -> the config it composes.
ENTRY_CONFIGS = {
    ("train.py",): "train.yaml",
    ("eval.py",): "eval.yaml",
    ("-m", "occaist.train"): "train.yaml",
    ("-m", "occaist.evaluate"): "eval.yaml",
    ("predict.py",): "predict.yaml",
    ("-m", "occaist.predict"): "predict.yaml",
    ("-m", "occaist.stylize"): "stylize.yaml",
    ("-m", "occaist.pipelines.aist_study"): "aist_study.yaml",
    ("-m", "occaist.pipelines.pose_study"): "pose_study.yaml",
    ("-m", "occaist.prep"): "prep/prep.yaml",
}

#: Commands not run nor composed, by a regular expression on the command text, with the reason.
SKIPPED = {
    r"^make (demo|test)\b": "the whole study / the whole suite: minutes, run by CI itself",
    r"^(source|export) ": "shell set-up",
    r"^git ": "reads the repository's history",
    r"^python -m occaist\.predict \.\.\.$": "stands for any predict.py command",
    r"^python predict\.py experiment=<exp>": "the generic template of the commands below it",
    r"^python scripts/bench_occnet\.py": "a benchmark (minutes), as make bench runs them",
    r"^python scripts/occnet_heatmaps\.py": "trains a heatmap network (minutes)",
}

#: Wrong commands in docs owned by others, reported to the lead; text -> what is wrong.
KNOWN_WRONG = {
    "python scripts/carfusion_to_coco.py --root data/world/carfusion "
    "--out data/world/carfusion/annotations": "docs/occlusion_net.md: the script's default "
    "sequences are real CarFusion's (craig, morewood, penn2...), absent from the synthetic world",
}

#: Python blocks that need a trained checkpoint or predictions: doc name -> reason.
SKIPPED_SNIPPETS = {
    "aist.md": "needs a trained AIST checkpoint (ckpt, x, src, dst are the reader's)",
    "predict.md": "reads predictions written by a predict.py run",
}


@dataclass
class Command:
    doc: str
    line: int
    text: str
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    block: int = 0  # line of the block's first line: commands of a block run in order

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def _blocks(path: Path, language: str) -> list[tuple[int, list[str]]]:
    """``(first line number, lines)`` of each fenced block of ``language``."""
    blocks, current, start = [], None, 0
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.startswith("```"):
            if current is None and line.strip() == f"```{language}":
                current, start = [], number + 1
            elif current is not None:
                blocks.append((start, current))
                current = None
            continue
        if current is not None:
            current.append(line)
    return blocks


def documented_commands() -> list[Command]:
    commands = []
    for path in DOC_FILES:
        for start, lines in _blocks(path, "bash"):
            pending, first = "", 0
            for offset, line in enumerate(lines):
                if not pending:
                    first = start + offset
                pending += line.rstrip()
                if pending.endswith("\\"):
                    pending = pending[:-1] + " "
                    continue
                # placeholders such as <aist run> may hold spaces: one word each
                words = shlex.split(re.sub(r"<[^<>]*>", "<placeholder>", pending), comments=True)
                raw, pending = pending, ""
                if not words:
                    continue
                env = {}
                while re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                    key, value = words.pop(0).split("=", 1)
                    env[key] = value
                text = re.sub(r"^([A-Z_]+=\S*\s+)+", "", raw.split(" #")[0]).strip()
                text = re.sub(r"\s+", " ", text)
                commands.append(Command(path.name, first, text, env, words, start))
    return commands


COMMANDS = documented_commands()


def classify(command: Command) -> tuple[str, str]:
    """``("run" | "compose" | "skip" | "unknown", detail)``."""
    for pattern, reason in SKIPPED.items():
        if re.search(pattern, command.text):
            return "skip", reason
    argv = command.argv
    if argv[:3] == ["python", "-m", "occaist.synth"]:
        return "run", "synth"
    if argv[:2] == ["python", "scripts/carfusion_to_coco.py"]:
        return "run", "script"
    for spelling, config in ENTRY_CONFIGS.items():
        if tuple(argv[1 : 1 + len(spelling)]) == spelling:
            if config == "prep/prep.yaml" and "segmenter=maskrcnn" not in argv:
                return "run", "prep"  # provided masks: seconds on the tiny world
            if config == "train.yaml" and "--cfg" in argv:
                return "run", "print the config"
            return "compose", config
    return "unknown", ""


def test_the_docs_have_commands_of_every_kind() -> None:
    kinds = {classify(c)[0] for c in COMMANDS}
    assert {"run", "compose", "skip"} <= kinds
    assert len(COMMANDS) > 40
    unknown = [c.id + " " + c.text for c in COMMANDS if classify(c)[0] == "unknown"]
    assert not unknown, f"documented commands of no known kind (classify them): {unknown}"


def test_known_wrong_commands_are_still_in_the_docs() -> None:
    texts = {c.text for c in COMMANDS}
    stale = [text for text in KNOWN_WRONG if text not in texts]
    assert not stale, f"fixed in the docs: remove from KNOWN_WRONG {stale}"


# ------------------------------------------------------------------------------------ helpers
@pytest.fixture
def sandbox(tmp_path: Path, tiny_world: Path) -> Path:
    """A fresh folder standing for the repository root: ``data/world`` is the tiny world."""
    shutil.copytree(tiny_world, tmp_path / "data" / "world", symlinks=True)
    return tmp_path


def _substitute(argv: list[str], sandbox: Path) -> list[str]:
    out = []
    for word in argv:
        word = word.replace("$SLURM_ARRAY_TASK_ID", "0")
        word = re.sub(r"(?<![\w.])/tmp/", f"{sandbox}/tmp/", word)
        out.append(word)
    for i, word in enumerate(out):
        if word == "--preset":
            out[i + 1] = "tiny"
    return out


def _marks(command: Command) -> list:
    if command.text in KNOWN_WRONG:
        return [pytest.mark.xfail(reason=KNOWN_WRONG[command.text], strict=True)]
    return []


def _params(kind: str) -> list:
    return [pytest.param(c, id=c.id, marks=_marks(c)) for c in COMMANDS if classify(c)[0] == kind]


# ------------------------------------------------------------------------------------ run
def _run_blocks() -> list:
    """One param per Markdown block with commands to run, its commands in order (a later
    command may read what an earlier one wrote, as when the user pastes the block)."""
    blocks: dict[tuple[str, int], list[Command]] = {}
    for command in COMMANDS:
        if classify(command)[0] == "run":
            blocks.setdefault((command.doc, command.block), []).append(command)
    return [
        pytest.param(cmds, id=f"{doc}:{line}", marks=[m for c in cmds for m in _marks(c)])
        for (doc, line), cmds in blocks.items()
    ]


@pytest.mark.slow
@pytest.mark.parametrize("commands", _run_blocks())
def test_documented_commands_run_on_the_tiny_world(commands: list[Command], sandbox: Path) -> None:
    for command in commands:
        _run(command, sandbox)


#: Substituted synth commands on ``data/world`` already run in this process: the sandbox holds
#: that very world already, so a second identical run would only repeat the first.
_SYNTH_DONE: set[str] = set()


def _run(command: Command, sandbox: Path) -> None:
    argv = _substitute(command.argv, sandbox)
    key = " ".join(argv)
    if argv[2:3] == ["occaist.synth"] and "data/world" in argv:
        if key in _SYNTH_DONE:
            return
        _SYNTH_DONE.add(key)
    argv[0] = sys.executable
    if argv[1].endswith(".py"):
        argv[1] = str(REPO / argv[1])
    env = {
        **os.environ,
        **command.env,
        "OMP_NUM_THREADS": "1",
        "OCCAIST_LOGS": str(sandbox / "logs"),
        "WANDB_MODE": "disabled",
    }
    env.pop("OCCAIST_DATA", None)
    result = subprocess.run(
        argv, cwd=sandbox, env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, f"{command.text}\n{result.stderr[-3000:]}"
    _check_outputs(command, argv, sandbox)


def _check_outputs(command: Command, argv: list[str], sandbox: Path) -> None:
    """What the command says it writes is where the configs look for it."""
    words = dict(w.split("=", 1) for w in argv if "=" in w and not w.startswith("-"))
    if argv[2:3] == ["occaist.synth"]:
        root = Path(argv[argv.index("--root") + 1])
        root = root if root.is_absolute() else sandbox / root
        assert (root / "world.json").exists()
        if root.resolve() != (sandbox / "data" / "world").resolve() and "/tmp/" not in str(root):
            pytest.fail(f"{command.text}: writes {root}, the configs read data/world")
    elif argv[2:3] == ["occaist.prep"]:
        data_dir = Path(words.get("data_dir", sandbox / "data"))
        out = Path(words.get("out_dir", data_dir / "prepared" / "real"))
        assert (out / "report.json").exists(), out
        assert any((out / "train").glob("*.png"))


# ------------------------------------------------------------------------------------ compose
def _first_of_sweeps(overrides: list[str]) -> list[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    out = []
    for text, override in zip(overrides, parsed, strict=True):
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()))
            out.append(f"{override.get_key_element()}={first}")
        else:
            out.append(text)
    return out


@pytest.mark.parametrize("command", _params("compose"))
def test_documented_command_composes(
    command: Command, sandbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig, OmegaConf, open_dict

    from occaist.schemas import register_schemas

    config = classify(command)[1]
    words = _substitute(command.argv, sandbox)
    overrides = [
        w.replace("<placeholder>", "placeholder")
        for w in words[1:]
        if "=" in w and not w.startswith("-")
    ]
    monkeypatch.chdir(sandbox)
    for key in ("OCCAIST_DATA", "OCCAIST_ROOT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("OCCAIST_LOGS", str(sandbox / "logs"))
    register_schemas()
    GlobalHydra.instance().clear()
    conf_dir = REPO / "src" / "occaist" / "conf" / Path(config).parent
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = compose(
                Path(config).name, overrides=_first_of_sweeps(overrides), return_hydra_config=True
            )
            with open_dict(cfg):
                cfg.hydra.job.num, cfg.hydra.job.id = 0, "0"
                cfg.hydra.runtime.output_dir = str(sandbox / "logs" / "run")
            HydraConfig().set_config(cfg)
            if config == "prep/prep.yaml":
                from occaist.prep.__main__ import settings_from_config

                settings_from_config(cfg)  # unknown keys and wrong types fail here
            _check_paths(command, cfg, sandbox)
            if isinstance(cfg.get("data"), DictConfig):
                OmegaConf.to_container(cfg.data, resolve=True)  # every interpolation resolves
    finally:
        GlobalHydra.instance().clear()


def _check_paths(command: Command, cfg, sandbox: Path) -> None:
    """Data the command reads from the user's ``data/`` folder must be where synth wrote it."""
    data = cfg.get("data")
    candidates = []
    if data is not None:
        candidates += [data.get(key) for key in ("root", "renders_root") if key in data]
    candidates += [cfg.get(key) for key in ("src", "input") if key in cfg]
    for value in candidates:
        if not isinstance(value, str) or "placeholder" in value:
            continue
        path = Path(value) if Path(value).is_absolute() else sandbox / value
        if path.is_relative_to(sandbox / "data" / "world") and not set(path.name) & set("*?"):
            assert path.exists(), f"{command.text}: reads {value}, which is not in the world"


# ------------------------------------------------------------------------------------ python
def _snippets() -> list:
    params = []
    for path in DOC_FILES:
        for start, lines in _blocks(path, "python"):
            reason = SKIPPED_SNIPPETS.get(path.name)
            marks = [pytest.mark.skip(reason=reason)] if reason else []
            params.append(pytest.param("\n".join(lines), id=f"{path.name}:{start}", marks=marks))
    return params


@pytest.mark.slow
@pytest.mark.parametrize("code", _snippets())
def test_documented_python_runs(code: str, sandbox: Path) -> None:
    code = code.replace('preset="demo"', 'preset="tiny"')
    code = code.replace("/path/to/occaist/conf", str(REPO / "src" / "occaist" / "conf"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=sandbox, env=env, capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip
    # the README's compose example instantiates AIST with its ImageNet ResNet-18 (a file the
    # user provides); without it the one expected failure is the error naming that file
    missing_weights = "MissingWeightsError" in result.stderr and "resnet18" in result.stderr
    assert result.returncode == 0 or missing_weights, result.stderr[-3000:]
    if "generate_world" in code:
        assert (sandbox / "data" / "world" / "world.json").exists()
