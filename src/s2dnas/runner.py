"""The whole S2DNAS pipeline of ``s2dnas run``: base -> search -> final training -> calibration ->
test evaluation -> export -> report. Each step writes its result into the run directory and is
skipped on ``--resume`` when its result is already there; the search and the final training
resume inside themselves (journal, checkpoints).

Run directory::

    config.yaml        resolved configuration
    base.json          base model: val/test accuracy, MACs
    supernet/          the super-network trained by the run (strategy oneshot or final_init supernet,
                       unless search.supernet names a trained one): supernet_checkpoint.safetensors,
                       supernet.safetensors + supernet.json
    search/            journal.jsonl, controller.pt, result.json
    final/             checkpoint.pt of the final training, metrics.json
    model/             the dynamic model (s2dnas.load)
    export/            ONNX + TorchScript stages and manifest
    results.json       every number of the report
    report.md, *.png   the report

Under torchrun (``torchrun --nproc_per_node=N -m s2dnas run``; see :mod:`s2dnas.distributed`)
every rank runs :func:`run_pipeline` with the same arguments. Design choice: the two long steps
use every rank -- the search scores N candidates at a time
(:class:`~s2dnas.search.strategy.SearchStrategy`: controller and journal on rank 0) and
the final training is data-parallel (DDP) -- while the other steps (base metrics, the
super-network, calibration, test, export, report) run on rank 0 and the others wait for their
result (the super-network's weights are then broadcast from rank 0) (:func:`~s2dnas.distributed.run_on_main`, which also sends rank
0's errors to every rank). Only rank 0 reads and writes the run directory, except that every rank
reads ``final/checkpoint.pt`` when the final training resumes (as ``s2dnas train`` does).

Resume never mixes configurations: ``--resume`` compares the new config with the run's
``config.yaml`` and refuses any difference outside :data:`s2dnas.config.RESUME_MAY_DIFFER`
(one line, nothing written), finished run or not; the journal, the super-network and the final
checkpoint also carry the config hash (:func:`s2dnas.config.provenance`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from s2dnas import distributed as dist
from s2dnas._device import machine_info, resolve_device
from s2dnas._io import atomic_write_json
from s2dnas.config import (SHIPPED_SUPERNET, CalibrationConfig, CalibrationTarget, RunConfig, config_differences,
                           config_to_dict, dump_config, load_config, provenance, reference_target, resolve_config,
                           resolve_target)
from s2dnas.cost import StageCost, macs_stage_cost
from s2dnas.cost.latency import LatencyStageCost, expected_latency
from s2dnas.data import DataSplits, make_loader
from s2dnas.dynamic import DynamicNet
from s2dnas.dynamic.calibrate import collect_logits
from s2dnas.dynamic.evaluate import evaluate_policy
from s2dnas.dynamic.files import build_model_spec
from s2dnas.errors import CheckpointError, RunDirError, S2DNASError
from s2dnas.search.evaluator import SupernetEvaluator, TrainedEvaluator
from s2dnas.search.journal import Journal
from s2dnas.search.random import RandomController
from s2dnas.search.rl import RLController
from s2dnas.search.score import calibrate_at
from s2dnas.search.strategy import SearchStrategy
from s2dnas.space import Architecture, MultiStageNet, Space
from s2dnas.space.factory import build_space
from s2dnas.train.base import warn_if_chance
from s2dnas.train.loops import evaluate, read_back_seconds, reestimate_batch_norm_seeded
from s2dnas.train.multistage import MultiStageMetrics, train_multistage
from s2dnas.train.sandwich import most_expensive
from s2dnas.train.supernet import SuperNet
from s2dnas.train.supernet_training import CHECKPOINT_NAME as SUPERNET_CHECKPOINT
from s2dnas.train.supernet_training import load_supernet, train_supernet
from s2dnas.train.teacher import CachedTeacher, LogitStore
from s2dnas.zoo.weights import shipped_supernet_dir

__all__ = ["run_pipeline", "train_supernet_step", "load_run_base", "RunBase", "check_resume_config", "stage_cost_hook",
           "FINAL_BN_BATCHES"]

#: Training batches the final network's batch-norm statistics are re-estimated on.
FINAL_BN_BATCHES = 50

_logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class _Run:
    """What every step of one pipeline run needs, made once by :func:`run_pipeline`."""

    cfg: RunConfig
    out: Path
    splits: DataSplits
    base: torch.nn.Module
    model_name: str
    #: where the base's weights came from: a file, or the shipped pretrained entry's name
    base_source: str
    space: Space
    device: torch.device
    resume: bool
    #: the base as the distillation teacher of every training of the run, its logits cached
    #: (:class:`~s2dnas.train.teacher.CachedTeacher`: the candidates all see the same batches)
    teacher: torch.nn.Module
    progress: bool
    #: the per-stage cost hook of the search's scores and the final calibration (contract D)
    stage_cost: StageCost = macs_stage_cost

    @property
    def provenance(self) -> dict[str, str]:
        """The config hash and s2dnas version every file of the run records."""
        return provenance(self.cfg)


@dataclasses.dataclass(frozen=True)
class _SearchOutcome:
    """The search's result."""

    architecture: Architecture
    reward: float
    exhausted: bool
    target: CalibrationTarget  # what the candidates were scored at (the run's, or moved: target_from)
    reference: dict[str, Any] | None = None  # the reference of search.target_from=reference
    candidate_seconds: float | None = None  # the journalled candidates' scoring time per rank, every process's


