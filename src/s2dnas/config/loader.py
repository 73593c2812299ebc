"""Load a :class:`~s2dnas.config.RunConfig`: defaults -> YAML file -> ``a.b=value`` overrides.

The three sources are merged as plain data first, then converted and checked in one pass, so a
single :class:`~s2dnas.errors.ConfigError` lists every unknown key, wrong type and out-of-range
value at once (pycls ``merge_from_list`` + ``assert_cfg``, with dataclasses and ``raise``).

Example:
    >>> cfg = load_config(overrides=["search.budget=5", "train.stage_weights=[1, 1, 2]"])
    >>> cfg.search.budget, cfg.train.stage_weights
    (5, (1.0, 1.0, 2.0))
    >>> cfg.train.batch_size == cfg.data.batch_size  # None is resolved from data.batch_size
    True
"""
from __future__ import annotations

import difflib
import os
import typing
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import yaml

from s2dnas._io import atomic_write_bytes
from s2dnas.config.schema import DEFAULT_BUDGETS, REMOVED_KEYS, RunConfig, _describe, conform
from s2dnas.errors import ConfigError

__all__ = [
    "load_config",
    "dump_config",
    "config_to_dict",
    "config_from_dict",
    "validate_config",
    "resolve_config",
    "parse_override",
]

_T = typing.TypeVar("_T")


def parse_override(item: str) -> tuple[str, Any]:
    """Split ``"a.b=value"`` into the dotted key and the value parsed as YAML.

    ``3`` -> int, ``0.1`` -> float, ``null`` -> None, ``[1,2]`` -> list, ``true`` -> bool; anything
    else stays a string.

    Raises:
        ConfigError: no ``=``, an empty key or key part, or a value that is not valid YAML.
    """
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError(f"Expected an override of the form section.key=value (e.g. search.budget=20), "
                          f"but got {item!r}")
    key, _, text = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"Expected a dotted key before '=' (e.g. train.lr=0.05), but got {item!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"Cannot parse the value of override {item!r} as YAML ({problem}); quote strings "
                          "or fix the brackets") from None
    return key, value


def _read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"Config file {path} does not exist; check the --config path") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"Cannot read config file {path} ({err}); check the --config path") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise ConfigError(f"Config file {path} is not valid YAML ({problem}{where}); fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"Expected config file {path} to hold a mapping of sections (data:, train:, ...), "
                          f"but got {type(data).__name__}")
    return data


def _merge(dst: dict[str, Any], src: dict[str, Any], origins: dict[str, str], *, label: str,
           prefix: str = "") -> None:
    """Deep-merge ``src`` into ``dst``, recording where every leaf came from."""
    for key, value in src.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], value, origins, label=label, prefix=path + ".")
        else:
            dst[key] = value
            origins[path] = label
            if isinstance(value, dict):
                _record(value, origins, label=label, prefix=path + ".")


def _record(src: dict[str, Any], origins: dict[str, str], *, label: str, prefix: str) -> None:
    for key, value in src.items():
        origins[f"{prefix}{key}"] = label
        if isinstance(value, dict):
            _record(value, origins, label=label, prefix=f"{prefix}{key}.")


