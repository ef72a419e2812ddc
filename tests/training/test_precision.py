"""TrainConfig.precision: "bf16" trains under CPU autocast (bfloat16 products), evaluates in float32."""

from __future__ import annotations

from typing import List

import pytest
import torch

from rnnkit.errors import InputError
from rnnkit.training import TrainConfig, Trainer
from rnnkit.training.trainer import LossResult


class Recorder(torch.nn.Module):
    """A linear model that notes, at every forward, whether autocast was on and the dtype of its product."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)
        self.seen: List[tuple] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        self.seen.append((self.training, torch.is_autocast_enabled("cpu"), y.dtype))
        return y


class Batches:
    def __len__(self) -> int:
        return 3

    def batches(self, epoch: int, start: int = 0):
        for i in range(start, 3):
            yield torch.full((2, 4), float(i + 1))


class SquareTask:
    def loss(self, model, batch, state):
        y = model(batch).float()
        return LossResult((y ** 2).sum(), batch.shape[0], batch.shape[0])


@pytest.mark.parametrize("precision,dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_training_forward_runs_in_the_precision_and_evaluation_in_float32(precision, dtype):
    model = Recorder()
    cfg = TrainConfig(max_steps=3, precision=precision, quiet=True, tensorboard=False, lr=1e-3)
    trainer = Trainer(model, SquareTask(), Batches(), cfg, val_data=Batches())
    trainer.fit()
    training = [s for s in model.seen if s[0]]
    evaluation = [s for s in model.seen if not s[0]]
    assert training and all(s[1:] == (precision == "bf16", dtype) for s in training)
    assert evaluation and all(s[1:] == (False, torch.float32) for s in evaluation)
    assert model.linear.weight.dtype == torch.float32  # master weights stay float32


def test_unknown_precision_is_refused():
    with pytest.raises(InputError, match="precision"):
        TrainConfig(max_steps=1, precision="fp16")


@pytest.mark.parametrize("amx,avx512_bf16,cap,expected", [
    (True, False, None, "bf16"), (False, True, None, "bf16"), (False, False, None, "fp32"),
    (True, True, "AVX2", "fp32"), (True, True, "AVX512_CORE", "fp32"), (True, True, "AVX512_CORE_AMX", "bf16"),
])
def test_auto_precision_is_bf16_only_with_bfloat16_units(monkeypatch, amx, avx512_bf16, cap, expected):
    """auto trains in bf16 where the CPU has bfloat16 units oneDNN may use, else in fp32 (emulated bfloat16
    would be slower); the Trainer says what it chose."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    model = Recorder()
    cfg = TrainConfig(max_steps=1, precision="auto", quiet=True, tensorboard=False, lr=1e-3)
    trainer = Trainer(model, SquareTask(), Batches(), cfg)
    assert trainer.precision == expected
    trainer.fit()
    assert model.seen[0][1] == (expected == "bf16")

