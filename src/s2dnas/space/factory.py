"""Build a :class:`~s2dnas.space.Space` from the ``space`` section of the config: the one place that does.

Example:
    >>> from s2dnas.config import SpaceConfig
    >>> from s2dnas.zoo import create_model
    >>> model = create_model("resnet20", num_classes=10, in_channels=1)
    >>> space = build_space(model, config=SpaceConfig(num_stages=2), input_shape=(1, 16, 16))
    >>> space.num_stages, space_config(space) == SpaceConfig(num_stages=2)
    (2, True)
"""
from __future__ import annotations

from torch import nn

from s2dnas.config import SpaceConfig
from s2dnas.space.space import Space

__all__ = ["build_space", "space_config"]


def build_space(model: nn.Module, *, config: SpaceConfig, input_shape: tuple[int, int, int],
                model_name: str | None = None) -> Space:
    """The split/concat space of ``model`` with the options of ``config``.

    Args:
        model: the trained base CNN.
        config: number of stages, ratio grid, groups, channel importance and channel multiple.
        input_shape: ``(C, H, W)`` of one input.
        model_name: recorded in architectures.
    """
    return Space(model, input_shape=input_shape, num_stages=config.num_stages, ratio_grid=config.ratio_grid,
                 groups=config.groups, importance=config.importance, channel_multiple=config.channel_multiple,
                 model_name=model_name)


def space_config(space: Space) -> SpaceConfig:
    """The options ``space`` was built with, as a config section (``build_space``'s inverse)."""
    return SpaceConfig(num_stages=space.num_stages, ratio_grid=space.ratio_grid, groups=space.groups,
                       importance=space.importance, channel_multiple=space.channel_multiple)
