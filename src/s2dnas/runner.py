"""The whole S2DNAS pipeline of ``s2dnas run``: base -> search -> final training -> calibration ->
test evaluation -> export -> report. Each step writes its result into the run directory and is
skipped on ``--resume`` when its result is already there; the search and the final training
resume inside themselves (journal, checkpoints).

Run directory::

    config.yaml        resolved configuration
    base.json          base model: val/test accuracy, MACs
    search/            journal.jsonl, controller.pt, supernet.safetensors (one-shot), result.json
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
super-network, the reference architecture, calibration, test, export, report) run on rank 0 and
the others wait for their result (:func:`~s2dnas.distributed.run_on_main`, which also sends rank
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
from s2dnas._device import resolve_device
from s2dnas._io import atomic_write_json
from s2dnas.config import (CalibrationConfig, CalibrationTarget, RunConfig, config_differences, dump_config,
                           load_config, provenance, resolve_config, resolve_target)
from s2dnas.cost import StageCost, macs_stage_cost
from s2dnas.cost.latency import LatencyStageCost, expected_latency
from s2dnas.data import DataSplits, make_loader
from s2dnas.dynamic import DynamicNet
from s2dnas.dynamic.calibrate import calibrate, collect_logits, evaluate_dynamic, oracle
from s2dnas.dynamic.files import build_model_spec
from s2dnas.errors import RunDirError, S2DNASError
from s2dnas.search.random import RandomController
from s2dnas.search.rl import RLController
from s2dnas.search.evaluator import OneShotEvaluator, TrainedEvaluator
from s2dnas.search.oneshot import build_supernet_space, train_supernet
from s2dnas.search.strategy import SearchStrategy
from s2dnas.space import Architecture, MultiStageNet, Space
from s2dnas.space.factory import build_space
from s2dnas.train.checkpoint import load_weights, save_weights
from s2dnas.train.loops import evaluate, reestimate_batch_norm_seeded
from s2dnas.train.multistage import MultiStageMetrics, train_multistage

__all__ = ["run_pipeline", "check_resume_config", "stage_cost_hook", "FINAL_BN_BATCHES"]

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
    space: Space
    device: torch.device
    resume: bool
    progress: bool

    @property
    def provenance(self) -> dict[str, str]:
        """The config hash and s2dnas version every file of the run records."""
        return provenance(self.cfg)


@dataclasses.dataclass(frozen=True)
class _SearchOutcome:
    """The search's result and the space whose weights the final training starts from."""

    architecture: Architecture
    reward: float
    init_space: Space
    exhausted: bool


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


def _search(run: _Run, target: CalibrationTarget) -> _SearchOutcome:
    """Run (or resume) the search; the best architecture, its reward, and the space whose weights the
    final training starts from (the super-network's in one-shot mode)."""
    cfg, space, resume, progress = run.cfg, run.space, run.resume, run.progress
    sdir = run.out / "search"
    result_path = sdir / "result.json"
    sc = cfg.search
    oneshot = sc.strategy == "oneshot"
    super_space = build_supernet_space(space) if oneshot else space
    weights = sdir / "supernet.safetensors"

    def saved() -> tuple[dict[str, Any] | None, bool]:
        """Rank 0: the finished search's result (or None) and whether super-network weights were loaded."""
        loaded = False
        if oneshot:
            sdir.mkdir(parents=True, exist_ok=True)
            if resume and weights.exists():
                state, meta = load_weights(weights)
                _check_provenance(weights, meta, run)
                super_space.model.load_state_dict(state)
                loaded = True
        return (json.loads(result_path.read_text()) if resume and result_path.exists() else None), loaded

    data, loaded = dist.run_on_main(saved)
    if data is not None:
        if oneshot:
            dist.broadcast_module(super_space.model)
        return _SearchOutcome(Architecture.from_dict(data["architecture"]), float(data["reward"]), super_space,
                              bool(data.get("space_exhausted", False)))
    seed = cfg.seed if sc.seed is None else sc.seed
    common = dict(target=target, confidence=cfg.calibration.confidence, reward=sc.reward, device=run.device,
                  eval_batch_size=cfg.data.eval_batch_size, tradeoff_weight=sc.tradeoff_weight)
    if oneshot:
        if not loaded:
            def train() -> None:  # rank 0 alone (train_supernet has no data-parallel mode)
                _say(progress, f"training the super-network ({sc.supernet_epochs} epochs)")
                train_supernet(super_space, run.splits, config=dataclasses.replace(cfg.train, seed=seed),
                               teacher=run.base, epochs=sc.supernet_epochs, device=run.device, seed=seed,
                               progress=progress)
                save_weights(weights, super_space.model.state_dict(), {"kind": "supernet", **run.provenance})

            dist.run_on_main(train)
        dist.broadcast_module(super_space.model)  # every rank scores candidates with rank 0's weights
        evaluator: Any = OneShotEvaluator(super_space, run.splits, batch_size=cfg.data.batch_size, **common)
    else:
        candidate_train = dataclasses.replace(cfg.train, epochs=sc.candidate_epochs,
                                              limit_train=sc.candidate_limit_train, seed=seed)
        evaluator = TrainedEvaluator(space, run.splits, teacher=run.base, train=candidate_train, **common)
    if sc.strategy == "random":
        controller: Any = RandomController(space.decisions, seed=seed, unique=True)
    else:
        controller = RLController(space.decisions, kind=sc.controller, lr=sc.controller_lr,
                                  entropy_weight=sc.entropy_weight, baseline_decay=sc.baseline_decay, seed=seed)
    if not resume:  # --force: start the search over (the journal is appended to, never overwritten)
        def forget() -> None:
            for stale in (sdir / "journal.jsonl", sdir / "controller.pt", sdir / "reference.json"):
                stale.unlink(missing_ok=True)

        dist.run_on_main(forget)
    if sc.target == "reference" and sc.reward == "macs_saving":
        # Design choice (METHOD.md's lesson): candidates scored after brief training or with
        # shared weights rarely reach the base accuracy; when none does, the reward ignores MACs.
        # The search target becomes what the default architecture reaches when scored the same
        # way (capped by the final target), so candidates compete on MACs at that accuracy.
        # Under torchrun rank 0 scores it and every rank's evaluator gets the target.
        evaluator.target = CalibrationTarget(target_accuracy=dist.run_on_main(
            lambda: _reference_target(evaluator, space, sdir, target=target, tolerance=cfg.calibration.tolerance,
                                      resume=resume)))
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
                                                             **run.provenance}))
    return _SearchOutcome(result.best, result.best_reward, super_space, result.exhausted)


