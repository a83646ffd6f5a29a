"""`dataset.mdc_id`: download a dataset from the Mozilla Data Collective (MDC) before a run.

Mozilla publishes Common Voice only through the MDC. `fetch` downloads and unpacks a release with
MDC's own SDK (`datacollective`) into `<runtime.cache_dir>/mdc/<id>/`, once for all the jobs of a
sweep or Slurm array, resuming an interrupted download, and points `dataset.path` at the language
dir inside. A finished download is used as it is, with no key and no network (compute nodes often
have neither), until its dir is deleted. The API key comes from MDC_API_KEY in the environment (or a `.env` file, which the SDK
reads), never from the config: Hydra saves the config with every run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import platform
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from snactok.errors import ConfigError, PipelineError

log = logging.getLogger(__name__)

KEY_ENV = "MDC_API_KEY"
SITE = "https://mozilladatacollective.com"
KEY_HOW = (
    f"create a key on {SITE}/api-reference (signed in), then `export {KEY_ENV}=...` or put "
    f"{KEY_ENV}=... in a .env file in the working dir; never in the config, which Hydra saves"
)
# Levels below the unpacked archive searched for language dirs; a release holds
# cv-corpus-<version>/<lang>/.
SEARCH_DEPTH = 3
FETCHED = "snactok-fetched.json"  # beside the archive, once it is downloaded and unpacked


def fetch(cfg: DictConfig) -> None:
    """With `dataset.mdc_id`, download and unpack the dataset (once, resumably) and set
    `dataset.path` to it, so the manifest records the path read; without, do nothing."""
    mdc_id = cfg.dataset.mdc_id
    if not mdc_id:
        return
    cache = Path(cfg.runtime.cache_dir).expanduser() / "mdc"
    name = re.sub(r"[^A-Za-z0-9_-]", "_", mdc_id)
    root = _fetched(cache / name)
    if root is None:
        sdk = _import_sdk()
        if not os.environ.get(KEY_ENV):  # checked after the import, which loads a .env file
            raise ConfigError(
                f"dataset.mdc_id={mdc_id!r} needs a Mozilla Data Collective API key: {KEY_HOW}"
            )
        with _exclusive(cache / f"{name}.lock", mdc_id):
            root = _fetched(cache / name) or _download(sdk, mdc_id, cache / name)
    path = dataset_path(root, list(cfg.dataset.languages))
    log.info("dataset.path=%s (dataset.mdc_id=%s)", path, mdc_id)
    cfg.dataset.path = str(path)


def _import_sdk() -> Any:
    try:
        import datacollective
        import datacollective.errors
    except ImportError as err:
        raise ConfigError(
            f"dataset.mdc_id needs the Mozilla Data Collective SDK ({err}): pip install "
            f"'datacollective==0.7.0' (it needs Python >= 3.11.4; this is {platform.python_version()})"
        ) from err
    return datacollective


@contextlib.contextmanager
def _exclusive(lock: Path, mdc_id: str) -> Iterator[None]:
    """Hold an exclusive lock, so concurrent jobs download once and the others reuse it.

    No timeout: a download may take hours, and the kernel drops the lock when its holder dies.
    """
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process's download of dataset.mdc_id=%s (%s)", mdc_id, lock)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _download(sdk: Any, mdc_id: str, directory: Path) -> Path:
    """The unpacked archive's dir; an SDK error becomes a one-line ConfigError or PipelineError."""
    details = None
    try:
        details = sdk.get_dataset_details(mdc_id)
        licence = details.licenseAbbreviation or details.license or "(no licence given)"
        log.info(
            "dataset %r (MDC id %s) is licensed %s; using it means accepting its terms: %s",
            details.name,
            details.id,
            licence,
            details.datasetUrl or SITE,
        )
        root = sdk.download_dataset(
            mdc_id, download_directory=str(directory), show_progress=sys.stdout.isatty(), extract=True
        )
    except Exception as err:
        failure = _failure(err, sdk, mdc_id, details, directory)
        if failure is None:
            raise
        if isinstance(failure, PipelineError):  # encode.py expects run() to have logged it
            log.error("%s", failure)
        raise failure from err
    record = {"mdc_id": mdc_id, "id": details.id, "name": details.name, "root": str(root)}
    record |= {"licence": licence, "terms": details.datasetUrl or SITE, "fetched": time.time()}
    (directory / FETCHED).write_text(json.dumps(record, indent=2) + "\n")
    return Path(root)


