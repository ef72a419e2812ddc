"""Encoder–decoder (seq2seq) with attention, and its training task.

Encoder (any rnnkit cell, stacked, optionally bidirectional; D directions):

    e_s          = Embed_src(x_s)                          (B, S, E)
    m_s, state   = Recurrent(cell, lengths)(e_s)           (B, S, M)   M = D·hidden_size
                   (hidden_size per direction, as in torch.nn; the decoder's cells have M units)

Bridge (encoder final state → decoder initial state):

    "none"     zeros
    "copy"     layer l's final state (both directions concatenated); needs the same
               cell kind and number of layers on both sides
    "learned"  tanh(W [top layer's final state tensors, both directions] + b), split
               over every decoder layer and state tensor

Decoder, one step t (any cell, stacked), y_{t-1} the previous target token:

    "none"      x_t = Embed_tgt(y_{t-1});            h_t = cells(x_t);  o_t = h_t
    "bahdanau"  c_t, a_t = Attn(h_{t-1}, m);  x_t = [Embed(y_{t-1}); c_t];  h_t = cells(x_t)
                o_t = tanh(W_c [c_t; h_t])
    "dot" /     x_t = [Embed(y_{t-1}); o_{t-1}] (input feeding) or Embed(y_{t-1})
    "general"   h_t = cells(x_t);  c_t, a_t = Attn(h_t, m);  o_t = tanh(W_c [c_t; h_t])
    logits_t    = W_o dropout(o_t) + b_o                   (B, V)

Padded source positions get attention weight exactly 0. Without attention the
decoder sees the source only through the bridge (the fixed-size bottleneck c of
Sutskever et al. 2014); bridge "none" with attention "none" is rejected.

Training (`Seq2SeqTask`): teacher forcing, or scheduled sampling (Bengio et al.
2015): at each target position after the first, the gold previous token is fed
with probability ε_i (a `SamplingSchedule` of the optimizer step i), otherwise a
token sampled from the model's own previous output distribution (detached).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..recurrent import Recurrent
from .attention import ATTENTIONS, Attention
from ..checks import check_choice, check_int, check_positive_ints, check_probability
from ..cells.registry import check_cell, make_cell
from .decoding import Hypothesis, beam_search, greedy_search, sample_search
from .scheduled_sampling import SCHEDULES, SamplingSchedule, feed_previous  # noqa: F401 (SCHEDULES: its old home)
from ..errors import InputError

BRIDGES = ("none", "copy", "learned")


@dataclass
class Seq2SeqConfig:
    """Shape of a Seq2Seq model. Token ids pad/bos/eos are the tokenizer's (SentencePiece: 0, 2, 3).

    hidden_size is per direction of each encoder layer (torch.nn's meaning); the decoder's cells have
    `decoder_size` = D·hidden_size units, the width of the encoder's output.
    """

    source_vocab_size: int
    target_vocab_size: int
    cell: str = "lstm"
    encoder_cell: Optional[str] = None  # None: the same as `cell`
    embedding_size: int = 128
    hidden_size: int = 128  # per direction of each encoder layer
    num_layers: int = 1
    decoder_layers: Optional[int] = None  # None: num_layers
    bidirectional: bool = True
    bridge: str = "learned"
    attention: str = "bahdanau"
    attention_size: int = 0  # additive attention's width; 0: decoder_size
    input_feeding: bool = True  # Luong attention only
    dropout: float = 0.1
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3
    max_source_len: int = 48  # tokens, the end token included
    max_target_len: int = 48

    def __post_init__(self) -> None:
        check_positive_ints(self, ("source_vocab_size", "target_vocab_size", "embedding_size", "hidden_size",
                                   "num_layers", "max_source_len", "max_target_len"))
        check_int("decoder_layers", self.decoder_layers, allow_none=True)
        check_cell(self.cell)
        if self.encoder_cell is not None:
            check_cell(self.encoder_cell, setting="encoder_cell")
        check_choice("bridge", self.bridge, BRIDGES)
        check_choice("attention", self.attention, ATTENTIONS)
        if self.attention == "none" and self.bridge == "none":
            raise InputError("attention 'none' with bridge 'none' gives the decoder no view of the source; "
                             "use bridge 'copy' or 'learned'")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"dropout must be in [0, 1); got {self.dropout}")
        if self.attention_size < 0:
            raise InputError(f"attention_size must be >= 0; got {self.attention_size}")

    @property
    def n_decoder_layers(self) -> int:
        return self.decoder_layers or self.num_layers

    @property
    def decoder_size(self) -> int:
        """Units of each decoder cell: the encoder's output width, D·hidden_size."""
        return self.hidden_size * (2 if self.bidirectional else 1)

    @property
    def special_ids(self) -> Dict[str, int]:
        """pad_id, bos_id, eos_id: what batching (`rnnkit.data.pairs.collate`) needs with this model."""
        return dict(pad_id=self.pad_id, bos_id=self.bos_id, eos_id=self.eos_id)

    @property
    def uses_input_feeding(self) -> bool:
        return self.input_feeding and self.attention in ("dot", "general")

    def to_dict(self) -> dict:
        return asdict(self)


class Seq2Seq(nn.Module):
    """Recurrent encoder–decoder; see the module docstring for the equations.

    forward(source (B, S), source_lengths (B,), target_in (B, T), teacher_forcing=1.0)
        -> (logits (B, T, V_tgt), attention (B, T, S) or None)
    `target_in` is bos followed by the target tokens (right-padded); position t
    predicts target token t (the last one: eos).
    """

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = c = config
        D = 2 if c.bidirectional else 1
        enc_cell = c.encoder_cell or c.cell
        self.source_embedding = nn.Embedding(c.source_vocab_size, c.embedding_size, padding_idx=c.pad_id)
        self.target_embedding = nn.Embedding(c.target_vocab_size, c.embedding_size, padding_idx=c.pad_id)
        self.encoder = Recurrent(lambda size: make_cell(enc_cell, size, c.hidden_size), c.num_layers,
                                 bidirectional=c.bidirectional, batch_first=True, dropout=c.dropout,
                                 input_size=c.embedding_size)
        M = self.encoder.output_size * D  # memory width
        self.memory_size = M
        H = c.decoder_size
        first_in = c.embedding_size + (M if c.attention == "bahdanau" else 0) + (H if c.uses_input_feeding else 0)
        self.decoder_cells = nn.ModuleList(
            [make_cell(c.cell, first_in if l == 0 else self._out_size_of(c.cell, H), H)
             for l in range(c.n_decoder_layers)])
        top = self.decoder_cells[-1]
        self.decoder_output_size = top.output_size
        self.attention = (Attention(c.attention, top.output_size, M, c.attention_size)
                          if c.attention != "none" else None)
        self.combine = nn.Linear(M + top.output_size, H) if self.attention is not None else None
        out_width = H if self.attention is not None else top.output_size
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(out_width, c.target_vocab_size)
        enc_sizes = self.encoder.cells[0].state_sizes
        dec_sizes = self.decoder_cells[0].state_sizes
        if c.bridge == "copy":
            if c.n_decoder_layers != c.num_layers or tuple(D * s for s in enc_sizes) != tuple(dec_sizes):
                raise InputError(f"bridge 'copy' needs matching state shapes: the encoder gives {c.num_layers} "
                                 f"layer(s) of {tuple(D * s for s in enc_sizes)}, the decoder has "
                                 f"{c.n_decoder_layers} of {tuple(dec_sizes)}; use bridge 'learned'")
            self.bridge = None
        elif c.bridge == "learned":
            self.bridge = nn.Linear(D * sum(enc_sizes), c.n_decoder_layers * sum(dec_sizes))
        else:
            self.bridge = None

    @staticmethod
    def _out_size_of(cell: str, hidden: int) -> int:
        return make_cell(cell, 1, hidden).output_size

    # ------------------------------------------------------------- encoder
    def source_mask(self, source_lengths: Tensor, S: int) -> Tensor:
        """(B, S) True on real source positions."""
        return torch.arange(S, device=source_lengths.device).unsqueeze(0) < source_lengths.unsqueeze(1)

    def encode(self, source: Tensor, source_lengths: Tensor) -> Dict[str, Any]:
        """Run the encoder; returns the decoder's initial state (a dict of tensors with batch first).

        source: (B, S) int64, right-padded; source_lengths: (B,), 1 <= lengths <= S.
        """
        c = self.config
        if source.dim() != 2:
            raise InputError(f"Seq2Seq expects source of shape (batch, time); got {tuple(source.shape)}")
        B, S = source.shape
        lengths = source_lengths.to(source.device)
        if int(lengths.max()) > c.max_source_len:
            raise InputError(f"Seq2Seq: a source has {int(lengths.max())} tokens; this model accepts at most "
                             f"{c.max_source_len} (max_source_len)")
        memory, final = self.encoder(self.drop(self.source_embedding(source)), lengths=lengths.cpu())  # (B, S, M)
        mask = self.source_mask(lengths, S)
        layers = self._bridge(final, B, memory)
        state: Dict[str, Any] = {"layers": layers, "memory": memory, "mask": mask}
        if self.attention is not None:
            state["keys"] = self.attention.keys(memory)
        top_cell = self.decoder_cells[-1]
        top_state = top_cell.unpack_state(layers[-1])
        # Bahdanau's first query is the decoder's initial output; input feeding starts from zeros
        state["prev"] = top_state[0] if top_cell.outputs_state else memory.new_zeros(B, top_cell.output_size)
        if self.config.uses_input_feeding:
            state["feed"] = memory.new_zeros(B, self.config.decoder_size)
        return state

    def _bridge(self, final: Any, B: int, memory: Tensor) -> Tuple[Any, ...]:
        c = self.config
        D = 2 if c.bidirectional else 1
        enc_parts = self.encoder.cells[0].unpack_state(final)  # each (L·D, B, S_k)
        cells = self.decoder_cells
        if c.bridge == "none":
            return tuple(cell.initial_state(B, device=memory.device, dtype=memory.dtype) for cell in cells)
        if c.bridge == "copy":
            per_layer = [p.view(c.num_layers, D, B, -1).permute(0, 2, 1, 3).reshape(c.num_layers, B, -1)
                         for p in enc_parts]  # (L, B, D·S_k)
            return tuple(cells[l].pack_state([p[l] for p in per_layer]) for l in range(len(cells)))
        top = torch.cat([p.view(c.num_layers, D, B, -1)[-1].permute(1, 0, 2).reshape(B, -1) for p in enc_parts],
                        -1)  # (B, D·ΣS_k): the top layer, both directions
        flat = torch.tanh(self.bridge(top))  # (B, L_dec·ΣS_dec)
        out, i = [], 0
        for cell in cells:
            parts = []
            for size in cell.state_sizes:
                parts.append(flat[:, i:i + size])
                i += size
            out.append(cell.pack_state(parts))
        return tuple(out)

    # ------------------------------------------------------------- decoder
    def step(self, tokens: Tensor, state: Dict[str, Any]) -> Tuple[Tensor, Dict[str, Any], Optional[Tensor]]:
        """One decoder step: tokens (B,) -> (logits (B, V), new state, attention weights (B, S) or None).

        This is the `step` function of `rnnkit.models.decoding`.
        """
        out, new, weights = self._advance(tokens, state)
        return self.head(self.drop(out)), new, weights

    def _advance(self, tokens: Tensor, state: Dict[str, Any]) -> Tuple[Tensor, Dict[str, Any], Optional[Tensor]]:
        """One decoder step up to o_t (B, H), before the output layer."""
        c = self.config
        x = self.drop(self.target_embedding(tokens))  # (B, E)
        weights = context = None
        if c.attention == "bahdanau":
            context, weights = self.attention(state["prev"], state["keys"], state["memory"], state["mask"])
            x = torch.cat([x, context], -1)
        elif c.uses_input_feeding:
            x = torch.cat([x, state["feed"]], -1)
        new_layers = []
        for l, cell in enumerate(self.decoder_cells):
            y, s = cell(x, state["layers"][l])
            new_layers.append(s)
            x = self.drop(y) if l + 1 < len(self.decoder_cells) else y
        top = x  # (B, O)
        new = dict(state)
        new["layers"] = tuple(new_layers)
        new["prev"] = top
        if self.attention is not None:
            if c.attention != "bahdanau":
                context, weights = self.attention(top, state["keys"], state["memory"], state["mask"])
            out = torch.tanh(self.combine(torch.cat([context, top], -1)))  # (B, H)
            if c.uses_input_feeding:
                new["feed"] = out
        else:
            out = top
        return out, new, weights

    def forward(self, source: Tensor, source_lengths: Tensor, target_in: Tensor, teacher_forcing: float = 1.0,
                ) -> Tuple[Tensor, Optional[Tensor]]:
        """Logits for every target position (see the class docstring).

        teacher_forcing: probability of feeding the gold previous token at positions t >= 1;
        otherwise a token sampled from the model's (detached) distribution at t − 1 is fed.
        """
        if target_in.dim() != 2 or target_in.shape[0] != source.shape[0]:
            raise InputError(f"Seq2Seq expects target_in of shape (batch={source.shape[0]}, time); got "
                             f"{tuple(target_in.shape)}")
        check_probability("teacher_forcing", teacher_forcing, include_one=True)
        state = self.encode(source, source_lengths)
        T = target_in.shape[1]
        outs: List[Tensor] = []
        attn: List[Tensor] = []
        for t in range(T):
            tokens = target_in[:, t]
            if t > 0 and teacher_forcing < 1.0:
                with torch.no_grad():
                    last = self.head(outs[-1])  # no dropout: the model's own best guess
                tokens = feed_previous(tokens, last, teacher_forcing, pad_id=self.config.pad_id)
            out, state, w = self._advance(tokens, state)
            outs.append(out)
            if w is not None:
                attn.append(w)
        # the output layer once over all positions: one large GEMM instead of T small ones
        logits = self.head(self.drop(torch.stack(outs, 1)))  # (B, T, V)
        return logits, (torch.stack(attn, 1) if attn else None)

    # ------------------------------------------------------------ decoding
    @torch.no_grad()
    def generate(self, source: Tensor, source_lengths: Tensor, *, method: str = "greedy", beam_size: int = 5,
                 max_len: Optional[int] = None, min_len: int = 0, no_repeat_ngram: int = 0, alpha: float = 0.0,
                 n_best: int = 1, temperature: float = 1.0, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, generator: Optional[torch.Generator] = None,
                 return_attention: bool = False, suppress: Optional[Tensor] = None) -> List[List[Hypothesis]]:
        """Decode a batch: per sentence a list of hypotheses (see rnnkit.models.decoding).

        method: "greedy", "beam" or "sample"; max_len defaults to max_target_len; suppress: (V,) bool,
        the target tokens never emitted.
        """
        was = self.training
        self.eval()
        try:
            c = self.config
            state = self.encode(source, source_lengths)
            common = dict(bos=c.bos_id, eos=c.eos_id, max_len=max_len or c.max_target_len, min_len=min_len,
                          no_repeat_ngram=no_repeat_ngram, return_attention=return_attention, suppress=suppress)
            B = source.shape[0]
            if method == "greedy":
                return greedy_search(self.step, state, B, **common)
            if method == "beam":
                return beam_search(self.step, state, B, beam_size=beam_size, alpha=alpha, n_best=n_best, **common)
            if method == "sample":
                return sample_search(self.step, state, B, temperature=temperature, top_k=top_k, top_p=top_p,
                                     generator=generator, **common)
            raise InputError(f"method must be 'greedy', 'beam' or 'sample'; got {method!r}")
        finally:
            self.train(was)


# ------------------------------------------------------------- training task
class Seq2SeqTask:
    """Cross-entropy of the target tokens for the trainer (padding skipped).

    label_smoothing: ε of label smoothing (training only; evaluation reports plain NLL).
    length_normalize: divide each sentence's loss by its length and count sentences
        (so long and short sentences weigh the same); else the loss is per token.
    schedule: scheduled sampling's ε_i of i = `step`, which the training loop keeps at its optimizer step.
    """

    def __init__(self, *, pad_id: int = 0, label_smoothing: float = 0.0, length_normalize: bool = False,
                 schedule: Optional[SamplingSchedule] = None) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise InputError(f"label_smoothing must be in [0, 1); got {label_smoothing}")
        self.pad_id = pad_id
        self.label_smoothing = label_smoothing
        self.length_normalize = length_normalize
        self.schedule = schedule or SamplingSchedule()
        self.step = 0  #: optimizer steps taken (set by the Trainer before each batch)

    def teacher_forcing_ratio(self) -> float:
        return self.schedule(self.step)

    def loss(self, model: nn.Module, batch: Dict[str, Tensor], state: Any):
        from ..training.trainer import LossResult  # the task speaks the trainer's protocol
        ratio = self.teacher_forcing_ratio() if model.training else 1.0
        logits, _ = model(batch["source"], batch["source_lengths"], batch["target_in"], teacher_forcing=ratio)
        target = batch["target_out"]
        B, T, V = logits.shape
        ce = F.cross_entropy(logits.float().reshape(B * T, V), target.reshape(-1), ignore_index=self.pad_id,
                             reduction="none", label_smoothing=self.label_smoothing if model.training else 0.0)
        ce = ce.view(B, T)
        real = target != self.pad_id
        if self.length_normalize:
            per_sentence = ce.sum(1) / real.sum(1).clamp(min=1)
            return LossResult(per_sentence.sum(), B, B)
        return LossResult(ce.sum(), real.sum(), B)

    def eval_metrics(self, loss: float) -> Dict[str, float]:
        return {"ppl": math.exp(min(loss, 700.0))}
