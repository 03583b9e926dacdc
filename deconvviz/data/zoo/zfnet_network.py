"""ZFNet, written from Zeiler & Fergus (2013), Fig. 3.

224x224x3 -> conv1 96@7x7/2 -> 110x110 -> pool 3x3/2 -> 55x55 -> contrast norm
-> conv2 256@5x5/2 -> 26x26 -> pool 3x3/2 -> 13x13 -> contrast norm
-> conv3 384@3x3 -> conv4 384@3x3 -> conv5 256@3x3 (13x13) -> pool 3x3/2 -> 6x6x256
-> fc6 4096 -> fc7 4096 -> fc8 1000.  62,357,608 parameters.

Pools use Caffe's ceil mode, which gives the paper's 55, 13 and 6. The adaptive average pool
before fc6 is the identity at 224x224 (as in torchvision's AlexNet) and lets other input
sizes reach the classifier. No public ImageNet weights exist.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional

from torch import Tensor, nn

__all__ = ["ZFNet", "zfnet"]


class ZFNet(nn.Module):
    """The network of Zeiler & Fergus (2013), Fig. 3."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()

        def norm() -> nn.Module:
            return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)

        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, 96, kernel_size=7, stride=2, padding=1)),
            ("relu1", nn.ReLU(inplace=True)),
            ("pool1", nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)),
            ("norm1", norm()),
            ("conv2", nn.Conv2d(96, 256, kernel_size=5, stride=2)),
            ("relu2", nn.ReLU(inplace=True)),
            ("pool2", nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)),
            ("norm2", norm()),
            ("conv3", nn.Conv2d(256, 384, kernel_size=3, padding=1)),
            ("relu3", nn.ReLU(inplace=True)),
            ("conv4", nn.Conv2d(384, 384, kernel_size=3, padding=1)),
            ("relu4", nn.ReLU(inplace=True)),
            ("conv5", nn.Conv2d(384, 256, kernel_size=3, padding=1)),
            ("relu5", nn.ReLU(inplace=True)),
            ("pool5", nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)),
        ]))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(OrderedDict([
            ("fc6", nn.Linear(256 * 6 * 6, 4096)),
            ("relu6", nn.ReLU(inplace=True)),
            ("drop6", nn.Dropout(dropout)),
            ("fc7", nn.Linear(4096, 4096)),
            ("relu7", nn.ReLU(inplace=True)),
            ("drop7", nn.Dropout(dropout)),
            ("fc8", nn.Linear(4096, num_classes)),
        ]))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # The paper initialises weights to 1e-2 and biases to 0.
                nn.init.normal_(m.weight, std=1e-2)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=1e-2)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = x.flatten(1)
        return self.classifier(x)


def zfnet(weights: Optional[object] = None, num_classes: int = 1000) -> ZFNet:
    if weights is not None:
        raise ValueError("ZFNet has no torchvision weights")
    return ZFNet(num_classes=num_classes)