def _fetched(directory: Path) -> Path | None:
    """The unpacked archive of an earlier fetch, used as it is: no key, no network (compute nodes
    often have none), and every run reads the same release. None if there is none."""
    try:
        record = json.loads((directory / FETCHED).read_text())
    except (OSError, ValueError):
        return None
    if not Path(record["root"]).is_dir():
        return None
    log.info(
        "dataset %r (MDC id %s, licensed %s; its terms: %s) was downloaded on %s into %s; "
        "delete %s to fetch it again",
        record["name"],
        record["id"],
        record["licence"],
        record["terms"],
        time.strftime("%Y-%m-%d", time.localtime(record["fetched"])),
        record["root"],
        directory,
    )
    return Path(record["root"])


def _failure(
    err: Exception, sdk: Any, mdc_id: str, details: Any, directory: Path
) -> BaseException | None:
    """The error to show for an SDK failure: ConfigError (exit 2) for what the command or the
    account must change, PipelineError (exit 1) for what running again fixes; None if unknown."""
    import tarfile

    import requests

    what = f"dataset.mdc_id={mdc_id!r}"
    page = getattr(details, "datasetUrl", None) or SITE
    match err:
        case sdk.errors.DownloadError() if isinstance(err.__cause__, KeyboardInterrupt):
            return KeyboardInterrupt()  # the SDK wraps Ctrl-C too; encode.py exits 130 on it
        case sdk.errors.ResourceRemovedError():
            return ConfigError(f"{what}: the Mozilla Data Collective has removed it ({err}); see {SITE}")
        case FileNotFoundError():
            return ConfigError(
                f"{what} is not on the Mozilla Data Collective ({err}); copy the id from {SITE}"
            )
        case sdk.errors.AuthenticationError():
            return ConfigError(f"the Mozilla Data Collective rejected the key in {KEY_ENV}: {KEY_HOW}")
        case PermissionError():
            return ConfigError(
                f"{what}: access denied ({err}); accept the dataset's terms on {page}, signed in "
                f"with the account the key in {KEY_ENV} belongs to, and run again"
            )
        case sdk.errors.RateLimitError():
            return PipelineError(
                f"{what}: {err} Run the same command again later {_kept(details, directory)}"
            )
        case sdk.errors.DownloadError() | requests.RequestException():
            cause = err.__cause__ or err
            return PipelineError(
                f"{what}: the download failed ({type(cause).__name__}: {cause}); run the same command "
                f"again to resume the download {_kept(details, directory)}"
            )
        case tarfile.TarError() | EOFError():
            return PipelineError(
                f"{what}: unpacking {directory / details.filename} failed ({err}); delete it and "
                f"run the same command again to download it afresh"
            )
        case ValueError():  # not a .tar.gz: not a Common Voice release
            return ConfigError(f"{what}: {err}")
    return None


def _kept(details: Any, directory: Path) -> str:
    """How much of the archive a rerun resumes from, e.g. `(N of M bytes kept in <path>.part)`."""
    filename = getattr(details, "filename", None)
    part = directory / f"{filename}.part"
    if not filename or not part.is_file():
        return "(nothing downloaded yet)"
    if not details.checksum:
        return f"(the dataset has no checksum, so it starts over; {part} is discarded)"
    return f"({part.stat().st_size} of {int(details.sizeBytes or 0)} bytes kept in {part})"


def language_dirs(root: Path, depth: int = SEARCH_DEPTH) -> list[Path]:
    """Dirs holding `clips/` and a `*.tsv` (Common Voice language dirs), at most `depth` levels
    below `root`. A `clips/` dir (up to millions of files) is never listed."""
    if (root / "clips").is_dir() and any(root.glob("*.tsv")):
        return [root]
    if depth == 0:
        return []
    return [
        d
        for sub in sorted(p for p in root.iterdir() if p.is_dir())
        for d in language_dirs(sub, depth - 1)
    ]


def dataset_path(root: Path, languages: list[str]) -> Path:
    """`dataset.path` for the unpacked archive at `root`: its one language dir, or with
    `dataset.languages` the dir holding them (sources.per_language appends /<lang>)."""
    found = language_dirs(root)
    held = [str(p.relative_to(root)) for p in found]
    if not found:
        raise ConfigError(
            f"the download {root} holds no Common Voice language dir (clips/ and *.tsv) within "
            f"{SEARCH_DEPTH} levels: dataset.mdc_id must name a Common Voice release"
        )
    names = sorted({p.name for p in found})
    if not languages:
        if len(found) > 1:
            raise ConfigError(
                f"the download {root} holds several languages {held}; pick them with "
                f"dataset.languages=[{','.join(names)}]"
            )
        return found[0]
    missing = [lang for lang in languages if lang not in names]
    parents = {p.parent for p in found if p.name in languages}
    if missing or len(parents) > 1:
        raise ConfigError(
            f"dataset.languages={languages} must be language dirs side by side in the download "
            f"{root}; it holds {held}" + (f", no {missing}" if missing else "")
        )
    return parents.pop()
