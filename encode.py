"""Encode an audio dataset into SNAC token shards.

    python encode.py                                          # demo data, snac_24khz, all GPUs or CPU
    python encode.py codec=snac_44khz dataset=common_voice
    python encode.py dataset=local_folder dataset.path=/data/wavs runtime.devices=[cuda:0,cuda:1]
    python encode.py codec.weights=random runtime=debug       # offline smoke run, meaningless tokens
    python encode.py -m dataset=demo,demo_music codec=snac_24khz,snac_32khz   # a sweep: 4 runs

Each run writes shards/, manifest.jsonl, rejects.jsonl and its log into its Hydra output dir,
outputs/<date>/<time>/ (sweeps: outputs/multirun/<date>/<time>/<job>/). Secrets come only from
the environment (HF_TOKEN, WANDB_API_KEY, MDC_API_KEY), never from the command line.
"""

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from snactok import register_configs
from snactok.config.checks import refuse_secret_overrides
from snactok.engine.run import run
from snactok.engine.signals import Interrupted
from snactok.errors import ConfigError, PipelineError

log = logging.getLogger("encode")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    sweep = Path(hydra_cfg.sweep.dir)
    group = f"sweep-{sweep.parent.name}-{sweep.name}" if hydra_cfg.mode == RunMode.MULTIRUN else None
    if "submitit" in str(hydra_cfg.launcher.get("_target_", "")) and cfg.runtime.resume is None:
        # Slurm requeues a pre-empted or timed-out job with the same command: continue its dir.
        log.info("runtime.resume=auto (a submitit job continues its own dir when requeued)")
        cfg.runtime.resume = "auto"
    try:
        run(cfg, run_dir, group)
    except ConfigError as err:
        log.error("config error: %s", err)
        sys.exit(2)
    except PipelineError:  # run() logged what failed and how to resume
        sys.exit(1)
    except Interrupted as err:
        sys.exit(128 + err.signum)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    refuse_secret_overrides(sys.argv[1:])
    register_configs()
    main()