def _check_provenance(path: Path, meta: dict[str, Any], run: _Run) -> None:
    """Refuse a file written by another configuration (files without a hash predate it and pass)."""
    theirs, mine = meta.get("config_hash"), run.provenance["config_hash"]
    if theirs is not None and theirs != mine:
        raise RunDirError(f"{path} was written by another configuration (config hash {theirs}, this run's {mine}); "
                          "resume with the config that started it, or start over with --force")


def _reference_target(evaluator: Any, space: Space, sdir: Path, *, target: CalibrationTarget, tolerance: float,
                      resume: bool) -> float:
    path = sdir / "reference.json"
    if resume and path.exists():
        return float(json.loads(path.read_text())["search_target"])
    sdir.mkdir(parents=True, exist_ok=True)
    assert target.target_accuracy is not None, "macs_saving calibrates to an accuracy target"
    ref = evaluator.evaluate(space.default_architecture())
    search_target = min(target.target_accuracy, ref.metrics["best_accuracy"] - tolerance)
    atomic_write_json(path, {"architecture": ref.architecture.to_dict(), "metrics": ref.metrics,
                             "final_target": target.target_accuracy, "search_target": search_target})
    return search_target


def run_pipeline(cfg: RunConfig, *, out: Path, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run every step of the pipeline into ``out`` (prepared by the caller) and return the results.

    Args:
        cfg: the validated configuration.
        out: the run directory (exists; ``config.yaml`` is written here).
        resume: skip the steps whose results are on disk; resume search and training. Refused
            (:class:`~s2dnas.errors.RunDirError`, nothing written) when ``cfg`` differs from the
            run's ``config.yaml`` (see :func:`check_resume_config`).
        progress: progress bars and one line per step (rank 0 only under torchrun).

    Under torchrun every rank calls it with the same arguments and gets the same results (see the
    module docstring); in one process no step changes.
    """
    from s2dnas.train.evaluate import base_splits, load_base_model

    start = time.time()
    progress = progress and dist.is_main()
    results_path = out / "results.json"

    def finished() -> dict[str, Any] | None:
        """Rank 0: a finished run's results, or None after writing config.yaml for a new or resumed one."""
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
        dump_config(cfg, out / "config.yaml")
        return None

    done = dist.run_on_main(finished)
    if done is not None:
        return done
    device = dist.device_for(dist.get_info(), resolve_device(cfg.device))  # torchrun: cuda:LOCAL_RANK
    torch.manual_seed(cfg.seed)
    splits = base_splits(dataset=cfg.data.dataset, data_dir=cfg.data.data_dir, val_size=cfg.data.val_size,
                         seed=cfg.data.seed, weights=cfg.model.weights)
    base, model_name, source = load_base_model(splits=splits, model_name=cfg.model.name, weights=cfg.model.weights)
    base = base.to(device).eval()
    for p in base.parameters():
        p.requires_grad_(False)
    space = build_space(base, config=cfg.space, input_shape=splits.input_shape, model_name=model_name)
    run = _Run(cfg=cfg, out=out, splits=splits, base=base, model_name=model_name, space=space, device=device,
               resume=resume, progress=progress)
    base_metrics = dist.run_on_main(lambda: _base_metrics(run))
    stage_cost = stage_cost_hook(cfg.calibration, device)
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

    # 1. search (METHOD.md "Search")
    t = time.time()
    found = _search(run, target)
    timings["search_seconds"] = time.time() - t
    arch = found.architecture
    _say(progress, f"search: best reward {found.reward:.3f}, splits {list(map(list, arch.splits))}, "
                   f"concat {list(arch.concat)}")

    # 2. final training with inherited weights and distillation (METHOD.md "Final training").
    # Design choice: in one-shot mode the weights come from the super-network, which has already
    # learnt to work as a multi-stage network; otherwise from the base model.
    t = time.time()
    msnet = found.init_space.build(arch).to(device)
    final_cfg = cfg.train if cfg.final_epochs is None else dataclasses.replace(cfg.train, epochs=cfg.final_epochs)
    final_dir = out / "final"

    def prepare_final() -> bool:
        final_dir.mkdir(exist_ok=True)
        return resume and (final_dir / "checkpoint.pt").exists()

    resume_final = dist.run_on_main(prepare_final)
    # under torchrun: data-parallel over every rank (train.batch_size is the global batch)
    train_metrics = train_multistage(msnet, splits, config=final_cfg, teacher=base, device=device,
                                     out_dir=final_dir, resume=resume_final, progress=progress, distributed=True,
                                     provenance=run.provenance)
    timings["final_training_seconds"] = time.time() - t
    # Steps 3-6 on rank 0 (the others hold the same weights and wait for the results).
    return dist.run_on_main(lambda: _finish(run, msnet, found, base_metrics=base_metrics, target=target,
                                            train_metrics=train_metrics, timings=timings, start=start))


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
            start: float) -> dict[str, Any]:
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
    stage_cost = stage_cost_hook(cc, device)(msnet)  # (per-stage cost per input, unit)
    val_logits = collect_logits(msnet, make_loader(splits.val, batch_size=cfg.data.eval_batch_size), device=device)
    cal = calibrate(val_logits, stage_macs=stage_macs, stage_cost=stage_cost, confidence=cc.confidence,
                    **target.calibrate_kwargs())
    policy = cal.policy  # the one value DynamicNet, save and export take
    test_logits = collect_logits(msnet, make_loader(splits.test, batch_size=cfg.data.eval_batch_size), device=device)
    test = evaluate_dynamic(test_logits, policy, stage_macs=stage_macs)
    # the val curve's thresholds applied to test: the accuracy-vs-MACs curve a user can expect
    test_curve = [evaluate_dynamic(test_logits, policy.with_thresholds(p.thresholds), stage_macs=stage_macs)
                  for p in cal.curve]
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
        "target_val_accuracy": (target.target_accuracy if target.target_accuracy is not None
                                else base_metrics["val_accuracy"] - cc.tolerance),
        "calibration_target": target.to_dict(), "architecture": found.architecture.to_dict(),
        "search_reward": found.reward, "search_space_exhausted": found.exhausted, **run.provenance,
        "search_reference": (json.loads((out / "search" / "reference.json").read_text())
                             if (out / "search" / "reference.json").exists() else None),
        "calibration": cal.to_dict(),
        "val": {"accuracy": cal.accuracy, "expected_macs": cal.expected_macs, "stage_accuracy": val_logits.stage_accuracy()},
        "test": {**test, "macs_ratio": test["expected_macs"] / base_macs, "stage_accuracy": test_logits.stage_accuracy(),
                 "oracle": oracle(test_logits, stage_macs)},
        "test_curve": [{"expected_macs": p["expected_macs"], "accuracy": p["accuracy"]} for p in test_curve],
        "stage_macs": list(stage_macs), "latency": _latency_report(cal, test, base_metrics),
        "final_training": {k: v for k, v in train_metrics.items() if k != "history"},
        "timings": {**timings, "total_seconds": time.time() - start}, "export_dir": str(export_dir) if export_dir else None,
    }
    atomic_write_json(out / "results.json", results)
    from s2dnas.report import write_report

    write_report(out, results)
    _say(run.progress, f"test accuracy {test['accuracy']:.4f} at {test['expected_macs'] / 1e6:.2f}M MACs "
                       f"({100 * test['expected_macs'] / base_macs:.1f}% of the base); report: {out / 'report.md'}")
    return results
