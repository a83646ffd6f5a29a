"""Publish a finished run to the HF Hub as a dataset: its shards as they are, its manifest and
rejects, and a generated card whose `configs:` make `load_dataset("<user>/<name>")` work.

    snactok-publish outputs/2026-11-24/02-01-44 --repo me/demo-snac   # private unless --public
    snactok-publish <run dir> --repo me/librispeech-snac --public --license cc-by-4.0
    snactok-publish <run dir> --repo me/x --stage-only /tmp/look   # write it, upload nothing
    publish(Path("outputs/2026-11-24/02-01-44"), "me/demo-snac", private=False)

The repo mirrors the run dir, so every path the manifest names is valid in the repo too:

    README.md          the card: YAML front matter (configs, license, tags), then what the run is
    manifest.jsonl     header, one record per shard (rows, bytes, sha256), summary
    rejects.jsonl      one line per rejected row, with its reason
    shards/*.jsonl.gz  the committed shards, byte for byte (and shards/*.parquet when written)

Every shard the manifest records is uploaded, empty ones included (units whose rows were all
rejected): they load (zero rows), and then each shard record's `file`, `bytes` and `sha256` can be
checked against the repo. `shards/` on the Hub is made to hold exactly this run's shards: files
there from an earlier upload that this run does not have are deleted in the same commit, so the
card and the data never disagree. Re-running an interrupted publish resumes it (the Hub skips
files it already has). The token comes from the environment (HF_TOKEN or `hf auth login`), never
from the config or the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
from pathlib import Path

from huggingface_hub import HfApi

from snactok.config.checks import is_repo_id
from snactok.monitor.progress import format_hours
from snactok.output.rundir import (
    MANIFEST,
    REJECTS,
    SHARDS,
    Header,
    Run,
    RunDirError,
    Shard,
    Summary,
    read_run,
)
from snactok.tools.card import CARD, data_suffix, dataset_card
from snactok.tools.public import dataset_roots, public_record, public_records, public_rejects

log = logging.getLogger(__name__)


class PublishError(ValueError):
    """A run that cannot be published as it is; the message says why and what to do."""


def load_run(run_dir: Path) -> Run:
    """`read_run`, its refusal as a PublishError."""
    try:
        return read_run(Path(run_dir))
    except RunDirError as err:
        raise PublishError(str(err)) from None


def check_publishable(run: Run, allow_partial: bool = False) -> None:
    """Refuse a run that did not finish (unless `allow_partial`), wrote no rows, or whose shard
    files are missing or changed size since they were committed."""
    if run.header.dry_run:
        raise PublishError(
            f"{run.dir} is a dry run (runtime.dry_run=true): its tokens are a stand-in pattern, "
            "not the audio's. Encode it for real (without runtime.dry_run) to publish it"
        )
    if not run.finished and not allow_partial:
        raise PublishError(
            f"{run.dir} holds an unfinished run ({len(run.shards)} of {run.planned_units} units "
            f"committed, no summary in {MANIFEST}). Finish it first: run the same encode.py command "
            f"with runtime.resume={run.dir}; or publish what is there with --allow-partial "
            "(the card then says it is partial)"
        )
    if run.rows == 0:
        raise PublishError(
            f"{run.dir} has no rows to publish: {run.rejected} rejected of "
            f"{sum(r.rows_read for r in run.shards)} read (see {REJECTS})"
        )
    problems = []
    for record in run.shards:
        for entry in record.files:
            path = run.dir / entry.file
            if not path.is_file():
                problems.append(f"{entry.file} is missing")
            elif path.stat().st_size != entry.bytes:
                problems.append(
                    f"{entry.file} has {path.stat().st_size} bytes, the manifest {entry.bytes}"
                )
    if problems:
        raise PublishError(
            f"{run.dir}: shard files do not match {MANIFEST}: {'; '.join(problems[:5])}"
            f"{f' (+{len(problems) - 5} more)' if len(problems) > 5 else ''}. Shards are never "
            "rewritten after commit; restore them, or encode again into a new dir"
        )


def stage(
    run_dir: Path,
    dest: Path,
    repo_id: str,
    allow_partial: bool = False,
    license: str | None = None,
) -> list[str]:
    """Lay out in `dest` exactly what `publish` uploads; return its repo paths. Raises
    PublishError for a run that cannot be published."""
    check_repo_id(repo_id)
    run = load_run(run_dir)
    check_publishable(run, allow_partial)
    return _stage(run, dest, repo_id, license)


def _stage(run: Run, dest: Path, repo_id: str, license: str | None) -> list[str]:
    """Shards are symlinked, not copied; the manifest and rejects are written from what was read,
    so a partial run that is still writing cannot change them under the upload. They and the
    card carry only what `snactok.tools.public` allows: no host, pid, attempt dir or absolute path."""
    files = run.file_names()
    suffix = data_suffix(files)
    if suffix is None:
        raise PublishError(f"no shard in {files[:3]} has a shard suffix; {run.dir} is damaged")
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink((run.dir / rel).resolve(), dest / rel)
    public = public_view(run)
    (dest / MANIFEST).write_bytes(public.manifest)
    (dest / REJECTS).write_bytes(public.rejects)
    (dest / CARD).write_text(dataset_card(public, repo_id, files, suffix, license), encoding="utf-8")
    return sorted([CARD, MANIFEST, REJECTS, *files])


def public_view(run: Run) -> Run:
    """The run as it may be published (`snactok.tools.public`): the local run dir is not touched."""
    return dataclasses.replace(
        run,
        header=Header.from_record(public_record(run.header.record)),
        shards=tuple(Shard.from_record(public_record(r.record)) for r in run.shards),
        summary=Summary.from_record(public_record(run.summary.record)) if run.summary else None,
        manifest=public_records(run.manifest),
        rejects=public_rejects(run.rejects, dataset_roots(run.header.record)),
    )


def publish(
    run_dir: Path,
    repo_id: str,
    private: bool = True,
    api: HfApi | None = None,
    allow_partial: bool = False,
    license: str | None = None,
) -> str:
    """Upload the run in `run_dir` to the Hub dataset `repo_id` (created if needed); return its
    URL. Everything is checked locally before the Hub is asked anything. `license` overrides the
    sources' licences on the card."""
    check_repo_id(repo_id)
    run = load_run(run_dir)
    check_publishable(run, allow_partial)
    api = api or HfApi()  # the token: HF_TOKEN, else the `hf auth login` file
    with tempfile.TemporaryDirectory(prefix="snactok-publish-") as tmp:
        staged = Path(tmp)
        files = _stage(run, staged, repo_id, license)
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        _check_visibility(api, repo_id, private)
        size = sum((staged / f).stat().st_size for f in files)
        log.info("uploading %d files (%.1f MB) to %s", len(files), size / 1e6, url)
        commit = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=staged,
            allow_patterns=[CARD, MANIFEST, REJECTS, f"{SHARDS}/*"],
            delete_patterns=[f"{SHARDS}/*"],  # files being uploaded are kept, never deleted
            commit_message=(
                f"snactok: {run.header.dataset} as {run.header.codec} tokens, {run.rows} rows, "
                f"{format_hours(run.audio_seconds)} of audio{'' if run.finished else ' (PARTIAL run)'}"
            ),
        )
    log.info("published %s (%s)", url, getattr(commit, "commit_url", commit))
    return str(url)


