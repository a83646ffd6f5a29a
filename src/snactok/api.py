"""The Python API, for notebooks: `snactok.encode([...overrides])` runs what `python encode.py ...`
runs, in this process's children, and hands back the run dir, the summary and the shards as a
`datasets.Dataset`.

    import snactok
    result = snactok.encode(["dataset=demo", "codec.weights=random", "runtime=debug"])
    result.summary["rows"], result.run_dir
    ds = result.load_dataset()          # the shards, in the dataset's order

The overrides are encode.py's command line, composed by Hydra from the repo's conf/. A sweep
(`-m`) and Slurm stay encode.py's; a notebook runs one config at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snactok.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # encode.py's (Hydra's) format
LOG_FILE = "encode.log"


@dataclass(frozen=True)
class Result:
    """A finished run: its dir, its summary (what `run` returns), and its shards."""

    run_dir: Path
    summary: dict[str, Any]

    def load_dataset(self, format: str | None = None):
        """The shards as one `datasets.Dataset` (split `train`), rows in the dataset's order:
        the JSONL shards when the run wrote them, else the Parquet ones, or `format`'s."""
        import datasets

        from snactok.output.rundir import file_format, read_run

        run = read_run(self.run_dir)
        files = run.shard_files(format=format) if format else run.data_files()
        if not files:
            raise FileNotFoundError(f"{self.run_dir} has no committed {format or ''} shards")
        builder = "json" if file_format(files[0].name) == "jsonl" else "parquet"
        return datasets.load_dataset(builder, data_files=[str(p) for p in files], split="train")


def compose(overrides: Sequence[str] = (), config_dir: Path = CONFIG_DIR):
    """The config `python encode.py <overrides>` runs, with its `hydra` node (for the run dir)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from snactok.config.checks import refuse_secret_overrides
    from snactok.config.schema import register_configs

    refuse_secret_overrides(list(overrides))
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            return hydra_compose("config", overrides=list(overrides), return_hydra_config=True)
    except HydraException as err:  # a bad key, group or typed value, as encode.py would print it
        raise ConfigError(f"{err}{': ' + str(err.__cause__) if err.__cause__ else ''}") from err
    finally:
        GlobalHydra.instance().clear()


def encode(overrides: Sequence[str] = (), run_dir: str | Path | None = None) -> Result:
    """Run encode.py's job for `overrides` and return its `Result`. The run dir is Hydra's
    (`outputs/<date>/<time>/`, or `hydra.run.dir=...`) unless `run_dir` is given; its log goes
    to `<run dir>/encode.log` as encode.py's does. Errors are raised, not turned into exit codes:
    `ConfigError` before anything starts, `PipelineError` when a run fails (it can be resumed
    with `runtime.resume=<run dir>`)."""
    from snactok.engine.run import run
    from snactok.output.resume import resume_target

    cfg = compose(overrides)
    here = Path(run_dir if run_dir is not None else cfg.hydra.run.dir).resolve()
    cfg = _saved_as_hydra_does(cfg, list(overrides), here)
    with _logging_to(here / LOG_FILE):
        summary = run(cfg, here)
    # runtime.resume=<dir> continues that dir; this one keeps only the log, as with encode.py
    return Result(run_dir=resume_target(cfg.runtime.resume, here), summary=summary)


def _saved_as_hydra_does(cfg, overrides: list[str], run_dir: Path):
    """Write `.hydra/` (config, hydra, overrides) into `run_dir` as encode.py's Hydra does (merge
    reads a job's overrides from it), and return the job's config without its `hydra` node."""
    from omegaconf import OmegaConf, open_dict

    saved = run_dir / ".hydra"
    saved.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create({"hydra": cfg.hydra}), saved / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(overrides), saved / "overrides.yaml")
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.save(cfg, saved / "config.yaml")
    return cfg


class _logging_to:
    """Log snactok's INFO lines to `path` (as encode.py's Hydra logging does) and, when nothing
    else prints them (a notebook's root logger has no handler), to stderr too; undone on exit."""

    def __init__(self, path: Path):
        self.path = path
        self.handlers: list[logging.Handler] = []

    def __enter__(self) -> None:
        logger = logging.getLogger("snactok")
        self.level = logger.level
        self.handlers.append(logging.FileHandler(self.path, encoding="utf-8"))
        if not logging.getLogger().handlers:
            self.handlers.append(logging.StreamHandler())
        for h in self.handlers:
            h.setFormatter(logging.Formatter(LOG_FORMAT))
            logger.addHandler(h)
        logger.setLevel(logging.INFO)

    def __exit__(self, *exc: object) -> None:
        logger = logging.getLogger("snactok")
        for h in self.handlers:
            logger.removeHandler(h)
            h.close()
        logger.setLevel(self.level)