@dataclasses.dataclass(frozen=True)
class RunBase:
    """The data, the trained base model (frozen, the teacher) and the space over it."""

    splits: DataSplits
    model: torch.nn.Module
    model_name: str
    source: str
    space: Space


def load_run_base(cfg: RunConfig, device: torch.device) -> RunBase:
    """What every step of a run of ``cfg`` starts from: its data, its frozen base model, the space."""
    from s2dnas.train.evaluate import base_splits, load_base_model

    splits = base_splits(dataset=cfg.data.dataset, data_dir=cfg.data.data_dir, val_size=cfg.data.val_size,
                         seed=cfg.data.seed, weights=cfg.model.weights, input_shape=cfg.model.input_shape)
    base, model_name, source = load_base_model(splits=splits, model_name=cfg.model.name, weights=cfg.model.weights)
    base = base.to(device).eval()
    for p in base.parameters():
        p.requires_grad_(False)
    space = build_space(base, config=cfg.space, input_shape=splits.input_shape, model_name=model_name)
    return RunBase(splits=splits, model=base, model_name=model_name, source=source, space=space)


def _supernet_context(cfg: RunConfig, splits: DataSplits, model_name: str) -> dict[str, Any]:
    """What besides its recipe produced a super-network: the train/val split and the base model."""
    return {"data": splits.data_spec(), "model": {"name": model_name, "weights": cfg.model.weights}}


def train_supernet_step(cfg: RunConfig, *, out: Path, resume: bool, overwrite: bool, progress: bool,
                        log_epochs: bool = False) -> dict[str, Any]:
    """``s2dnas supernet``: train the super-network of ``cfg`` (its ``supernet`` section) into ``out``.

    Writes ``out/supernet_checkpoint.safetensors`` after every epoch and ``out/supernet.safetensors``
    + ``supernet.json`` (config, config hash, training time, machine), atomically.

    Raises:
        RunDirError: ``out`` holds a checkpoint and neither ``resume`` nor ``overwrite``.
        CheckpointError: the checkpoint was made under another configuration (one line; nothing
            overwritten), or is corrupt.
    """
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    base = load_run_base(cfg, device)
    supernet = SuperNet(base.space)
    _say(progress or log_epochs, f"training the super-network of {base.model_name} ({cfg.supernet.epochs} epochs, "
                                 f"{cfg.supernet.num_sampled} sampled + 2 extreme architectures per step)")
    return train_supernet(supernet, base.splits.train, config=cfg.supernet, out_dir=out, resume=resume,
                          overwrite=overwrite, progress=progress, device=device, log_epochs=log_epochs,
                          context=_supernet_context(cfg, base.splits, base.model_name))