def check_repo_id(repo_id: str) -> None:
    """A Hub dataset id names its namespace: upload_folder does not fill it in."""
    if not is_repo_id(repo_id):
        raise PublishError(f"repo id {repo_id!r} is not `namespace/name`, e.g. me/librispeech-snac")


def _check_visibility(api: HfApi, repo_id: str, private: bool) -> None:
    """`create_repo(exist_ok=True)` leaves an existing repo's visibility as it is: never upload
    a run meant to be private into a public repo."""
    info = api.repo_info(repo_id, repo_type="dataset")
    if private and not info.private:
        raise PublishError(
            f"the dataset repo {repo_id} already exists and is PUBLIC; publishing would make this "
            "run public. Pass --public (private=False) if that is meant, or make the repo private "
            "on the Hub first"
        )
    if not private and info.private:
        log.warning("the dataset repo %s already exists and is private; it stays private", repo_id)


def main(argv: list[str] | None = None) -> int:
    """`snactok-publish`: upload a finished run to the Hub as a dataset repo (private unless
    --public). An interrupted upload resumes when the same command runs again. The token comes
    from HF_TOKEN or `hf auth login`; there is no option for it."""
    parser = argparse.ArgumentParser(
        prog="snactok-publish", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("run_dir", type=Path, help="the dir encode.py wrote (manifest.jsonl, shards/)")
    parser.add_argument("--repo", required=True, help="the Hub dataset repo, namespace/name")
    parser.add_argument(
        "--public", action="store_true", help="make a new repo public (default: private)"
    )
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="publish a run that has not finished (no summary in its manifest); the card says so",
    )
    parser.add_argument(
        "--license",
        default=None,
        help="the licence id for the card (e.g. cc-by-4.0); default: the sources' own, else `other`",
    )
    parser.add_argument(
        "--stage-only",
        type=Path,
        default=None,
        metavar="DIR",
        help="write what would be uploaded into DIR (card, manifest, links to the shards); no upload",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.stage_only:
            print(_stage_only(args))
            return 0
        url = publish(
            args.run_dir,
            args.repo,
            private=not args.public,
            allow_partial=args.allow_partial,
            license=args.license,
        )
    except PublishError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(url)
    return 0


def _stage_only(args: argparse.Namespace) -> str:
    dest = args.stage_only
    if dest.exists() and any(dest.iterdir()):
        raise PublishError(f"--stage-only {dest} is not empty; give a new dir")
    dest.mkdir(parents=True, exist_ok=True)
    files = stage(args.run_dir, dest, args.repo, args.allow_partial, args.license)
    return f"staged {len(files)} files in {dest}; the card is {dest / CARD}"
