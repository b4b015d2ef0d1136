"""An architecture added the way a user adds one: this file and one registry line (`register`).

The model tests and the export test then build, train, save, reload and export it with the others,
and its own settings are read from the [model.toy_conv_gru] table like any architecture's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keras import layers

from pipeline.config import Config
from pipeline.errors import ConfigError

NAME = "toy_conv_gru"


@dataclass(frozen=True)
class ToySettings:
    """[model.toy_conv_gru]: a strided convolution before one GRU layer."""

    kernel: int = 3
    stride: int = 2

    def __post_init__(self) -> None:
        if self.kernel < 1 or self.stride < 1:
            raise ConfigError("model.toy_conv_gru.kernel and stride must be >= 1")


def body(config: Config, x: Any, settings: ToySettings) -> Any:
    x = layers.Conv1D(config.model.units, settings.kernel, strides=settings.stride, padding="same", name="toy_conv")(x)
    return layers.GRU(config.model.units, name="toy_gru")(x)


def register() -> None:
    from pipeline.models.registry import MODELS, ModelSpec

    MODELS[NAME] = ModelSpec("a test's architecture: a strided convolution, then a GRU", body, ToySettings)
