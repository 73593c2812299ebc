"""Config: defaults, YAML + overrides precedence, one error listing every problem, dump/load."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

import s2dnas
from s2dnas.config import (
    DEMO_CONFIG,
    RESUME_MAY_DIFFER,
    CalibrationConfig,
    CalibrationTarget,
    RunConfig,
    SearchConfig,
    TrainConfig,
    config_differences,
    config_from_dict,
    config_hash,
    config_to_dict,
    dump_config,
    load_config,
    parse_override,
    provenance,
    resolve_config,
    resolve_target,
    validate_config,
)
from s2dnas.errors import ConfigError


def _yaml(tmp_path: Path, data: object, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_defaults_are_valid() -> None:
    assert RunConfig().validate() == []
    cfg = load_config()
    assert cfg == resolve_config(RunConfig())
    # None-means-derived fields are filled by the loader.
    assert cfg.train.batch_size == cfg.data.batch_size
    assert cfg.train.seed == cfg.search.seed == cfg.seed
    assert cfg.final_epochs == cfg.train.epochs


def test_demo_yaml_states_only_what_differs_from_the_defaults() -> None:
    """One source of defaults: the dataclasses; the demo file holds only its own changes (issue 16)."""
    path = Path(DEMO_CONFIG)
    cfg = load_config(path)
    defaults = config_to_dict(RunConfig())
    raw = yaml.safe_load(path.read_text())
    stated = [(section, key, value) for section, body in raw.items()
              for key, value in (body.items() if isinstance(body, dict) else [(None, body)])]
    for section, key, value in stated:
        default = defaults[section] if key is None else defaults[section][key]
        assert value != default, f"{section}.{key} restates the default {default!r}"
    # the demo scores from the shipped super-network, so it trains none and keeps that section's defaults
    assert (cfg.search.strategy, cfg.search.supernet) == ("oneshot", "shipped") and "supernet" not in raw
    # ... and aims at the base's accuracy within a MACs budget: the calibration differs only there
    assert cfg.data == RunConfig().data
    assert cfg.calibration == dataclasses.replace(RunConfig().calibration, macs_budget=cfg.calibration.macs_budget)
    assert cfg.search.reward == "accuracy_in_budget"
    assert "demo scale" in path.read_text()


def test_run_without_config_uses_the_dataclass_defaults() -> None:
    assert load_config().search.strategy == SearchConfig().strategy == "rl"


def test_tradeoff_weight_and_rewards_have_one_source() -> None:
    import inspect

    from s2dnas.config.schema import REWARDS
    from s2dnas.search import evaluator, reward

    assert reward.REWARDS is REWARDS
    for fn in (reward.compute_reward, evaluator.Evaluator.__init__):
        assert inspect.signature(fn).parameters["tradeoff_weight"].default == SearchConfig().tradeoff_weight


@pytest.mark.parametrize(("calibration", "expected"), [
    (CalibrationConfig(), CalibrationTarget(target_accuracy=0.9 - 0.001)),
    (CalibrationConfig(tolerance=0.05), CalibrationTarget(target_accuracy=0.85)),
    (CalibrationConfig(target_accuracy=0.7), CalibrationTarget(target_accuracy=0.7)),
    (CalibrationConfig(macs_budget=0.3), CalibrationTarget(macs_budget=0.3 * 2000)),
])
def test_resolve_target(calibration: CalibrationConfig, expected: CalibrationTarget) -> None:
    got = resolve_target(calibration, base_val_accuracy=0.9, base_macs=2000)
    if expected.target_accuracy is None:
        assert got.target_accuracy is None
    else:
        assert got.target_accuracy == pytest.approx(expected.target_accuracy)
    assert got.macs_budget == expected.macs_budget and got.budget_mode == (expected.macs_budget is not None)


def test_config_hash_ignores_only_the_listed_fields() -> None:
    base = resolve_config(RunConfig())
    same = dataclasses.replace(base, out="elsewhere", device="cpu",
                               data=dataclasses.replace(base.data, data_dir="/data"))
    assert config_hash(base) == config_hash(same) and config_differences(base, same) == []
    for name in ("out", "device", "data.data_dir"):
        assert name in RESUME_MAY_DIFFER
    changed = dataclasses.replace(base, search=dataclasses.replace(base.search, budget=7),
                                  data=dataclasses.replace(base.data, eval_batch_size=64))
    assert config_hash(changed) != config_hash(base)
    assert config_differences(base, changed) == ["data.eval_batch_size: 512 -> 64", "search.budget: 20 -> 7"]
    assert provenance(base) == {"config_hash": config_hash(base), "s2dnas_version": s2dnas.__version__}


def test_yaml_then_flags_then_set_overrides(tmp_path: Path) -> None:
    path = _yaml(tmp_path, {"train": {"lr": 0.05, "epochs": 4}, "search": {"budget": 7, "strategy": "random"}})
    cfg = load_config(path, [("search.budget", 8), "search.budget=9", "train.stage_weights=[1, 1, 2]"])
    assert cfg.train.lr == 0.05 and cfg.train.epochs == 4  # from the file
    assert cfg.search.budget == 9  # --set beats the flag, which beats the file
    assert cfg.search.strategy == "random"
    assert cfg.train.stage_weights == (1.0, 1.0, 2.0)
    assert cfg.train.momentum == TrainConfig().momentum  # untouched default
    assert cfg.final_epochs == 4  # derived from train.epochs after the overrides


@pytest.mark.parametrize(("item", "expected"), [
    ("search.budget=3", 3), ("train.lr=0.1", 0.1), ("calibration.target_accuracy=null", None),
    ("train.stage_weights=[1,2,3]", (1.0, 2.0, 3.0)), ("train.channels_last=true", True),
    ("train.lr=1e-3", 0.001),  # YAML 1.1 reads 1e-3 as a string; accepted for float fields
])
def test_override_values_are_parsed_as_yaml(item: str, expected: object) -> None:
    cfg = load_config(overrides=[item])
    section, key = parse_override(item)[0].split(".")
    assert getattr(getattr(cfg, section), key) == expected


def test_every_bad_field_is_listed_in_one_error(tmp_path: Path) -> None:
    path = _yaml(tmp_path, {"search": {"budget": 0}, "train": {"lr": -1.0}, "space": {"importance": "random"}})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    for field in ("search.budget", "train.lr", "space.importance"):
        assert field in message
    assert "3 problems" in message and "\n" not in message
    assert len(info.value.problems) == 3  # type: ignore[attr-defined]


def test_cross_section_problems() -> None:
    with pytest.raises(ConfigError, match=r"train.stage_weights must have one number per stage"):
        load_config(overrides=["train.stage_weights=[1, 2]"])  # S = 3
    with pytest.raises(ConfigError, match=r"needs calibration.macs_budget"):
        load_config(overrides=["search.reward=accuracy_in_budget"])
    assert load_config(overrides=["search.reward=accuracy_in_budget", "calibration.macs_budget=0.3"])
    with pytest.raises(ConfigError, match=r"ratio_grid must be >= space.num_stages"):
        load_config(overrides=["space.num_stages=4", "space.ratio_grid=3"])


def test_unknown_keys_are_named_with_the_valid_ones(tmp_path: Path) -> None:
    path = _yaml(tmp_path, {"train": {"lrr": 0.1}, "serach": {"budget": 3}})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "train.lrr: unknown key" in message and "did you mean lr?" in message
    assert "valid keys of train: epochs, lr," in message
    assert "serach: unknown key" in message and "did you mean search?" in message
    assert str(path) in message  # says where the key came from
    with pytest.raises(ConfigError, match=r"search.stepz: unknown key \(from --set\)"):
        load_config(overrides=["search.stepz=200"])


def test_wrong_types_are_reported_and_ints_become_floats(tmp_path: Path) -> None:
    path = _yaml(tmp_path, {"train": {"lr": "fast", "epochs": 2.5, "channels_last": 1, "momentum": 0},
                            "data": {"dataset": 10}, "model": {"input_shape": [1, 28]}, "space": 3})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "train.lr must be a number, got 'fast'" in message
    assert "train.epochs must be an integer, got 2.5" in message
    assert "train.channels_last must be true or false, got 1" in message
    assert "data.dataset must be a string, got 10" in message
    assert "model.input_shape must be a list of 3 integers or null" in message
    assert "space must be a mapping" in message
    assert "train.momentum" not in message  # 0 is a valid float
    cfg = load_config(overrides=["train.lr=1", "train.momentum=0"])
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == 1.0
    assert isinstance(cfg.train.momentum, float)


def test_direct_construction_with_wrong_types_is_reported_not_crashed() -> None:
    problems = TrainConfig(lr="x", epochs=True).validate()  # type: ignore[arg-type]
    assert any(p.startswith("train.lr must be a number") for p in problems)
    assert any(p.startswith("train.epochs must be an integer") for p in problems)
    with pytest.raises(ConfigError, match="search.budget must be >= 1, got 0"):
        validate_config(SearchConfig(budget=0))


@pytest.mark.parametrize("item", ["search.budget", "=3", "a..b=1", "train.stage_weights=[1, 2"])
def test_malformed_override(item: str) -> None:
    with pytest.raises(ConfigError):
        load_config(overrides=[item])


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"not valid YAML .*at line \d"):
        load_config(_yaml(tmp_path, "train:\n  lr: [0.1\n", "bad.yaml"))
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(_yaml(tmp_path, "- 1\n- 2\n", "list.yaml"))
    assert load_config(_yaml(tmp_path, "", "empty.yaml")) == load_config()


def test_dump_load_round_trip(tmp_path: Path) -> None:
    cfg = load_config(overrides=["train.stage_weights=[1, 1, 2]", "model.input_shape=[1, 28, 28]",
                                 "calibration.target_accuracy=0.9", "out=runs/x", "search.budget=3"])
    dump_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temp file


def test_supernet_section_budget_and_final_init_are_resolved_by_strategy() -> None:
    """Issue 12: the super-network recipe is a config section; its scoring makes a larger default budget."""
    one = load_config(overrides=["search.strategy=oneshot", "data.batch_size=64", "seed=3"])
    assert (one.search.budget, one.final_init) == (200, "supernet")
    assert (one.supernet.batch_size, one.supernet.seed) == (64, 3)  # None = data.batch_size / seed
    assert one.needs_supernet
    rl = load_config()
    assert (rl.search.budget, rl.final_init, rl.needs_supernet) == (20, "inherited", False)
    kept = load_config(overrides=["search.strategy=oneshot", "search.budget=7", "final_init=inherited"])
    assert (kept.search.budget, kept.final_init, kept.needs_supernet) == (7, "inherited", True)
    assert load_config(overrides=["final_init=supernet"]).needs_supernet  # rl search, fine-tuned from one


def test_supernet_section_and_path_are_validated() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["supernet.epochs=0", "supernet.num_sampled=-1", "supernet.stage_weights=[1, 1]",
                               "final_init=scratch"])
    problems = err.value.problems
    assert "supernet.epochs must be >= 1, got 0" in problems
    assert "supernet.num_sampled must be >= 0, got -1" in problems
    assert any(p.startswith("supernet.stage_weights must have one number per stage") for p in problems)
    assert "final_init must be one of supernet, inherited or null; got 'scratch'" in problems
    with pytest.raises(ConfigError, match="search.supernet is set, but neither search.strategy=oneshot nor "
                                          "final_init=supernet uses a super-network"):
        load_config(overrides=["search.supernet=runs/sn"])
    assert load_config(overrides=["search.supernet=runs/sn", "search.strategy=oneshot"]).search.supernet == "runs/sn"