def _supernet(run: _Run) -> tuple[SuperNet, dict[str, Any]]:
    """The run's super-network on every rank: loaded from ``search.supernet`` or trained (resumably) in
    ``out/supernet`` by rank 0, then broadcast; and what results.json records about it."""
    cfg = run.cfg
    supernet = SuperNet(run.space)

    def obtain() -> dict[str, Any]:
        if cfg.search.supernet is not None:
            directory = _supernet_dir(run)
            meta = load_supernet(supernet, directory, data=run.splits.data_spec())
            _say(run.progress, f"super-network loaded from {directory} (trained {meta.get('epoch')} epochs "
                               f"in {meta.get('train_seconds') or 0:.0f} s)")
            source = str(cfg.search.supernet)
        else:
            sdir = run.out / "supernet"
            resume = run.resume and (sdir / SUPERNET_CHECKPOINT).exists()
            _say(run.progress, f"training the super-network ({cfg.supernet.epochs} epochs)")
            meta = train_supernet(supernet, run.splits.train, config=cfg.supernet, out_dir=sdir, resume=resume,
                                  overwrite=not run.resume, progress=run.progress, device=run.device,
                                  context=_supernet_context(cfg, run.splits, run.model_name))
            meta = {**meta, "epoch": meta["epochs"], "config": config_to_dict(cfg.supernet)}
            source = "trained by this run"
        return {"source": source, "config_hash": meta.get("config_hash"), "epochs": meta.get("epoch"),
                "train_seconds": meta.get("train_seconds"), "config": meta.get("config")}

    info = dist.run_on_main(obtain)
    dist.broadcast_module(supernet)  # every rank scores and fine-tunes with rank 0's weights
    return supernet.eval(), info


def _supernet_dir(run: _Run) -> str:
    """The directory ``search.supernet`` names; ``shipped``: the one shipped for the shipped base weights."""
    value = run.cfg.search.supernet
    assert value is not None
    if value != SHIPPED_SUPERNET:
        return value
    if run.cfg.model.weights is not None:
        raise CheckpointError(f"search.supernet: shipped was trained over a shipped base model, but this run's base "
                              f"is {run.cfg.model.weights}; train a super-network for it with s2dnas supernet --out DIR "
                              "and set search.supernet to DIR")
    return str(shipped_supernet_dir(run.base_source))


def check_resume_config(out: Path, cfg: RunConfig) -> None:
    """Refuse to resume the run in ``out`` with a config other than the one that started it.

    Fields in :data:`s2dnas.config.RESUME_MAY_DIFFER` (where it runs, where files are) may change.

    Raises:
        RunDirError: the saved ``config.yaml`` differs (the message names every changed field) or
            cannot be read.
    """
    path = out / "config.yaml"
    try:
        saved = load_config(path)
    except S2DNASError as err:
        raise RunDirError(f"Cannot resume {out}: its {path.name} is unreadable ({err}); start over with --force "
                          "or another --out") from None
    changed = config_differences(saved, resolve_config(cfg))
    if changed:
        raise RunDirError(f"Cannot resume {out} with another config ({'; '.join(changed)}); resume with the config "
                          f"saved in {path}, or start a new run with --force or another --out")


def _say(progress: bool, text: str) -> None:
    _logger.info(text)
    if progress:
        from tqdm.auto import tqdm

        tqdm.write(text)


def stage_cost_hook(calibration: CalibrationConfig, device: torch.device) -> StageCost:
    """The per-stage cost hook ``calibration.cost`` selects (contract D): MACs, or milliseconds per
    input measured on ``device`` at ``calibration.latency_batch`` (cached per machine)."""
    if calibration.cost == "latency":
        return LatencyStageCost(device=device, batch_size=calibration.latency_batch)
    return macs_stage_cost


