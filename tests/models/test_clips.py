"""Clip classifiers: the LRCN reads frames in order (any nn.Module as its frame encoder), the single-frame
baseline cannot, the ConvLSTM is sized like the LRCN, and each learns a batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnkit.errors import InputError
from rnnkit.models.clips import (CLIP_MODELS, LRCN, ClipConfig, ClipTask, SingleFrameCNN, accuracy,
                                 build_clip_model, count_parameters)

from helpers import fit_losses

SMALL = dict(frame_size=16, num_classes=4, stem_channels=4, feature_size=8, hidden_size=8)


def clips(T: int = 5, B: int = 3, S: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(T, B, 1, S, S, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("model", CLIP_MODELS)
def test_logits_per_clip_and_order(model):
    torch.manual_seed(0)
    net = build_clip_model(ClipConfig(model=model, **SMALL)).eval()
    x = clips()
    z = net(x)
    assert z.shape == (3, 4)
    reordered = net(x.flip(0))  # the same frames played backwards
    if model == "single_frame":
        assert torch.allclose(reordered, z, atol=1e-6)  # it sees the mean frame: no order, no direction
    else:
        assert not torch.allclose(reordered, z, atol=1e-4)


@pytest.mark.parametrize("sizes", [SMALL, dict(SMALL, feature_size=32, hidden_size=32), {}])
def test_the_convlstm_is_sized_like_the_lrcn(sizes):
    config = ClipConfig(**sizes)
    lrcn = count_parameters(build_clip_model(config))
    hc = config.convlstm_channels

    def gap(channels: int) -> int:
        return abs(count_parameters(build_clip_model(ClipConfig(**sizes, model="convlstm",
                                                                convlstm_channels=channels))) - lrcn)

    assert gap(hc) <= min(gap(hc - 1), gap(hc + 1))  # the nearest size there is
    if not sizes:  # at the default sizes, within 5 %
        assert gap(hc) / lrcn < 0.05


def test_any_module_encodes_the_frames():
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, 6), nn.Tanh())  # what a user brings
    for net in (LRCN(encoder, 6, 3, cell="gru", hidden_size=5), SingleFrameCNN(encoder, 6, 3)):
        assert net(clips()).shape == (3, 3)
    with pytest.raises(InputError, match="cell"):
        LRCN(encoder, 6, 3, cell="rnn")


@pytest.mark.parametrize("model", CLIP_MODELS)
def test_each_model_fits_a_batch(model):
    torch.manual_seed(0)
    net = build_clip_model(ClipConfig(model=model, **SMALL))
    batch = {"frames": clips(T=3, B=4), "labels": torch.tensor([0, 1, 2, 3])}
    losses = fit_losses(net, ClipTask(), batch, steps=40, lr=3e-2)
    assert losses[-1] < 0.2 * losses[0]
    assert accuracy(net, [batch])[0] == 1.0


@pytest.mark.parametrize("changes,needle", [
    (dict(model="rnn"), "model"), (dict(cell="sru"), "cell"), (dict(num_classes=1), "num_classes"),
    (dict(feature_size=0), "feature_size"), (dict(convlstm_channels=0), "convlstm_channels"),
])
def test_bad_configs_name_the_field(changes, needle):
    with pytest.raises(InputError, match=needle):
        ClipConfig(**{**SMALL, **changes})
