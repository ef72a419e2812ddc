"""Recurrent forecasters: many-to-one direct, autoregressive, encoder–decoder; point, Gaussian or quantile heads.

Inputs (batch-first, scaled): history x (B, L, F) whose first C features are the
series values (then observed flags, then calendar covariates), calendar of the
target steps `future` (B, H, K). Output: distribution parameters (B, H, C, P).

    direct          h_L = Encoder(x)                      one vector per window
                    θ = W h_L + b  reshaped (B, H, C, P)   all H steps at once
    autoregressive  one recurrent net, input u_s = [y_s, flags_s, cal_s] predicts y_{s+1}:
                    training: teacher forcing, u over history + the true y_0..y_{H−2}
                    inference: rolled out, each step fed its own point forecast
    seq2seq         state = Encoder(x); decoder input d_k = [ŷ_{k−1}, cal_k], d_0 uses the
                    last observed value; teacher forcing in training, rollout at inference

Heads (P parameters per value):
    point     P = 1, loss Σ (y − ŷ)²
    gaussian  P = 2, (μ, σ = softplus(s) + 1e-3), loss Σ −log N(y; μ, σ)
    quantile  P = Q, loss Σ_q pinball_q(y − ŷ_q)  (quantiles sorted, 0.5 among them: the point forecast)

`ForecastTask.loss` uses teacher forcing while the model trains and the rollout
when it evaluates, so validation loss measures what a forecast will do.

Masked data (config.masked): missing history values enter as 0 with their observed
flag 0; missing targets add nothing to the loss. Teacher forcing feeds a missing
target as 0 with flag 1 (a known simplification; the rollout never sees targets).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..recurrent import Recurrent
from ..checks import check_choice, check_int, check_positive_ints, check_probability
from ..cells.registry import check_cell, make_cell
from ..errors import InputError

MODES = ("direct", "autoregressive", "seq2seq")
HEADS = ("point", "gaussian", "quantile")


@dataclass
class ForecastConfig:
    """Shape of a Forecaster.

    num_series C (forecast targets), num_features F (per history step: C values,
    C observed flags when `masked`, then K calendar features), num_calendar K.
    """

    num_series: int
    num_features: int
    num_calendar: int
    lookback: int
    horizon: int
    mode: str = "direct"
    head: str = "point"
    quantiles: List[float] = field(default_factory=lambda: [0.05, 0.5, 0.95])
    cell: str = "lstm"
    hidden_size: int = 64
    num_layers: int = 1
    dropout: float = 0.0
    masked: bool = False
    teacher_forcing: float = 1.0

    def __post_init__(self) -> None:
        check_positive_ints(self, ("num_series", "num_features", "lookback", "horizon", "hidden_size", "num_layers"))
        check_int("num_calendar", self.num_calendar, minimum=0)
        expected = self.num_series * (2 if self.masked else 1) + self.num_calendar
        if self.num_features != expected:
            raise InputError(f"num_features must be {expected} (series values{', flags' if self.masked else ''} "
                             f"and {self.num_calendar} calendar features); got {self.num_features}")
        check_choice("mode", self.mode, MODES)
        check_choice("head", self.head, HEADS)
        check_cell(self.cell)
        check_probability("dropout", self.dropout)
        check_probability("teacher_forcing", self.teacher_forcing, include_one=True)
        self.quantiles = [float(q) for q in self.quantiles]
        if self.head == "quantile":
            qs = self.quantiles
            if sorted(qs) != qs or len(set(qs)) != len(qs) or not all(0.0 < q < 1.0 for q in qs) or 0.5 not in qs:
                raise InputError(f"quantiles must be increasing, in (0, 1) and include 0.5; got {qs}")

    @property
    def params_per_value(self) -> int:
        return {"point": 1, "gaussian": 2, "quantile": len(self.quantiles)}[self.head]

    def to_dict(self) -> dict:
        return asdict(self)


class Forecaster(nn.Module):
    """See the module docstring. forward(x, future, y=None) -> θ (B, H, C, P).

    With `y` (B, H, C) given and the module training, the autoregressive and
    seq2seq modes use teacher forcing (config.teacher_forcing = 1; a smaller value
    feeds the true value with that probability per step and its own forecast
    otherwise); evaluating, they roll out on their own point forecasts. The direct
    mode ignores `y`.
    """

    def __init__(self, config: ForecastConfig) -> None:
        super().__init__()
        self.config = c = config
        C, P, K = c.num_series, c.params_per_value, c.num_calendar

        def stack(input_size: int) -> Recurrent:
            return Recurrent(lambda size: make_cell(c.cell, size, c.hidden_size), c.num_layers, batch_first=True,
                             dropout=c.dropout, input_size=input_size)

        self.encoder = stack(c.num_features)
        self.drop = nn.Dropout(c.dropout)
        if c.mode == "direct":
            self.head = nn.Linear(self.encoder.output_size, c.horizon * C * P)
        else:
            self.head = nn.Linear(self.encoder.output_size, C * P)
        self.decoder = stack(C + K) if c.mode == "seq2seq" else None

    # -------------------------------------------------------------- pieces
    def _params(self, h: Tensor) -> Tensor:
        """h (..., H_out) → θ (..., C, P) (direct mode: (B, horizon, C, P))."""
        c = self.config
        theta = self.head(self.drop(h))
        if c.mode == "direct":
            return theta.view(h.shape[0], c.horizon, c.num_series, c.params_per_value)
        return theta.view(*h.shape[:-1], c.num_series, c.params_per_value)

    @property
    def point_index(self) -> int:
        """Where the point forecast (mean or median) sits among the P parameters of each value."""
        c = self.config
        return c.quantiles.index(0.5) if c.head == "quantile" else 0

    def point(self, theta: Tensor) -> Tensor:
        """The point forecast (mean or median) of θ (..., C, P) → (..., C)."""
        return theta[..., self.point_index]

    def _ar_input(self, y: Tensor, future_k: Tensor) -> Tensor:
        """The autoregressive input for a step whose value is y (B, C): [y, flags = 1, calendar]."""
        parts = [y]
        if self.config.masked:
            parts.append(torch.ones_like(y))
        parts.append(future_k)
        return torch.cat(parts, dim=-1)

    # -------------------------------------------------------------- forward
    def forward(self, x: Tensor, future: Tensor, y: Optional[Tensor] = None) -> Tensor:
        c = self.config
        if x.dim() != 3 or x.shape[1] != c.lookback or x.shape[2] != c.num_features:
            raise InputError(f"Forecaster expects x of shape (batch, {c.lookback}, {c.num_features}); "
                             f"got {tuple(x.shape)}")
        if future.dim() != 3 or future.shape[1] != c.horizon or future.shape[2] != c.num_calendar:
            raise InputError(f"Forecaster expects future of shape (batch, {c.horizon}, {c.num_calendar}); "
                             f"got {tuple(future.shape)}")
        teacher = y is not None and self.training
        if c.mode == "direct":
            out, _ = self.encoder(x)
            return self._params(out[:, -1])
        p = c.teacher_forcing if teacher else 0.0
        if p < 1.0:
            return self._rollout(x, future, y, p)
        if c.mode == "autoregressive":
            # inputs: history, then the true y_0 .. y_{H-2}; outputs L-1 .. L+H-2 predict y_0 .. y_{H-1}
            steps = [self._ar_input(y[:, k], future[:, k]) for k in range(c.horizon - 1)]
            seq = torch.cat([x] + ([torch.stack(steps, 1)] if steps else []), dim=1)
            out, _ = self.encoder(seq)
            return self._params(out[:, c.lookback - 1:])
        # seq2seq, teacher forcing: decoder inputs are the last observed value, then the true y_0 .. y_{H-2}
        _, state = self.encoder(x)
        prev = torch.cat([x[:, -1:, :c.num_series], y[:, :-1]], dim=1)  # (B, H, C)
        out, _ = self.decoder(torch.cat([prev, future], dim=-1), state)
        return self._params(out)

    def _rollout(self, x: Tensor, future: Tensor, y: Optional[Tensor], p: float) -> Tensor:
        """Step by step: each step is fed the previous step's point forecast, or (with probability p per
        sequence and step, training only) the true value — scheduled-sampling style mixing."""
        c = self.config

        def previous(theta: Tensor, k: int) -> Tensor:  # the value fed for target step k
            pred = self.point(theta)
            if p > 0.0 and y is not None:
                use_true = torch.rand(pred.shape[0], 1, device=pred.device) < p
                return torch.where(use_true, y[:, k], pred)
            return pred

        if c.mode == "autoregressive":
            out, state = self.encoder(x)
            theta = [self._params(out[:, -1])]
            for k in range(c.horizon - 1):
                u = self._ar_input(previous(theta[-1], k), future[:, k]).unsqueeze(1)
                out, state = self.encoder(u, state)
                theta.append(self._params(out[:, -1]))
            return torch.stack(theta, 1)
        _, state = self.encoder(x)
        prev = x[:, -1, :c.num_series]
        theta = []
        for k in range(c.horizon):
            out, state = self.decoder(torch.cat([prev, future[:, k]], dim=-1).unsqueeze(1), state)
            theta.append(self._params(out[:, -1]))
            if k + 1 < c.horizon:
                prev = previous(theta[-1], k)
        return torch.stack(theta, 1)

    # -------------------------------------------------------------- outputs
    def distribution(self, theta: Tensor, level: float = 0.9) -> Tuple[Tensor, Tensor, Tensor]:
        """(point, lower, upper) each (..., C): the central `level` interval (Gaussian: μ ± zσ; quantile:
        the outermost quantiles; point head: lower = upper = point)."""
        c = self.config
        p = self.point(theta)
        if c.head == "gaussian":
            z = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.5 + level / 2)))
            s = gaussian_sigma(theta[..., 1])
            return p, p - z * s, p + z * s
        if c.head == "quantile":
            return p, theta[..., 0], theta[..., -1]
        return p, p, p


def gaussian_sigma(raw: Tensor) -> Tensor:
    """σ = softplus(s) + 1e-3 (a floor keeps the likelihood finite on flat stretches)."""
    return F.softplus(raw) + 1e-3


def forecast_loss(config: ForecastConfig, theta: Tensor, y: Tensor, mask: Tensor) -> Tensor:
    """Summed loss over observed targets. theta (B, H, C, P), y, mask (B, H, C) → scalar."""
    m = mask.to(theta.dtype)
    if config.head == "point":
        per = (theta[..., 0] - y) ** 2
    elif config.head == "gaussian":
        mu, sigma = theta[..., 0], gaussian_sigma(theta[..., 1])
        per = 0.5 * ((y - mu) / sigma) ** 2 + torch.log(sigma) + 0.5 * math.log(2 * math.pi)
    else:
        q = torch.tensor(config.quantiles, dtype=theta.dtype, device=theta.device)
        diff = y.unsqueeze(-1) - theta  # (B, H, C, Q)
        per = torch.maximum(q * diff, (q - 1) * diff).sum(-1)
    return (per * m).sum()


class ForecastTask:
    """Trainer task: summed head loss over observed target values (teacher forcing while training)."""

    def loss(self, model: nn.Module, batch: Dict[str, Tensor], state=None):
        from ..training.trainer import LossResult
        inner = model.module if hasattr(model, "module") else model
        theta = model(batch["x"], batch["future"], batch["y"])
        loss_sum = forecast_loss(inner.config, theta, batch["y"], batch["y_mask"])
        return LossResult(loss_sum, batch["y_mask"].sum(), batch["x"].shape[0], None)