def _nest(key: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def _build(cls: type[_T], data: Any, *, prefix: str, origins: dict[str, str], problems: list[str]) -> _T:
    """Make ``cls`` from defaults updated by ``data``; every bad key or value goes to ``problems``.

    A field with a bad value keeps its default, so range checks can still run on the others.
    """
    where = lambda path: f" (from {origins[path]})" if path in origins else ""  # noqa: E731
    section = prefix.rstrip(".") or "the top level"
    if not isinstance(data, dict):
        problems.append(f"{section} must be a mapping of keys, got {data!r}{where(prefix.rstrip('.'))}")
        return cls()
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if path in REMOVED_KEYS:
            problems.append(REMOVED_KEYS[path] + where(path))
            continue
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{path}: unknown key{where(path)}{hint}; valid keys of {section}: {', '.join(names)}")
            continue
        hint_type = hints[key]
        if is_dataclass(hint_type):
            kwargs[key] = _build(hint_type, value, prefix=path + ".", origins=origins, problems=problems)
            continue
        ok, converted = conform(value, hint_type)
        if ok:
            kwargs[key] = converted
        else:
            problems.append(f"{path} must be {_describe(hint_type)}, got {value!r}{where(path)}")
    return cls(**kwargs)


def resolve_config(cfg: RunConfig) -> RunConfig:
    """Fill the fields whose None means "take it from elsewhere" (see the dataclasses' docs).

    ``train.batch_size`` and ``supernet.batch_size`` <- ``data.batch_size``; ``train.seed``,
    ``search.seed`` and ``supernet.seed`` <- ``seed``; ``final_epochs`` <- ``train.epochs``;
    ``search.budget`` <- :data:`~s2dnas.config.schema.DEFAULT_BUDGETS` of the strategy;
    ``final_init`` <- ``supernet`` for the ``oneshot`` strategy, else ``inherited``. Values already
    set are kept.
    """
    def filled(section: Any, **derived: Any) -> Any:
        return replace(section, **{k: v for k, v in derived.items() if getattr(section, k) is None})

    train = filled(cfg.train, batch_size=cfg.data.batch_size, seed=cfg.seed)
    supernet = filled(cfg.supernet, batch_size=cfg.data.batch_size, seed=cfg.seed)
    search = filled(cfg.search, seed=cfg.seed, budget=DEFAULT_BUDGETS.get(cfg.search.strategy))
    final_epochs = cfg.final_epochs if cfg.final_epochs is not None else train.epochs
    final_init = cfg.final_init if cfg.final_init is not None else (
        "supernet" if cfg.search.strategy == "oneshot" else "inherited")
    return replace(cfg, train=train, search=search, supernet=supernet, final_epochs=final_epochs,
                   final_init=final_init)


def validate_config(cfg: Any) -> None:
    """Raise :class:`ConfigError` listing every problem of ``cfg`` (a RunConfig or one section).

    Raises:
        ConfigError: with ``problems`` (the list) as an attribute.
    """
    problems = cfg.validate()
    if problems:
        raise _config_error(problems)


def _config_error(problems: list[str]) -> ConfigError:
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    err = ConfigError(f"Invalid configuration ({count}): " + "; ".join(problems)
                      + ". Fix them in the YAML file or with --set key=value")
    err.problems = list(problems)  # type: ignore[attr-defined]
    return err


def load_config(path: str | os.PathLike[str] | None = None,
                overrides: Sequence[str | tuple[str, Any]] = ()) -> RunConfig:
    """Load the resolved, validated config: defaults, then ``path`` (YAML), then ``overrides``.

    Args:
        path: a YAML file of sections (``data:``, ``train:``, ...); None = defaults only.
        overrides: applied in order (the last one wins): ``"section.key=value"`` strings (the
            value parsed as YAML, as ``--set`` gives them) or ``("section.key", value)`` pairs
            with an already-typed value (as command-line flags give them).

    Returns:
        The config, with None-means-derived fields filled by :func:`resolve_config`.

    Raises:
        ConfigError: unreadable or malformed file, malformed override, unknown keys, wrong types,
            or values out of range -- every problem in one message.
    """
    raw: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if path is not None:
        _merge(raw, _read_yaml(path), origins, label=str(path))
    problems: list[str] = []
    for item in overrides:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            (key, value), label = item, "the command line"
        else:
            try:
                key, value = parse_override(item)
            except ConfigError as err:
                problems.append(str(err))
                continue
            label = "--set"
        _merge(raw, _nest(key, value), origins, label=label)
    return _finish(raw, origins, problems)


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Build a resolved, validated config from plain data (defaults for the missing keys).

    Raises:
        ConfigError: every unknown key, wrong type and bad value in one message.
    """
    return _finish(data, {}, [])


def _finish(raw: Any, origins: dict[str, str], problems: list[str]) -> RunConfig:
    cfg = _build(RunConfig, raw, prefix="", origins=origins, problems=problems)
    if not problems:
        cfg = resolve_config(cfg)
    problems += cfg.validate()
    if problems:
        raise _config_error(problems)
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data form of a config dataclass (tuples become lists), as written to YAML."""
    def plain(value: Any) -> Any:
        if is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(cfg)


def dump_config(cfg: RunConfig, path: str | os.PathLike[str]) -> None:
    """Write the resolved config as YAML to ``path`` atomically (``load_config(path)`` reads it back)."""
    text = ("# Resolved s2dnas configuration (defaults <- YAML file <- --set overrides).\n"
            + yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None))
    atomic_write_bytes(Path(path), text.encode("utf-8"))
