"""Plot a finished run and listen to a few of its rows: writes <run dir>/report/.

    python scripts/inspect_run.py outputs/2026-11-24/02-01-44
    python scripts/inspect_run.py <run dir> --num-audio 5 --max-rows 100000
    python scripts/inspect_run.py <run dir> --wandb-project snactok    # also log it to W&B

See `snactok.tools.report` for what each file shows.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from snactok.tools.report import read_header, write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="the dir encode.py wrote (manifest.jsonl, shards/)")
    parser.add_argument("--num-audio", type=int, default=3, help="rows to decode back to audio")
    parser.add_argument("--max-rows", type=int, default=None, help="read at most this many rows")
    parser.add_argument("--wandb-project", default=None, help="log the report to a new W&B run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        header = read_header(args.run_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    run = None
    if args.wandb_project:
        import wandb  # secrets come from the environment (WANDB_API_KEY) or `wandb login`

        run = wandb.init(
            project=args.wandb_project,
            job_type="report",
            name=f"report-{args.run_dir.resolve().name}",
            config=header.get("config"),
        )
    try:
        files = write_report(args.run_dir, args.num_audio, run, max_rows=args.max_rows)
    finally:
        if run is not None:
            run.finish()
    for path in files:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
