import pytest
import torch

from napari_unet.config import ModelConfig
from napari_unet.core.model import UNet


@pytest.mark.parametrize("norm", ["batch", "group", "instance", "none"])
@pytest.mark.parametrize("shape", [(37, 53), (8, 8), (1, 130)])
def test_unet_2d_any_size(norm, shape):
    net = UNet(ModelConfig(depth=3, width=4, norm=norm, class_names=("bg", "a", "b"))).eval()
    with torch.no_grad():
        y = net(torch.randn(2, 1, *shape))
    assert y.shape == (2, 3) + shape
    assert torch.isfinite(y).all()


def test_unet_3d_odd_size_and_channels():
    net = UNet(ModelConfig(ndim=3, depth=2, width=4, in_channels=2)).eval()
    with torch.no_grad():
        y = net(torch.randn(1, 2, 9, 17, 23))
    assert y.shape == (1, 2, 9, 17, 23)


def test_unet_rejects_wrong_rank():
    net = UNet(ModelConfig(depth=2, width=4))
    with pytest.raises(ValueError, match="expected a 4D tensor"):
        net(torch.randn(1, 1, 4, 8, 8))


def test_width_and_depth_change_capacity():
    small = sum(p.numel() for p in UNet(ModelConfig(depth=2, width=4)).parameters())
    big = sum(p.numel() for p in UNet(ModelConfig(depth=3, width=8)).parameters())
    assert big > 4 * small
