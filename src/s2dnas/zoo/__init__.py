"""Model zoo: registered CIFAR-style builders, torchvision builders and user factories."""
from __future__ import annotations

from s2dnas.zoo import resnet_cifar  # noqa: F401  (registers the builders)
from s2dnas.zoo.registry import list_models, register_model

__all__ = ["list_models", "register_model"]
