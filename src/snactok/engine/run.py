"""`run(cfg, run_dir)`: check everything, start readers and device workers, commit shards.

Everything that can be checked is checked here, in the main process, before any child starts: the
config, the devices, the weights (Hub or cache) and the dataset's columns. The main process then
collects tokens and rejects, and commits each unit's shard once all its rows are accounted for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any

import torch.multiprocessing as tmp
from omegaconf import DictConfig

from snactok.codec.encoder import CPU_THREADS
from snactok.codec.weights import Weights
from snactok.config.checks import check_config
from snactok.config.schema import Config, RuntimeConfig, typed
from snactok.engine.child import POLL_SECONDS
from snactok.engine.collector import Collector
from snactok.engine.devices import default_readers, resolve_devices, usable_cores
from snactok.engine.estimate import make_plan, remember_rate
from snactok.engine.inprocess import LocalDevice, check_inprocess, reader_threads
from snactok.engine.launch import Shared, device_plans, reader_plans, spawn
from snactok.engine.messages import (
    Batch,
    Failed,
    Message,
    Note,
    PeakRss,
    Reject,
    UnitRead,
    Warn,
    WorkerDone,
    WorkerReady,
)
from snactok.engine.model import weights_and_chunking
from snactok.engine.processes import Supervisor
from snactok.engine.reader import read_blocks
from snactok.engine.signals import MALLOC_TUNABLES, Interrupted, child_env, stop_on_signals, usr2_blocked
from snactok.errors import ConfigError, PipelineError
from snactok.inputs import mdc
from snactok.inputs.sources import Source, open_sources
from snactok.inputs.text import TextIds, open_template
from snactok.inputs.units import Unit, job_units, plan_units
from snactok.monitor.progress import Progress
from snactok.monitor.tracking import Tracker
from snactok.output.formats import save_local
from snactok.output.provenance import header, host
from snactok.output.resume import open_run_dir, resume_target
from snactok.output.rundir import TOKENIZER_DIR

log = logging.getLogger(__name__)
__all__ = ["run"]


def run(cfg: DictConfig, run_dir: Path, group: str | None = None) -> dict[str, Any]:
    """Encode the configured dataset into `run_dir/shards` (or continue the run that
    `runtime.resume` names); return the run summary. `group` names the sweep, for W&B."""
    t0 = time.monotonic()
    check_config(cfg)
    mdc.fetch(cfg)  # dataset.mdc_id: download first; it sets dataset.path
    conf = typed(cfg)
    _check_hub_token(conf.save.hub_repo)
    rt = conf.runtime
    devices = resolve_devices(rt.devices)
    if rt.inprocess:
        check_inprocess(devices)
    sources = open_sources(conf.dataset, rt.max_rows)
    text_ids = open_template(conf.template, sources)
    units = plan_units(sources, conf.output.lines_per_file)
    mine = job_units(units, rt.num_jobs, rt.job_index)
    if rt.plan:
        return make_plan(conf, sources, units, mine, devices, run_dir)
    weights, chunking = weights_and_chunking(conf)
    first = header(conf, weights, sources, devices, chunking, units, text_ids)
    target = resume_target(rt.resume, run_dir)
    if target != run_dir:
        log.info("continuing the run in %s (this command's own dir keeps only its log)", target)
    target.mkdir(parents=True, exist_ok=True)
    prior = open_run_dir(target, rt.resume, first["fingerprint"], units)
    _log_start(rt, devices, weights, sources, units, mine, prior, target)
    if text_ids is not None:
        text_ids.save(target / TOKENIZER_DIR, conf.template.pad)
    collector = Collector(units, mine, sources, conf, target, weights, t0, prior)
    tracker = Tracker(conf, target, group, rt.progress_interval)
    summary = None
    try:
        collector.manifest.append(
            {"type": "resume", "attempt_dir": str(run_dir)} | host() if prior.resumed else first
        )
        if not collector.complete:
            _execute(conf, devices, weights, sources, units, collector, chunking, tracker, text_ids)
        summary = collector.summary()
        remember_rate(conf, devices, summary)
        if conf.report:
            _report(target, tracker)
    except (PipelineError, Interrupted, KeyboardInterrupt, SystemExit) as err:
        _log_resumable(err, collector, target, rt.resume)
        raise
    finally:
        collector.close()
        tracker.finish(summary, collector.committed)
    _save(conf, collector, target)
    return summary


def _log_start(
    rt: RuntimeConfig,
    devices: list[str],
    weights: Weights,
    sources: list[Source],
    units: list[Unit],
    mine: list[Unit],
    prior: Any,
    target: Path,
) -> None:
    rows = [s.num_rows for s in sources]
    log.info(
        "devices %s | weights %s | %d source(s), %s rows, %d unit(s)%s%s -> %s",
        devices,
        weights.name,
        len(sources),
        "?" if None in rows else sum(rows),
        len(units),
        f"; job {rt.job_index} of {rt.num_jobs} takes {len(mine)}" if rt.num_jobs > 1 else "",
        f", {len(prior.committed)} already committed" if prior.resumed else "",
        target,
    )


def _save(conf: Config, collector: Collector, target: Path) -> None:
    """save.local and save.hub_repo, for a run that holds the whole dataset."""
    rt, save = conf.runtime, conf.save
    if rt.num_jobs > 1:  # a job holds part of the data: the merge saves the whole
        if save.local or save.hub_repo:
            log.info(
                "save.local/save.hub_repo wait for all %d jobs: snactok-merge %s",
                rt.num_jobs,
                target.parent,
            )
        return
    if save.local:
        save_local(collector.shard_paths(non_empty=True), Path(save.local))
    if save.hub_repo:
        _publish(target, save.hub_repo, save.private)


def _check_hub_token(repo: str | None) -> None:
    """Publishing needs a token: find out now, not after hours of encoding."""
    if repo is None:
        return
    from huggingface_hub import get_token

    if get_token() is None:
        raise ConfigError(
            f"save.hub_repo={repo!r} needs a Hub token: set HF_TOKEN or run `hf auth login`"
        )


def _report(run_dir: Path, tracker: Tracker) -> None:
    """report=true: plots and decoded audio in run_dir/report (and W&B); a failure is logged only."""
    from snactok.tools.report import write_report

    try:
        files = write_report(run_dir, wandb_run=tracker.wandb)
        log.info("report: %d files in %s", len(files), run_dir / "report")
    except Exception as err:  # the shards are done; a plot must not fail the run
        log.warning("report failed (%s: %s); run snactok-inspect %s", type(err).__name__, err, run_dir)


def _publish(run_dir: Path, repo: str, private: bool) -> None:
    from snactok.tools.publish import publish

    try:
        url = publish(run_dir, repo, private=private)
    except Exception as err:
        raise PipelineError(
            f"publishing to {repo} failed ({type(err).__name__}: {err}). The run in {run_dir} is "
            f"complete; retry with snactok-publish {run_dir} --repo {repo}"
            + ("" if private else " --public")
        ) from err
    log.info("published %s to %s", run_dir, url)


def _log_resumable(err: BaseException, collector: Collector, target: Path, resume: str | None) -> None:
    how = "runtime.resume=auto" if resume == "auto" else f"runtime.resume={target}"
    what = "interrupted by Ctrl-C" if isinstance(err, KeyboardInterrupt) else str(err)
    if isinstance(err, SystemExit):  # submitit's pre-emption handler: it has requeued the job
        what = f"stopped by the launcher (exit {err.code}); a requeued job resumes by itself"
    log.error(
        "%s\n%d of %d units are committed in %s and stay as they are; nothing half-done was "
        "committed. Continue with the same command plus %s",
        what,
        len(collector.committed),
        collector.planned,
        target / "shards",
        how,
    )


def _warn_cpu_threads(cpu_threads: int | None) -> None:
    if cpu_threads is not None and cpu_threads != CPU_THREADS:
        log.warning(
            "runtime.cpu_threads=%s does not change encoding: CPU tokens are computed with %d "
            "torch threads per process, whatever the setting, so that they never depend on it "
            "(docs/reliability.md). For more cores, add CPU workers: runtime.devices=[cpu,cpu,...]",
            cpu_threads,
            CPU_THREADS,
        )


def _execute(
    conf: Config,
    devices: list[str],
    weights: Weights,
    sources: list[Source],
    units: list[Unit],
    collector: Collector,
    chunking: dict[str, Any],
    tracker: Tracker,
    text_ids: TextIds | None,
) -> None:
    """Start the children, collect until every row is written or rejected, and stop them."""
    rt = conf.runtime
    num_readers = rt.num_readers or default_readers(devices, usable_cores())
    collector.readers = num_readers
    log.info("%d reader(s) -> %d device worker(s)", num_readers, len(devices))
    ctx = tmp.get_context("spawn")
    if not rt.inprocess:
        with usr2_blocked():
            resource_tracker.ensure_running()
    shared = Shared.create(ctx, rt.queue_samples, num_readers, len(devices))
    todo = [u for u in units if u.index in collector.state]
    blocks = read_blocks(todo, rt.read_block_rows)
    _warn_cpu_threads(rt.cpu_threads)
    workers = device_plans(conf, devices, weights, chunking)
    readers = reader_plans(conf, sources, blocks, num_readers, len(devices), text_ids)
    if rt.inprocess:
        log.info("runtime.inprocess=true: readers in threads, the device loop in this process")
        children = reader_threads(shared, readers)
    else:
        children = spawn(ctx, shared, workers, readers)
    rows = [u.rows for u in todo]
    names = [u.name for u in units]
    total = None if None in rows else sum(rows)
    progress = Progress(total, num_readers, devices, rt.progress_interval, names)
    supervisor = Supervisor(children, shared.board, shared.inbox, names, rt.stall_seconds)
    clean = False
    try:
        with stop_on_signals():
            with child_env({"GLIBC_TUNABLES": MALLOC_TUNABLES}), usr2_blocked():
                supervisor.start()
            step = LocalDevice(workers[0], shared).step if rt.inprocess else None
            _collect(supervisor, shared, collector, progress, tracker, step)
            clean = True
    finally:
        shared.flag.stop()
        progress.close()
        supervisor.shutdown(clean)
        shared.work.close()


def _collect(
    supervisor: Supervisor,
    shared: Shared,
    collector: Collector,
    progress: Progress,
    tracker: Tracker,
    step: Callable[[], bool] | None = None,
) -> None:
    """Handle children's messages until every row is written or rejected and every device worker
    has reported back. `step` is the in-process device loop's (runtime.inprocess): it runs
    between polls and waits for clips itself while it works.

    The end is decided by counting rows, not by readers finishing: a reader's last clip can reach
    the workers after its last message reaches us. Children are checked every half second, busy or
    not, so one that dies, or a run that stalls, stops at once.
    """
    reader_stats, device_stats, budget = shared.reader_stats, shared.device_stats, shared.budget
    num_devices = len(device_stats)
    finished: set[int] = set()
    collector.load.start()
    while True:
        if collector.complete:
            shared.flag.finish()
        working = step is not None and step()
        for sender, msg in supervisor.inbox.poll(0 if working else POLL_SECONDS):
            _handle(sender, msg, collector, supervisor, finished)
        collector.drain_writes()
        supervisor.check()
        supervisor.watch_progress(len(collector.committed))
        done = len(finished) == num_devices
        progress.update(
            reader_stats,
            device_stats,
            collector.rows_done,
            collector.reasons,
            done,
            starting=None if collector.rows_done else supervisor.starting(),
        )
        collector.load.watch(reader_stats.total_items(), reader_stats.total_seconds())
        fill = budget.held / budget.capacity
        tracker.tick(collector, reader_stats, device_stats, fill, progress.total, force=done)
        if done:
            return


def _handle(
    sender: str, msg: Message, collector: Collector, supervisor: Supervisor, finished: set[int]
) -> None:
    """Apply one child message."""
    match msg:
        case Batch():
            collector.add_batch(msg)
        case Reject():
            collector.add_reject(msg)
        case UnitRead(unit=unit, rows=rows):
            collector.unit_read(unit, rows)
        case WorkerReady(rank=rank, seconds=seconds, path=path, check=check):
            collector.timing.setdefault("first_worker_ready", collector.elapsed())
            collector.workers[str(rank)] = {"path": path, "startup_check": check}
            _log_ready(rank, seconds, path, check)
        case PeakRss(process=process, mb=mb):
            collector.peak_rss[process] = mb
        case Warn(text=text):
            log.warning("%s", text)
        case Note(text=text):  # what a starting worker is doing, e.g. compiling: for the progress line
            log.info("%s: %s", sender, text)
            supervisor.notes[sender] = text
        case Failed(traceback=trace):
            supervisor.check(exclude=sender)  # another's death can be the cause (a reader's tensors)
            raise PipelineError(f"{sender} failed:\n{trace}")
        case WorkerDone(rank=rank, verify_seconds=seconds):
            collector.workers.setdefault(str(rank), {})["verify_seconds"] = seconds
            finished.add(rank)


def _log_ready(rank: int, seconds: float, path: str, check: dict[str, Any]) -> None:
    if check["passed"] is None:
        log.info("device worker %d ready in %.1f s (%s; %s)", rank, seconds, path, check["why"])
    elif check["passed"] and not check["failed"]:
        log.info(
            "device worker %d ready in %.1f s (%s; start-up check: its encoder frames and tokens "
            "equal single-clip SNAC.encode on the probe clips)",
            rank,
            seconds,
            path,
        )
    else:
        log.warning(
            "device worker %d ready in %.1f s, encoding with the %s path: the faster path gave "
            "other bits than single-clip SNAC.encode on the probe clips (%s)",
            rank,
            seconds,
            path,
            "; ".join(check["failed"]),
        )
