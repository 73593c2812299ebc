"""Model zoo: registered CIFAR-style builders, torchvision builders and user factories."""
from __future__ import annotations

from s2dnas.zoo import mobilenetv2_cifar, resnet_cifar, vgg_cifar  # noqa: F401  (registers the builders)
from s2dnas.zoo.factory import create_model
from s2dnas.zoo.registry import list_models, register_model
from s2dnas.zoo.weights import WeightsMeta, list_pretrained

__all__ = ["create_model", "list_models", "register_model", "list_pretrained", "WeightsMeta"]