def _base_metrics(run: _Run) -> dict[str, Any]:
    path = run.out / "base.json"
    if run.resume and path.exists():
        return json.loads(path.read_text())
    loader_kw = {"batch_size": run.cfg.data.eval_batch_size}
    val = evaluate(run.base, make_loader(run.splits.val, **loader_kw), device=run.device)
    test = evaluate(run.base, make_loader(run.splits.test, **loader_kw), device=run.device)
    metrics = {"model": run.cfg.model.name, "val_accuracy": val.accuracy, "test_accuracy": test.accuracy,
               "macs": run.space.base_macs()}
    atomic_write_json(path, metrics)
    return metrics


def _search(run: _Run, target: CalibrationTarget, supernet: SuperNet | None, *, base_val_accuracy: float,
            base_latency_ms: float | None = None) -> _SearchOutcome:
    """Run (or resume) the search; the best architecture and its reward. Strategy ``oneshot`` scores
    candidates from ``supernet``; ``rl``/``random`` train each one briefly. ``base_latency_ms`` is the
    base's measured latency, the rewards' reference when ``calibration.cost`` is latency;
    ``base_val_accuracy`` the base's val accuracy, which ``search.target_from: reference`` moves
    the target by (:func:`~s2dnas.config.reference_target`)."""
    cfg, space, resume, progress = run.cfg, run.space, run.resume, run.progress
    sdir = run.out / "search"
    result_path = sdir / "result.json"
    sc = cfg.search
    assert sc.budget is not None, "resolved by the config loader"
    data = dist.run_on_main(lambda: json.loads(result_path.read_text()) if resume and result_path.exists() else None)
    if data is not None:
        aim = CalibrationTarget.from_dict(data["search_target"]) if "search_target" in data else target
        return _SearchOutcome(Architecture.from_dict(data["architecture"]), float(data["reward"]),
                              bool(data.get("space_exhausted", False)), aim, data.get("reference"),
                              dist.run_on_main(lambda: _journalled_seconds(sdir)))
    seed = cfg.seed if sc.seed is None else sc.seed

    def evaluator_at(aim: CalibrationTarget) -> Any:
        # one cost for the search's rewards and the final calibration (contract D); the target
        # too, unless search.target_from moves it
        common = dict(target=aim, confidence=cfg.calibration.confidence, reward=sc.reward, device=run.device,
                      eval_batch_size=cfg.data.eval_batch_size, tradeoff_weight=sc.tradeoff_weight,
                      stage_cost=run.stage_cost, base_cost=base_latency_ms)
        if sc.strategy == "oneshot":
            assert supernet is not None, "the oneshot strategy needs the super-network"
            return SupernetEvaluator(supernet, run.splits, bn_batches=sc.bn_batches, batch_size=cfg.data.batch_size,
                                     **common)
        candidate_train = dataclasses.replace(cfg.train, epochs=sc.candidate_epochs,
                                              limit_train=sc.candidate_limit_train, seed=seed)
        return TrainedEvaluator(space, run.splits, teacher=run.teacher, train=candidate_train,
                                bn_batches=sc.bn_batches, **common)

    aim, reference = target, None
    if sc.target_from == "reference":
        reference = dist.run_on_main(lambda: _reference(lambda: evaluator_at(target), sdir, run=run, target=target,
                                                        base_val_accuracy=base_val_accuracy))
        aim = CalibrationTarget.from_dict(reference["search_target"])
        _say(progress, f"search: the most expensive architecture scores {reference['accuracy']:.4f} on val (the "
                       f"base {base_val_accuracy:.4f}): candidates scored at {aim.target_accuracy:.4f}")
    evaluator = evaluator_at(aim)
    if sc.at_random:
        controller: Any = RandomController(space.decisions, seed=seed, unique=True)
    else:
        controller = RLController(space.decisions, kind=sc.controller, lr=sc.controller_lr,
                                  entropy_weight=sc.entropy_weight, baseline_decay=sc.baseline_decay,
                                  normalize_advantage=sc.normalize_advantage, seed=seed)
    if not resume:  # --force: start the search over (the journal is appended to, never overwritten)
        def forget() -> None:
            for stale in (sdir / "journal.jsonl", sdir / "controller.pt"):
                stale.unlink(missing_ok=True)

        dist.run_on_main(forget)
    # One process: one candidate at a time; under torchrun one candidate per rank at a time.
    strategy = SearchStrategy(space, evaluator, controller, budget=sc.budget, run_dir=sdir, max_invalid=sc.max_invalid,
                              progress=progress, provenance=run.provenance)
    result = strategy.run(resume=resume)
    if result.exhausted:
        _say(progress, f"search: the space has only {strategy.space_size} architectures, all scored; stopped before "
                       f"the budget of {sc.budget}")
    dist.run_on_main(lambda: atomic_write_json(result_path, {"architecture": result.best.to_dict(),
                                                             "reward": result.best_reward,
                                                             "num_candidates": len(result.records),
                                                             "space_exhausted": result.exhausted,
                                                             "search_target": aim.to_dict(), "reference": reference,
                                                             **run.provenance}))
    return _SearchOutcome(result.best, result.best_reward, result.exhausted, aim, reference,
                          dist.run_on_main(lambda: _journalled_seconds(sdir)))


