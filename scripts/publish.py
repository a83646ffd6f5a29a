"""Publish a finished encode.py run to the HF Hub as a dataset repo (private unless --public).

    python scripts/publish.py outputs/2026-11-24/02-01-44 --repo me/demo-snac
    python scripts/publish.py <run dir> --repo me/librispeech-snac --public --license cc-by-4.0
    python scripts/publish.py <run dir> --repo me/x --stage-only /tmp/look   # write it, upload nothing

Uploads the shards as they are, manifest.jsonl, rejects.jsonl and a generated README.md whose
`configs:` make `load_dataset("me/demo-snac")` work (see `snactok.tools.publish`). An interrupted
upload resumes when the same command runs again. The token comes from HF_TOKEN or
`hf auth login`; there is no option for it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from snactok.tools.publish import PublishError, publish, stage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
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
            if args.stage_only.exists() and any(args.stage_only.iterdir()):
                raise PublishError(f"--stage-only {args.stage_only} is not empty; give a new dir")
            args.stage_only.mkdir(parents=True, exist_ok=True)
            files = stage(args.run_dir, args.stage_only, args.repo, args.allow_partial, args.license)
            print(
                f"staged {len(files)} files in {args.stage_only}; the card is {args.stage_only / 'README.md'}"
            )
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


if __name__ == "__main__":
    sys.exit(main())
