"""Image captioning with soft attention (Xu et al. 2015, "Show, Attend and Tell") on any rnnkit cell.

Encoder: a small CNN written here (or a user's backbone, see `CaptionModel`) gives a
grid of L = h·w feature vectors:

    a = CNN(image)                          (B, L, F)
    s_0 = tanh(W_init,k mean_i a_i + b)     every state tensor k of the cell, from the mean feature

Decoder step t (y_{t−1} the previous word, q_{t−1} the cell's first state tensor):

    e_ti = v^T tanh(W_a a_i + W_q q_{t−1})  α_t = softmax_i(e_t)        (B, L)   "bahdanau"
           (attention "none": α_ti = 1/L, the no-attention baseline: the mean feature every step)
    β_t  = σ(w_β q_{t−1} + b_β)                                         (B, 1)   gating scalar
    ẑ_t  = β_t · Σ_i α_ti a_i                                           (B, F)
    y_t, s_t = cell([E y_{t−1}; ẑ_t], s_{t−1})                          (B, H)
    logits_t = W_o dropout(E y_{t−1} + L_h y_t + L_z ẑ_t)               (B, V)   deep output

Loss (`CaptionTask`): cross-entropy of the caption tokens plus the doubly stochastic
regularisation λ Σ_i (1 − Σ_t α_ti)² (each location attended about once in total).
Training feeds the gold previous word with probability ε_i (teacher forcing when
ε = 1; scheduled sampling, Bengio et al. 2015, otherwise: the model's own sampled word).
Decoding reuses rnnkit.models.decoding (greedy and beam search; beam 1 = greedy).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..data.captions import BOS, EOS, PAD
from .._optional import pyplot, require
from ..training.trainer import LossResult
from .attention import Attention
from ..checks import check_choice, check_positive_ints, check_probability
from ..cells.registry import check_cell, make_cell
from .decoding import Hypothesis, beam_search, greedy_search
from .scheduled_sampling import SamplingSchedule, feed_previous
from ..errors import InputError

CAPTION_ATTENTIONS = ("bahdanau", "none")


@dataclass
class CaptionConfig:
    vocab_size: int
    channels: int = 1
    image_size: int = 60
    cnn_width: int = 16  # channels of the first conv block; doubled per block
    cnn_blocks: int = 3  # conv-ReLU-pool blocks: the grid is image_size / 2^blocks per side
    feature_size: int = 0  # F; 0: the CNN's last width (set from a backbone's channels otherwise)
    cell: str = "lstm"
    embedding_size: int = 64
    hidden_size: int = 128
    attention: str = "bahdanau"
    attention_size: int = 64
    dropout: float = 0.1
    max_len: int = 16

    def __post_init__(self) -> None:
        check_positive_ints(self, ("vocab_size", "channels", "image_size", "cnn_width", "cnn_blocks",
                                   "embedding_size", "hidden_size", "attention_size", "max_len"), owner="CaptionConfig")
        check_cell(self.cell, owner="CaptionConfig")
        check_choice("attention", self.attention, CAPTION_ATTENTIONS, owner="CaptionConfig")
        if self.image_size >> self.cnn_blocks < 1:
            raise InputError(f"CaptionConfig: {self.cnn_blocks} pooling blocks leave no grid of a "
                             f"{self.image_size}-pixel image")
        check_probability("dropout", self.dropout, owner="CaptionConfig")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class SmallCNN(nn.Module):
    """blocks × (conv3×3-ReLU-maxpool2), widths w, 2w, 4w…: (B, C, S, S) -> (B, F, S/2^n, S/2^n)."""

    def __init__(self, channels: int, width: int, blocks: int) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        c = channels
        for k in range(blocks):
            w = width * 2 ** k
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c = w
        self.net = nn.Sequential(*layers)
        self.out_channels = c

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class CaptionModel(nn.Module):
    """CNN encoder + attention decoder on any rnnkit cell (see the module docstring).

    backbone: optional nn.Module (e.g. a torchvision/timm trunk) mapping (B, C, S, S)
    to a feature map (B, F, h, w); set config.feature_size = F. It replaces the small
    CNN, is trained with the decoder unless you freeze it, and is not described by the
    checkpoint's JSON: rebuild it the same way before loading the weights.
    """

    def __init__(self, config: CaptionConfig, backbone: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.config = c = config
        if backbone is None:
            self.encoder: nn.Module = SmallCNN(c.channels, c.cnn_width, c.cnn_blocks)
            F_ = self.encoder.out_channels
            if c.feature_size and c.feature_size != F_:
                raise InputError(f"CaptionConfig: feature_size {c.feature_size} disagrees with the CNN's {F_}")
        else:
            if not c.feature_size:
                raise InputError("CaptionModel: with a backbone, set config.feature_size to its output channels")
            self.encoder, F_ = backbone, c.feature_size
        self.feature_size = F_
        self.embed = nn.Embedding(c.vocab_size, c.embedding_size, padding_idx=PAD)
        self.cell = make_cell(c.cell, c.embedding_size + F_, c.hidden_size)
        self.init_state = nn.ModuleList(nn.Linear(F_, s) for s in self.cell.state_sizes)
        self.attention = Attention("bahdanau", self.cell.state_sizes[0], F_, c.attention_size) \
            if c.attention == "bahdanau" else None
        self.beta = nn.Linear(self.cell.state_sizes[0], 1)
        self.out_h = nn.Linear(self.cell.output_size, c.embedding_size)
        self.out_z = nn.Linear(F_, c.embedding_size)
        self.out = nn.Linear(c.embedding_size, c.vocab_size)
        self.drop = nn.Dropout(c.dropout)
        #: training batches seen (drives scheduled sampling; saved with the weights, so a resumed run continues it)
        self.register_buffer("train_batches", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------ encoder
    def check_images(self, images: Tensor) -> None:
        c = self.config
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != c.channels:
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise InputError(f"CaptionModel expects images of shape (batch, {c.channels}, height, width); got {got}")

    def encode(self, images: Tensor) -> Dict[str, Any]:
        """Decoder state at t = 0: {"state": cell state tuple, "memory": (B, L, F), "keys": attention keys}."""
        self.check_images(images)
        fmap = self.encoder(images)  # (B, F, h, w)
        memory = fmap.flatten(2).transpose(1, 2)  # (B, L, F)
        mean = memory.mean(1)
        state = tuple(torch.tanh(lin(mean)) for lin in self.init_state)
        keys = self.attention.keys(memory) if self.attention is not None else memory[:, :0]
        return {"state": state, "memory": memory, "keys": keys}

    # ------------------------------------------------------------ decoder
    def step(self, tokens: Tensor, state: Dict[str, Any]) -> Tuple[Tensor, Dict[str, Any], Tensor]:
        """One decoder step: tokens (N,) -> (logits (N, V), new state, attention α (N, L))."""
        memory, cell_state = state["memory"], state["state"]
        q = cell_state[0]
        if self.attention is not None:
            mask = torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)
            context, alpha = self.attention(q, state["keys"], memory, mask)
        else:
            alpha = memory.new_full(memory.shape[:2], 1.0 / memory.shape[1])
            context = memory.mean(1)
        z = torch.sigmoid(self.beta(q)) * context  # (N, F)
        e = self.embed(tokens)
        y, new = self.cell.step(self.cell.project(torch.cat([e, z], dim=-1)), self.cell.pack_state(cell_state))
        logits = self.out(self.drop(e + self.out_h(y) + self.out_z(z)))
        return logits, {**state, "state": self.cell.unpack_state(new)}, alpha

    def forward(self, images: Tensor, tokens: Tensor, teacher_forcing: float = 1.0) -> Tuple[Tensor, Tensor]:
        """(logits (B, T, V) for tokens[:, 1:], attention (B, T, L)); tokens (B, T+1) start with <bos>.

        With teacher_forcing < 1, each step after the first feeds the gold previous word with
        that probability, else a word sampled from the model's previous distribution (detached);
        padding is always fed as padding (see scheduled_sampling.feed_previous).
        """
        check_probability("teacher_forcing", teacher_forcing, include_one=True)
        state = self.encode(images)
        T = tokens.shape[1] - 1
        inp = tokens[:, 0]
        logits, alphas = [], []
        for t in range(T):
            out, state, alpha = self.step(inp, state)
            logits.append(out)
            alphas.append(alpha)
            inp = tokens[:, t + 1]
            if teacher_forcing < 1.0 and t + 1 < T:
                inp = feed_previous(inp, out, teacher_forcing, pad_id=PAD)
        return torch.stack(logits, 1), torch.stack(alphas, 1)

    @torch.no_grad()
    def generate(self, images: Tensor, *, beam_size: int = 1, max_len: Optional[int] = None,
                 return_attention: bool = True) -> List[Hypothesis]:
        """Best caption per image (token ids without <bos>/<eos>, score, attention (len, L))."""
        state = self.encode(images)
        B = images.shape[0]
        n = max_len or self.config.max_len
        if beam_size == 1:
            hyps = greedy_search(self.step, state, B, bos=BOS, eos=EOS, max_len=n, return_attention=return_attention)
        else:
            hyps = beam_search(self.step, state, B, bos=BOS, eos=EOS, max_len=n, beam_size=beam_size,
                               return_attention=return_attention)
        return [h[0] for h in hyps]


def caption_metrics(hypotheses: List[str], references: List[List[str]],
                    truths: Optional[List[Tuple[Tuple[int, ...], str]]] = None) -> Dict[str, float]:
    """Corpus BLEU-1..4 and chrF (sacrebleu, multi-reference) and, for digit scenes, exact match.

    hypotheses[i] is scored against every caption in references[i] (tokenized text).
    truths[i] = (digits in reading order, orientation): `digits_exact` counts captions naming
    exactly the right digits (as a multiset), `layout_exact` those also in the right order and
    orientation (see data.captions.parse_caption; an unparsable caption counts as wrong).
    """
    metrics = require("sacrebleu.metrics", extra="vision", purpose="caption BLEU and chrF")
    BLEU, CHRF = metrics.BLEU, metrics.CHRF

    from ..data.captions import parse_caption

    n_refs = max(len(r) for r in references)
    refs = [[r[k] if k < len(r) else r[0] for r in references] for k in range(n_refs)]
    out: Dict[str, float] = {}
    for n in range(1, 5):
        out[f"bleu{n}"] = BLEU(max_ngram_order=n, tokenize="none", effective_order=False).corpus_score(
            hypotheses, refs).score
    out["chrf"] = CHRF().corpus_score(hypotheses, refs).score
    if truths is not None:
        parsed = [parse_caption(h) for h in hypotheses]
        out["digits_exact"] = 100.0 * sum(p is not None and sorted(p[0]) == sorted(t[0])
                                          for p, t in zip(parsed, truths)) / len(truths)
        out["layout_exact"] = 100.0 * sum(p is not None and p[0] == t[0] and p[1] == t[1]
                                          for p, t in zip(parsed, truths)) / len(truths)
        out["parsable"] = 100.0 * sum(p is not None for p in parsed) / len(truths)
    return out


def plot_attention(path, images: List[Tensor], words: List[List[str]], alphas: List[Optional[Tensor]],
                   titles: Optional[List[str]] = None) -> None:
    """One row per image: the image, then one panel per generated word with its attention map α_t
    upsampled over the image (the last panel is <eos> when α has one more row than words).

    images[k] (C, S, S) in [0, 1]; alphas[k] (steps, L) with L = h·w a square grid, or None.
    """
    import math

    plt = pyplot(extra="vision", purpose="the caption figure")

    rows = len(images)
    panels = [["(image)"] + w + (["<eos>"] if a is not None and a.shape[0] > len(w) else [])
              for w, a in zip(words, alphas)]
    cols = max(len(p) for p in panels)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.55 * rows), squeeze=False)
    for r in range(rows):
        img = images[r].detach().cpu()
        shown = (img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)).numpy()
        alpha = alphas[r]
        g = int(round(math.sqrt(alpha.shape[-1]))) if alpha is not None else 0
        for k in range(cols):
            ax = axes[r][k]
            ax.axis("off")
            if k >= len(panels[r]):
                continue
            ax.imshow(shown, cmap="gray" if img.shape[0] == 1 else None, vmin=0, vmax=1)
            if k > 0 and alpha is not None and g * g == alpha.shape[-1]:
                a = alpha[k - 1].reshape(1, 1, g, g).float()
                up = F.interpolate(a, size=img.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
                # one colour scale per image (0 .. its largest weight): a flat map must look flat
                ax.imshow(up.numpy(), cmap="inferno", alpha=0.55, vmin=0.0, vmax=float(alpha.max()))
            ax.set_title(panels[r][k], fontsize=8, pad=2)
        if titles:
            axes[r][0].text(0, -0.35, titles[r], transform=axes[r][0].transAxes, fontsize=8, ha="left")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.02, wspace=0.05, hspace=0.75)
    fig.savefig(path, dpi=80)
    plt.close(fig)


class CaptionTask:
    """Cross-entropy of the caption tokens (padding skipped) + λ · doubly stochastic attention penalty.

    schedule: scheduled sampling's ε_i of i = the model's `train_batches` counter.
    """

    def __init__(self, *, alpha_c: float = 0.02, schedule: Optional[SamplingSchedule] = None) -> None:
        if alpha_c < 0:
            raise InputError(f"alpha_c (doubly stochastic regularisation) must be >= 0; got {alpha_c}")
        self.alpha_c = alpha_c
        self.schedule = schedule or SamplingSchedule()

    def loss(self, model: nn.Module, batch: Dict[str, Tensor], state: Any) -> LossResult:
        core = model.module if hasattr(model, "module") else model
        tokens = batch["tokens"]
        ratio = 1.0
        if model.training:
            ratio = self.schedule(int(core.train_batches))
            core.train_batches += 1
        logits, alpha = model(batch["images"], tokens, teacher_forcing=ratio)
        target = tokens[:, 1:]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), ignore_index=PAD,
                             reduction="sum")
        real = (target != PAD)
        loss = ce
        if model.training and self.alpha_c and core.attention is not None:
            total = (alpha * real.unsqueeze(-1)).sum(1)  # (B, L) attention each location got over the caption
            loss = loss + self.alpha_c * ((1.0 - total) ** 2).sum()
        return LossResult(loss, int(real.sum()), tokens.shape[0])

    def eval_metrics(self, loss: float) -> Dict[str, float]:
        import math
        return {"ppl": math.exp(min(loss, 50.0))}