def _journalled_seconds(sdir: Path) -> float | None:
    """The journalled candidates' scoring time, every process's of a resumed search (the search's
    wall clock sees only this one), divided by the ranks (under torchrun they score side by side).
    None without a readable journal (e.g. a search result written by hand): it is a record of the
    work, never a reason to refuse a resume."""
    try:
        records = Journal(sdir / "journal.jsonl").records()
    except CheckpointError:
        return None
    if not records:
        return None
    return float(sum(r.get("seconds") or 0.0 for r in records)) / dist.get_info().world_size


def _reference(evaluator_at_target: Any, sdir: Path, *, run: _Run, target: CalibrationTarget,
               base_val_accuracy: float) -> dict[str, Any]:
    """Rank 0: ``search.target_from: reference``'s reference, scored once and kept in
    ``search/reference.json`` (a resume reads it back): the space's most expensive architecture scored
    like a candidate (by the evaluator ``evaluator_at_target()`` makes, at the run's ``target``), its
    best val accuracy, and the search's target moved by it."""
    path = sdir / "reference.json"
    if run.resume and path.exists():
        saved = json.loads(path.read_text())
        if saved.get("config_hash") == run.provenance["config_hash"]:
            return saved
    arch = most_expensive(run.space)
    scored = evaluator_at_target().evaluate(arch)
    accuracy = float(scored.metrics["best_accuracy"])
    aim = reference_target(target, reference_accuracy=accuracy, base_val_accuracy=base_val_accuracy)
    reference = {"architecture": arch.to_dict(), "accuracy": accuracy, "base_val_accuracy": base_val_accuracy,
                 "search_target": aim.to_dict(), "seconds": scored.seconds, **run.provenance}
    sdir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, reference)
    return reference


