"""torch's utilities that take a parameter by name, run side by side on torch.nn.X and rnnkit.X.

Each case starts both layers from equal weights, applies one utility to each the same way
(same RNG seed where it draws), then compares forward outputs, final states and the
gradients of input, initial state and every parameter by name, in float64 to 1e-10.
The fast backend must still run where it ran before the utility was applied.
"""

from __future__ import annotations

import warnings
from typing import Callable, Dict, Tuple

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize, parametrizations, prune

import rnnkit
from helpers import assert_close

F64 = torch.float64
#: (name, torch class, rnnkit class, constructor keywords); every layer is 2 layers × 2 directions
CONFIGS = {
    "RNN": (nn.RNN, rnnkit.RNN, {}),
    "LSTM": (nn.LSTM, rnnkit.LSTM, {}),
    "LSTM-proj": (nn.LSTM, rnnkit.LSTM, {"proj_size": 3}),
    "GRU": (nn.GRU, rnnkit.GRU, {}),
}
I, H, T, B = 3, 5, 6, 2


def _pair(config: str) -> Tuple[nn.Module, rnnkit.Recurrent]:
    torch_class, ours_class, kw = CONFIGS[config]
    kw = dict(kw, num_layers=2, bidirectional=True, dtype=F64)
    torch.manual_seed(0)
    reference = torch_class(I, H, **kw)
    ours = ours_class(I, H, **kw)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def _run(layer: nn.Module, seed: int = 1) -> Dict[str, Tensor]:
    """Outputs, final states and gradients (input, initial state, every parameter by name) of a random loss."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, I, dtype=F64, generator=gen, requires_grad=True)
    out_size = (layer.proj_size or H) * 2
    h0 = torch.randn(4, B, layer.proj_size or H, dtype=F64, generator=gen, requires_grad=True)
    two = layer.mode in ("LSTM", "LayerNormLSTM")  # state (h, c)
    state = (h0, torch.randn(4, B, H, dtype=F64, generator=gen, requires_grad=True)) if two else (h0,)
    y, final = layer(x, hx=state if len(state) > 1 else state[0])
    finals = final if isinstance(final, tuple) else (final,)
    loss = (y * torch.randn(T, B, out_size, dtype=F64, generator=gen)).sum() + sum(f.square().sum() for f in finals)
    params = dict(layer.named_parameters())
    grads = torch.autograd.grad(loss, [x, *state, *params.values()])
    result = {"output": y, **{f"final{k}": f for k, f in enumerate(finals)}, "grad.input": grads[0]}
    result.update({f"grad.state{k}": g for k, g in enumerate(grads[1:1 + len(state)])})
    result.update({f"grad.{name}": g for name, g in zip(params, grads[1 + len(state):])})
    return result


def _assert_same(reference: nn.Module, ours: rnnkit.Recurrent, what: str) -> None:
    want, got = _run(reference), _run(ours)
    assert list(got) == list(want), f"{what}: different entries (parameter names or order)"
    for key in want:
        assert_close(got[key], want[key], f"{what}: {key}")


class _Scale(nn.Module):
    """A user parametrization: W -> 0.5 · tanh(W) + W."""

    def forward(self, w: Tensor) -> Tensor:
        return 0.5 * torch.tanh(w) + w


def _setattr(m: nn.Module) -> None:
    m.weight_hh_l0 = nn.Parameter(torch.randn_like(m.weight_hh_l0))


def _prune(m: nn.Module) -> None:
    prune.l1_unstructured(m, "weight_hh_l0", 0.3)
    prune.random_unstructured(m, "bias_ih_l1_reverse", 0.5)


def _old_weight_norm(m: nn.Module) -> None:
    with warnings.catch_warnings():  # torch.nn.utils.weight_norm (forward pre-hook) is deprecated
        warnings.simplefilter("ignore")
        torch.nn.utils.weight_norm(m, "weight_ih_l1")


def _spectral_norm(m: nn.Module) -> None:
    parametrizations.spectral_norm(m, "weight_hh_l1_reverse")
    m.eval()  # in train() torch.nn.RNNBase evaluates a parametrization several times per forward (see below)


def _init_by_name(m: nn.Module) -> None:
    params = dict(m.named_parameters())
    nn.init.orthogonal_(params["weight_hh_l0"])
    nn.init.xavier_uniform_(params["weight_ih_l1_reverse"])
    nn.init.constant_(params["bias_hh_l1"], 0.25)


#: each is applied to both layers after the same torch.manual_seed (several draw: new weights, random
#: pruning, spectral_norm's start vectors, orthogonal's completion of a tall matrix's basis)
UTILITIES: Dict[str, Callable[[nn.Module], None]] = {
    "setattr": _setattr,
    "prune": _prune,
    "weight_norm": lambda m: parametrizations.weight_norm(m, "weight_hh_l0"),
    "old_weight_norm": _old_weight_norm,
    "spectral_norm": _spectral_norm,
    "orthogonal": lambda m: parametrizations.orthogonal(m, "weight_ih_l0"),
    "user_parametrization": lambda m: parametrize.register_parametrization(m, "weight_hh_l1", _Scale()),
    "init_by_name": _init_by_name,
}


def _apply(utility: str, *layers: nn.Module) -> None:
    for m in layers:
        torch.manual_seed(11)
        UTILITIES[utility](m)


@pytest.fixture(scope="module")
def fused_or_none() -> str:
    """What `auto` runs these float64 layers with when nothing is applied to them."""
    _, ours = _pair("LSTM")
    ours(torch.randn(T, B, I, dtype=F64))
    return ours.last_backend


@pytest.mark.parametrize("config", list(CONFIGS))
def test_names_are_torchs(config: str) -> None:
    reference, ours = _pair(config)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in reference.named_parameters()]
    assert list(ours.state_dict()) == list(reference.state_dict())
    assert ours.cells[0].weight_hh is ours.weight_hh_l0  # one copy: the cell reads the layer's
    _assert_same(reference, ours, "untouched")


@pytest.mark.parametrize("utility", list(UTILITIES))
@pytest.mark.parametrize("config", list(CONFIGS))
def test_torch_utility_side_by_side(config: str, utility: str, fused_or_none: str) -> None:
    reference, ours = _pair(config)
    _apply(utility, reference, ours)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in reference.named_parameters()]
    assert list(ours.state_dict()) == list(reference.state_dict())
    _assert_same(reference, ours, f"{config} after {utility}")
    # a parametrized or pruned weight is read once per forward and handed to the kernels: no fall-back
    assert ours.last_backend == fused_or_none
    # what the utility saved loads back into a fresh pair the same way on both sides
    fresh_reference, fresh_ours = _pair(config)
    _apply(utility, fresh_reference, fresh_ours)
    fresh_ours.load_state_dict(reference.state_dict())
    fresh_reference.load_state_dict(reference.state_dict())
    _assert_same(fresh_reference, fresh_ours, f"{config} after {utility}, state_dict loaded")


def test_fast_backend_is_the_fused_one(fused_or_none: str) -> None:
    from rnnkit.backends import extension

    if extension.load() is not None:
        pytest.skip(f"fused kernels unavailable: {extension.load()}")
    assert fused_or_none == "fused"


@pytest.mark.parametrize("config", ["LSTM", "GRU"])
def test_spectral_norm_in_train_mode_reads_the_weight_once(config: str) -> None:
    """In train() each evaluation of spectral_norm runs a power iteration; rnnkit evaluates it once per
    forward, torch.nn.RNNBase several times, so the two agree within parametrize.cached() (one evaluation
    on both sides) and rnnkit advances the power iteration exactly once per forward."""
    reference, ours = _pair(config)
    for m in (reference, ours):
        torch.manual_seed(5)
        parametrizations.spectral_norm(m, "weight_hh_l0")
    with parametrize.cached():
        _assert_same(reference, ours, f"{config} spectral_norm in train()")
    u = ours.parametrizations.weight_hh_l0[0]._u.clone()
    steps = []
    original = ours.parametrizations.weight_hh_l0[0]._power_method

    def counting(*args, **kwargs):
        steps.append(1)
        return original(*args, **kwargs)

    ours.parametrizations.weight_hh_l0[0]._power_method = counting
    ours(torch.randn(T, B, I, dtype=F64))
    assert len(steps) == 1 and not torch.equal(u, ours.parametrizations.weight_hh_l0[0]._u)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_optimizer_param_groups_by_name(config: str) -> None:
    """Groups built from names (no weight decay on biases, a smaller lr for layer 1): equal after 3 steps."""
    reference, ours = _pair(config)

    def optimizer(m: nn.Module) -> torch.optim.Optimizer:
        named = dict(m.named_parameters())
        groups = [{"params": [p for n, p in named.items() if n.startswith("bias")], "weight_decay": 0.0},
                  {"params": [p for n, p in named.items() if n.startswith("weight") and "_l1" in n], "lr": 0.01},
                  {"params": [p for n, p in named.items() if n.startswith("weight") and "_l0" in n]}]
        return torch.optim.AdamW(groups, lr=0.05, weight_decay=0.1)

    for m in (reference, ours):
        opt = optimizer(m)
        for _ in range(3):
            opt.zero_grad()
            y, _ = m(torch.randn(T, B, I, dtype=F64, generator=torch.Generator().manual_seed(7)))
            y.square().sum().backward()
            opt.step()
    for (name, want), (got_name, got) in zip(reference.state_dict().items(), ours.state_dict().items()):
        assert got_name == name
        assert_close(got, want, f"{config} {name} after 3 AdamW steps")


def test_hx_by_keyword_and_extra_keywords() -> None:
    reference, ours = _pair("LSTM")
    x = torch.randn(T, B, I, dtype=F64)
    hx = (torch.randn(4, B, H, dtype=F64), torch.randn(4, B, H, dtype=F64))
    assert_close(ours(x, hx=hx)[0], reference(x, hx=hx)[0], "hx=")
    lengths = torch.tensor([T, 3])
    y, _ = ours(x, hx=hx, lengths=lengths)  # rnnkit's own keywords stay
    assert y[3:, 1].abs().max() == 0


def test_generic_layers_keep_their_cells_names() -> None:
    """Recurrent and rnnkit's own layers hold parameters in their cells; state_dict still uses flat names."""
    torch.manual_seed(0)
    peephole = rnnkit.PeepholeLSTM(I, H)
    assert "cells.0.weight_peephole" in dict(peephole.named_parameters())
    assert "weight_peephole_l0" in peephole.state_dict()
    generic = rnnkit.Recurrent(rnnkit.LSTMCell(I, H))
    assert "cells.0.weight_hh" in dict(generic.named_parameters())
    generic.load_state_dict(nn.LSTM(I, H).state_dict())  # torch's state_dict loads into the generic layer too


@pytest.mark.parametrize("name", ["PeepholeLSTM", "LayerNormLSTM", "SRU", "MinGRU"])
def test_parametrized_cell_of_another_layer_keeps_the_fast_backend(name: str, fused_or_none: str) -> None:
    """weight_norm on a cell's weight (the other layers keep theirs in cells): the kernels read the
    computed weight instead of falling back to the reference loop, with the reference loop's numbers."""
    layers = []
    for backend in ("auto", "reference"):
        torch.manual_seed(0)
        layer = getattr(rnnkit, name)(I, H, num_layers=2, bidirectional=True, dtype=F64, backend=backend)
        parametrizations.weight_norm(layer.cells[1], "weight_ih")
        prune.l1_unstructured(layer.cells[2], "weight_ih", 0.3)
        layers.append(layer)
    fast, reference = layers
    want, got = _run(reference), _run(fast)
    assert list(got) == list(want)
    for key in want:
        assert_close(got[key], want[key], f"{name}: {key}")
    assert fast.last_backend == fused_or_none
