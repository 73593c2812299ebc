"""How good are sub-networks taken from the super-network? A resumable probe on the shipped ResNet-20.

    python -m benchmarks.supernet_probe --epochs 2 --limit-train 20000 --threads 2 \\
        --dir benchmarks/runs/supernet_probe --out benchmarks/results/supernet_probe.json

Trains the sandwich super-network (``s2dnas.train.supernet_training``) over the default space of
the shipped ResNet-20 / Fashion-MNIST (3 stages, channel multiple from the config defaults),
checkpointing every epoch (``--resume`` continues), then scores, from the super-network and without
any fine-tuning, the cheapest, the most expensive and METHOD.md's hand-picked architecture plus
``--random`` sampled ones: per-stage val accuracy, and the thresholds (chosen on val) at the base's
val accuracy minus ``--tolerance``. Test accuracy is reported for the chosen thresholds only.
"""
from __future__ import annotations

import argparse
import time

import torch

from s2dnas._device import machine_info
from s2dnas._io import atomic_write_json
from s2dnas.config import CalibrationConfig, SpaceConfig, SupernetConfig, config_to_dict, resolve_target
from s2dnas.data import make_loader
from s2dnas.dynamic.calibrate import collect_logits, evaluate_dynamic
from s2dnas.search.score import score
from s2dnas.space.factory import build_space
from s2dnas.train.evaluate import base_splits, load_base_model
from s2dnas.train.loops import evaluate
from s2dnas.train.sandwich import cheapest, most_expensive
from s2dnas.train.supernet import SuperNet
from s2dnas.train.supernet_training import train_supernet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--stop-after", type=int, default=None, help="train at most this many epochs now")
    parser.add_argument("--limit-train", type=int, default=20000)
    parser.add_argument("--lr", type=float, default=SupernetConfig.lr)
    parser.add_argument("--num-sampled", type=int, default=SupernetConfig.num_sampled)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--random", type=int, default=6)
    parser.add_argument("--tolerance", type=float, default=0.001)
    parser.add_argument("--dir", default="benchmarks/runs/supernet_probe")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/supernet_probe.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    splits = base_splits(dataset="fashion-mnist", data_dir=None, val_size=None, seed=0, weights=None)
    base, _, _ = load_base_model(splits=splits, model_name="resnet20", weights=None)  # the shipped weights
    base.eval()
    space = build_space(base, config=SpaceConfig(), input_shape=splits.input_shape, model_name="resnet20")
    supernet = SuperNet(space)
    config = SupernetConfig(epochs=args.epochs, lr=args.lr, num_sampled=args.num_sampled,
                            limit_train=args.limit_train)
    start = time.time()
    history = train_supernet(supernet, splits.train, config=config, out_dir=args.dir, resume=args.resume,
                             stop_after_epochs=args.stop_after)
    train_seconds = time.time() - start
    if history["epochs"] < args.epochs:
        print(f"trained {history['epochs']}/{args.epochs} epochs; rerun with --resume to go on")
        return

    val_loader = make_loader(splits.val, batch_size=512)
    test_loader = make_loader(splits.test, batch_size=512)
    bn_loader = make_loader(splits.train, batch_size=128, shuffle=True, seed=0)
    base_val = evaluate(base, val_loader, device=torch.device("cpu")).accuracy
    base_test = evaluate(base, test_loader, device=torch.device("cpu")).accuracy
    target = resolve_target(CalibrationConfig(tolerance=args.tolerance), base_val_accuracy=base_val,
                            base_macs=space.base_macs())
    generator = torch.Generator().manual_seed(1)
    archs = {"cheapest": cheapest(space), "most_expensive": most_expensive(space),
             "hand_picked": space.default_architecture()}
    archs.update({f"random_{i}": space.sample(generator) for i in range(args.random)})
    rows = {}
    for name, arch in archs.items():
        s = score(supernet, arch, val_data=val_loader, bn_data=bn_loader, target=target, keep_network=True)
        test_logits = collect_logits(s.network, test_loader)
        m = s.metrics
        test = evaluate_dynamic(test_logits, s.calibration.policy, stage_macs=m["stage_macs"])
        rows[name] = {**s.to_dict(), "test_stage_accuracy": list(test_logits.stage_accuracy()),
                      "test_accuracy": test["accuracy"], "test_macs_fraction": test["expected_macs"] / space.base_macs()}
        print(f"{name:15s} stages val {[round(a, 4) for a in m['stage_val_accuracy']]} reached={s.reached} "
              f"val {m['accuracy']:.4f} at {m['macs_ratio']:.1%} MACs; test {test['accuracy']:.4f}")
    atomic_write_json(args.out, {
        "command": "python -m benchmarks.supernet_probe " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v not in (None, False, True)),
        "machine": machine_info(), "config": config_to_dict(config), "history": history,
        "train_seconds_this_call": train_seconds, "base": {"val_accuracy": base_val, "test_accuracy": base_test},
        "target_val_accuracy": target.target_accuracy, "architectures": rows})


if __name__ == "__main__":
    main()