def run_pipeline(cfg: RunConfig, *, out: Path, resume: bool = False, progress: bool = True,
                 teacher_cache: LogitStore | None = None) -> dict[str, Any]:
    """Run every step of the pipeline into ``out`` (prepared by the caller) and return the results.

    Args:
        cfg: the validated configuration.
        out: the run directory (exists; ``config.yaml`` is written here).
        resume: skip the steps whose results are on disk; resume search and training. Refused
            (:class:`~s2dnas.errors.RunDirError`, nothing written) when ``cfg`` differs from the
            run's ``config.yaml`` (see :func:`check_resume_config`).
        progress: progress bars and one line per step (rank 0 only under torchrun).
        teacher_cache: where the teacher's logits are kept (:class:`~s2dnas.train.teacher.LogitStore`;
            e.g. an SQLite file shared by runs of the same base, or by a resumed one); None: a
            new in-memory one for this run. The caller's store is flushed, not closed. Under
            torchrun each rank needs its own (its batches differ; one SQLite file is not for two writers).

    Under torchrun every rank calls it with the same arguments and gets the same results (see the
    module docstring); in one process no step changes.
    """
    start = time.time()
    progress = progress and dist.is_main()
    results_path = out / "results.json"

    def finished() -> dict[str, Any] | None:
        """Rank 0: a finished run's results, or None for a new or resumed one."""
        if resume and (out / "config.yaml").exists():
            check_resume_config(out, cfg)  # before anything is written
        if resume and results_path.exists():
            # results.json is written after every other step's output: the run is finished. Return its
            # numbers as they are (recomputing them could only change them) and keep its config.yaml.
            results = json.loads(results_path.read_text())
            if not (out / "report.md").exists():  # killed while writing the report
                from s2dnas.report import write_report

                write_report(out, results)
            _say(progress, f"{out} holds a finished run; nothing to resume")
            return results
        return None

    done = dist.run_on_main(finished)
    if done is not None:
        return done
    device = dist.device_for(dist.get_info(), resolve_device(cfg.device))  # torchrun: cuda:LOCAL_RANK
    torch.manual_seed(cfg.seed)
    loaded = load_run_base(cfg, device)
    # Written once the data and the base model load: a run that stops before (no data set, a wrong
    # model name) leaves no config.yaml, so the same command runs again without --resume.
    dist.run_on_main(lambda: dump_config(cfg, out / "config.yaml"))
    splits, base, model_name, source, space = loaded.splits, loaded.model, loaded.model_name, loaded.source, loaded.space
    stage_cost = stage_cost_hook(cfg.calibration, device)
    store = teacher_cache if teacher_cache is not None else LogitStore()
    counted = store.hits, store.misses  # a caller's store may have served other runs before
    run = _Run(cfg=cfg, out=out, splits=splits, base=base, model_name=model_name, base_source=source, space=space,
               device=device, resume=resume, progress=progress, teacher=CachedTeacher(base, store),
               stage_cost=stage_cost)
    base_metrics = dist.run_on_main(lambda: _base_metrics(run))
    if dist.is_main():
        warn_if_chance(val_accuracy=base_metrics["val_accuracy"], splits=splits,
                       advice="train the base model longer (s2dnas train-base) or check model.weights and the data")
    if isinstance(stage_cost, LatencyStageCost):  # the base's measured latency (cached): budget and report
        base_metrics = {**base_metrics, "latency_ms": dist.run_on_main(
            lambda: stage_cost.model_cost(base, input_shape=splits.input_shape)),
            "latency_batch": stage_cost.batch_size}
    # one rule for the search's rewards and the final calibration (issue 16)
    target = resolve_target(cfg.calibration, base_val_accuracy=base_metrics["val_accuracy"],
                            base_macs=base_metrics["macs"], base_latency_ms=base_metrics.get("latency_ms"))
    aim = (f"target val accuracy {target.target_accuracy:.4f}" if target.target_accuracy is not None
           else f"MACs budget {target.macs_budget / 1e6:.2f}M" if target.macs_budget is not None
           else f"latency budget {target.latency_budget:.3f} ms per input")
    _say(progress, f"base {model_name} ({source}): val {base_metrics['val_accuracy']:.4f}, "
                   f"test {base_metrics['test_accuracy']:.4f}, {base_metrics['macs'] / 1e6:.2f}M MACs; {aim}")
    timings: dict[str, float] = {}

    # 0. the super-network, trained once (or loaded from search.supernet) when the strategy scores
    # candidates with it or the final training starts from it
    supernet, supernet_info = None, None
    if cfg.needs_supernet:
        t = time.time()
        supernet, supernet_info = _supernet(run)
        timings["supernet_seconds"] = time.time() - t

    # 1. search (METHOD.md "Search")
    t = time.time()
    found = _search(run, target, supernet, base_val_accuracy=base_metrics["val_accuracy"],
                    base_latency_ms=base_metrics.get("latency_ms"))
    timings["search_seconds"] = time.time() - t
    arch = found.architecture
    _say(progress, f"search: best reward {found.reward:.3f}, splits {list(map(list, arch.splits))}, "
                   f"concat {list(arch.concat)}")

    # 2. final training with distillation (METHOD.md "Final training"), starting from the
    # super-network's weights (the architecture extracted with its per-stage heads: it already
    # works as a multi-stage network) or, with final_init: inherited, from the base model's.
    t = time.time()
    if cfg.final_init == "supernet":
        assert supernet is not None, "final_init supernet needs the super-network"
        msnet = supernet.extract(arch).to(device)
    else:
        msnet = space.build(arch).to(device)
    final_cfg = cfg.train if cfg.final_epochs is None else dataclasses.replace(cfg.train, epochs=cfg.final_epochs)
    final_dir = out / "final"

    def prepare_final() -> bool:
        final_dir.mkdir(exist_ok=True)
        return resume and (final_dir / "checkpoint.pt").exists()

    resume_final = dist.run_on_main(prepare_final)
    # under torchrun: data-parallel over every rank (train.batch_size is the global batch)
    train_metrics = train_multistage(msnet, splits, config=final_cfg, teacher=run.teacher, device=device,
                                     out_dir=final_dir, resume=resume_final, progress=progress, distributed=True,
                                     provenance=run.provenance)
    store.flush()
    _say(progress, f"teacher logits: {store.hits - counted[0]} batches from the cache, "
                   f"{store.misses - counted[1]} computed")
    timings["final_training_seconds"] = time.time() - t
    # What a resumed run did before this process: the search's candidates and the training's epochs
    if supernet_info is not None and supernet_info.get("source") == "trained by this run" \
            and supernet_info.get("train_seconds") is not None:
        timings["supernet_epoch_seconds"] = supernet_info["train_seconds"]
    if found.candidate_seconds is not None:
        timings["search_candidate_seconds"] = found.candidate_seconds
    if train_metrics["train_seconds"] is not None:
        timings["final_training_epoch_seconds"] = train_metrics["train_seconds"]
    # the teacher passes its epochs read from a shared cache (teacher_cache) took when computed
    timings["final_training_teacher_read_back_seconds"] = read_back_seconds(train_metrics["history"])
    # Steps 3-6 on rank 0 (the others hold the same weights and wait for the results).
    return dist.run_on_main(lambda: _finish(run, msnet, found, base_metrics=base_metrics, target=target,
                                            train_metrics=train_metrics, timings=timings, start=start,
                                            supernet_info=supernet_info))


