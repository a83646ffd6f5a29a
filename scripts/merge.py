"""Check and join the jobs of a split run: every unit committed exactly once, then one run dir.

    python encode.py -m hydra/launcher=slurm runtime.num_jobs=8 'runtime.job_index=range(0,8)' ...
    python scripts/merge.py outputs/multirun/2026-11-24/10-00-00
    python scripts/merge.py <sweep dir> --hub-repo me/emilia-snac      # and publish the merged set

Missing units are reported by index with the encode.py command that finishes their job (its own
overrides plus runtime.resume=<its dir>); units committed twice are reported with the dirs that
hold them. Nothing is merged for a split run with either; the exit code is then 1.

The merged run goes to <sweep dir>/merged (merged/<dataset>-<codec> when the sweep holds several
split runs): shards/ as hard links to the jobs' files, manifest.jsonl, rejects.jsonl. The jobs'
`save.local` and `save.hub_repo` (which a job with runtime.num_jobs > 1 leaves to this script)
run on it, unless --no-save; --save-local and --hub-repo set them here.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from snactok.output.formats import save_local
from snactok.tools.merge import MERGED, check_sweep, describe_problems, merge_group
from snactok.tools.publish import PublishError, publish, recorded_files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="the sweep dir holding the jobs' run dirs")
    parser.add_argument("--out", type=Path, default=None, help="merged run dir (one split run only)")
    parser.add_argument("--verify", action="store_true", help="also check every file's sha256")
    parser.add_argument("--save-local", type=Path, default=None, help="save_to_disk the merged set")
    parser.add_argument("--hub-repo", default=None, help="publish the merged set to this Hub repo")
    parser.add_argument("--public", action="store_true", help="with --hub-repo: a public repo")
    parser.add_argument("--no-save", action="store_true", help="ignore the jobs' save.* settings")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    sweep = args.sweep_dir.resolve()
    try:
        groups = check_sweep(sweep, verify=args.verify)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not groups:
        print(f"error: no run dirs (with manifest.jsonl) under {sweep}", file=sys.stderr)
        return 2
    if len(groups) > 1 and (args.out or args.save_local or args.hub_repo):
        print(
            f"error: {sweep} holds {len(groups)} split runs ({', '.join(g.name for g in groups)}); "
            "--out, --save-local and --hub-repo need one: merge without them, or per run",
            file=sys.stderr,
        )
        return 2
    failed = 0
    for group in groups:
        if not group.ok:
            print(describe_problems(group, sweep), file=sys.stderr)
            failed += 1
            continue
        out = args.out or (sweep / MERGED if len(groups) == 1 else sweep / MERGED / group.name)
        merged = merge_group(group, out.resolve())
        records = group.records()
        print(
            f"{group.name}: {len(records)} of {len(group.unit_names)} units from {len(group.jobs)} "
            f"job dir(s), each exactly once; {sum(r['rows'] for r in records)} rows -> {merged}"
        )
        save = {} if args.no_save else group.jobs[0].conf.get("save", {})
        if target := args.save_local or save.get("local"):
            save_local(
                [merged / f["file"] for r in records if r["rows"] for f in recorded_files(r)],
                Path(target),
            )
        if repo := args.hub_repo or save.get("hub_repo"):
            private = not args.public if args.hub_repo else save.get("private", True)
            try:
                print(publish(merged, repo, private=private))
            except PublishError as err:
                print(f"error: {err}", file=sys.stderr)
                failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