def _machine(device: torch.device) -> dict[str, Any]:
    """Where the run's last process ran: :func:`~s2dnas._device.machine_info`, the device, the
    ranks and, on CUDA, the GPU."""
    gpu = {"gpu": torch.cuda.get_device_name(device)} if device.type == "cuda" else {}
    return {**machine_info(), "device": str(device), "world_size": dist.get_info().world_size, **gpu}


def _latency_report(cal: Any, test: dict[str, Any], base_metrics: dict[str, Any]) -> dict[str, Any] | None:
    """Predicted latency next to the MACs when the calibration minimised measured latency."""
    if cal.cost_unit != "ms":
        return None
    base_ms = base_metrics["latency_ms"]
    test_ms = expected_latency(stage_seconds=cal.stage_cost, exit_fractions=test["exit_fractions"])
    return {"unit": "ms per input", "batch_size": base_metrics["latency_batch"], "stage_ms": list(cal.stage_cost),
            "base_ms": base_ms, "val_expected_ms": cal.expected_cost, "test_expected_ms": test_ms,
            "test_predicted_speedup": base_ms / test_ms if test_ms > 0 else None}


def _finish(run: _Run, msnet: MultiStageNet, found: _SearchOutcome, *, base_metrics: dict[str, Any],
            target: CalibrationTarget, train_metrics: MultiStageMetrics, timings: dict[str, float],
            start: float, supernet_info: dict[str, Any] | None) -> dict[str, Any]:
    """Steps 3-6 after the final training: batch-norm statistics, calibration, test, model, export, report."""
    cfg, out, splits, device = run.cfg, run.out, run.splits, run.device
    t = time.time()
    cc = cfg.calibration
    # running statistics exactly for the final weights (cheap: a few forward batches); seeded,
    # so a resumed run gets the same statistics
    reestimate_batch_norm_seeded(msnet, splits.train, batch_size=cfg.data.batch_size, batches=FINAL_BN_BATCHES,
                                 seed=cfg.seed, device=device)
    timings["final_training_seconds"] += time.time() - t
    msnet.eval()

    # 3. thresholds on val only (the search's target), minimising the configured cost (MACs or
    # measured latency, calibration.cost); 4. test for reporting
    stage_macs = msnet.analytic_macs
    val_logits = collect_logits(msnet, make_loader(splits.val, batch_size=cfg.data.eval_batch_size), device=device)
    cal = calibrate_at(val_logits, stage_cost=run.stage_cost(msnet), stage_macs=stage_macs, target=target,
                       confidence=cc.confidence)
    policy = cal.policy  # the one value DynamicNet, save and export take
    test_logits = collect_logits(msnet, make_loader(splits.test, batch_size=cfg.data.eval_batch_size), device=device)
    # the policy on test, and the val curve's thresholds applied to test: the curve a user can expect
    scores = evaluate_policy(test_logits, policy, stage_macs=stage_macs)
    test = scores.result
    spec = build_model_spec(run.space, num_classes=splits.num_classes, model=run.model_name,
                            class_names=splits.class_names, mean=splits.mean, std=splits.std,
                            base_accuracy=base_metrics["val_accuracy"], data=splits.data_spec())
    dyn = DynamicNet(msnet, policy, stage_macs=stage_macs, model_spec=spec)
    dyn.save(out / "model")

    # 5. export (optional dependencies)
    export_dir = None
    try:
        from s2dnas.export import export_dynamic

        export_dir = export_dynamic(dyn, out / "export")
    except ImportError as err:
        _logger.warning("export skipped: %s", err)

    base_macs = base_metrics["macs"]
    results = {
        "dataset": splits.name, "base_model": run.model_name, "base": base_metrics,
        "target_val_accuracy": target.target_accuracy,  # None under a MACs or latency budget
        "calibration_target": target.to_dict(), "architecture": found.architecture.to_dict(),
        "search_reward": found.reward, "search_space_exhausted": found.exhausted,
        "search_target": found.target.to_dict(), "search_reference": found.reference, **run.provenance,
        "supernet": supernet_info, "final_init": cfg.final_init,
        "calibration": cal.to_dict(),
        "val": {"accuracy": cal.accuracy, "expected_macs": cal.expected_macs, "stage_accuracy": val_logits.stage_accuracy()},
        "test": {**test, "macs_ratio": test["expected_macs"] / base_macs,
                 "stage_accuracy": scores.stage_accuracy, "oracle": scores.oracle},
        "test_curve": scores.curve,
        "stage_macs": list(stage_macs), "latency": _latency_report(cal, test, base_metrics),
        "final_training": {k: v for k, v in train_metrics.items() if k not in ("history", "train_seconds")},
        "timings": {**timings, "total_seconds": time.time() - start}, "machine": _machine(device),
        "export_dir": str(export_dir) if export_dir else None,
    }
    atomic_write_json(out / "results.json", results)
    from s2dnas.report import write_report

    write_report(out, results)
    _say(run.progress, f"test accuracy {test['accuracy']:.4f} at {test['expected_macs'] / 1e6:.2f}M MACs "
                       f"({100 * test['expected_macs'] / base_macs:.1f}% of the base); report: {out / 'report.md'}")
    return results
