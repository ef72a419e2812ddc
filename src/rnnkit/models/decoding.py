"""Decoding for any model that emits one token at a time: greedy, beam search, sampling.

A model plugs in with one function and a state:

    step(tokens (N,) int64, state) -> (logits (N, V), new_state, attention (N, S) or None)

`state` is any nesting of tuples, lists and dicts of tensors whose first axis is
the row (N). The searches reorder and repeat rows with `select_rows`, so the
state may hold per-sentence constants too (encoder memory and mask, image
features). Every search is batched: one `step` call per output position serves
all sentences (and all beams) at once.

Common options:
    bos, eos         start token fed first; end token that finishes a hypothesis
    max_len          most tokens generated per hypothesis, the end token included
    min_len          the end token is forbidden before this many tokens
    no_repeat_ngram  n > 0: no n-gram occurs twice in a hypothesis (n-gram blocking)
    suppress         (V,) bool, True for tokens never emitted (e.g. another language's pieces); the
                     softmax is taken over the others

Each search returns, per sentence, a list of `Hypothesis` (beam search: the
n best, best first): token ids without bos/eos, the score (sum of log-probs;
beam search divides by the length penalty) and, if asked, the attention rows of
the emitted tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

import torch
from torch import Tensor
from torch.nn import functional as F

from ..errors import InputError

StepFn = Callable[[Tensor, Any], Tuple[Tensor, Any, Optional[Tensor]]]


@dataclass
class Hypothesis:
    tokens: List[int]
    score: float
    attention: Optional[Tensor] = None  # (len(tokens) + 1 if finished (the end token's row) else len(tokens), S)
    finished: bool = True  # False: cut at max_len without an end token


def select_rows(state: Any, index: Tensor) -> Any:
    """`state` with rows `index` (first axis) of every tensor, nesting kept."""
    if isinstance(state, Tensor):
        return state.index_select(0, index)
    if isinstance(state, tuple):
        return tuple(select_rows(s, index) for s in state)
    if isinstance(state, list):
        return [select_rows(s, index) for s in state]
    if isinstance(state, dict):
        return {k: select_rows(v, index) for k, v in state.items()}
    return state


def _check(bos: int, eos: int, max_len: int, min_len: int, no_repeat_ngram: int) -> None:
    if not isinstance(max_len, int) or max_len < 1:
        raise InputError(f"max_len must be an int >= 1; got {max_len!r}")
    if not 0 <= min_len <= max_len:
        raise InputError(f"min_len must be in [0, max_len={max_len}]; got {min_len!r}")
    if no_repeat_ngram < 0:
        raise InputError(f"no_repeat_ngram must be >= 0; got {no_repeat_ngram!r}")


def _log_probs(logits: Tensor, suppress: Optional[Tensor]) -> Tensor:
    """Log-softmax of logits (N, V) in float32, over the tokens `suppress` (V,) leaves allowed."""
    logits = logits.float()
    if suppress is not None:
        if suppress.shape != logits.shape[-1:] or suppress.dtype != torch.bool:
            raise InputError(f"suppress must be a bool tensor of shape ({logits.shape[-1]},) (one flag per "
                             f"vocabulary entry); got {suppress.dtype} {tuple(suppress.shape)}")
        logits = logits.masked_fill(suppress.to(logits.device), float("-inf"))
    return F.log_softmax(logits, dim=-1)


def _constrain(logp: Tensor, hyps: Tensor, eos: int, min_len: int, no_repeat_ngram: int) -> Tensor:
    """Forbid the end token before min_len and tokens that would repeat an n-gram.

    logp: (N, V) log-probs of the next token; hyps: (N, t) tokens emitted so far.
    """
    t = hyps.shape[1]
    if t < min_len:
        logp = logp.clone()
        logp[:, eos] = float("-inf")
    n = no_repeat_ngram
    if n and t >= n:  # a complete n-gram exists: ban the tokens that would close a repeat of one
        windows = hyps.unfold(1, n, 1)  # (N, W, n) every n-gram so far
        prefix = hyps[:, t - (n - 1):]  # (N, n-1) the last n-1 tokens (empty for n = 1)
        match = (windows[:, :, :-1] == prefix.unsqueeze(1)).all(-1)  # (N, W)
        ban = torch.zeros_like(logp).scatter_reduce_(1, windows[:, :, -1], match.to(logp.dtype), "amax") > 0
        logp = logp.masked_fill(ban, float("-inf"))
    return logp


def _sequential(step: StepFn, state: Any, batch_size: int, choose: Callable[[Tensor], Tensor], *, bos: int,
                eos: int, max_len: int, min_len: int, no_repeat_ngram: int, return_attention: bool,
                suppress: Optional[Tensor] = None) -> List[List[Hypothesis]]:
    """One hypothesis per sentence, each next token picked by `choose(logp (N, V)) -> (N,)`."""
    _check(bos, eos, max_len, min_len, no_repeat_ngram)
    B = batch_size
    device = _device_of(state)
    tokens = torch.full((B,), bos, dtype=torch.long, device=device)
    hyps = torch.zeros(B, 0, dtype=torch.long, device=device)
    scores = torch.zeros(B, dtype=torch.float32, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    lengths = torch.full((B,), max_len, dtype=torch.long, device=device)
    attn: List[Tensor] = []
    for t in range(max_len):
        logits, state, a = step(tokens, state)
        logp = _constrain(_log_probs(logits, suppress), hyps, eos, min_len, no_repeat_ngram)
        tokens = choose(logp)
        tokens = tokens.masked_fill(done, eos)  # finished rows keep emitting eos, which is ignored
        scores = scores + torch.where(done, torch.zeros_like(scores), logp.gather(1, tokens[:, None]).squeeze(1))
        hyps = torch.cat([hyps, tokens[:, None]], 1)
        if return_attention and a is not None:
            attn.append(a.float())
        ended = (tokens == eos) & ~done
        lengths = torch.where(ended, torch.full_like(lengths, t), lengths)
        done = done | ended
        if bool(done.all()):
            break
    out = []
    att = torch.stack(attn, 1) if attn else None  # (B, T, S)
    for b in range(B):
        n = int(lengths[b])
        rows = n + int(bool(done[b]))  # the end token's attention row too
        out.append([Hypothesis(hyps[b, :n].tolist(), float(scores[b]),
                               att[b, :rows].cpu() if att is not None else None, finished=bool(done[b]))])
    return out


def greedy_search(step: StepFn, state: Any, batch_size: int, *, bos: int, eos: int, max_len: int,
                  min_len: int = 0, no_repeat_ngram: int = 0, return_attention: bool = False,
                  suppress: Optional[Tensor] = None) -> List[List[Hypothesis]]:
    """The most likely next token at every step, for `batch_size` sentences at once."""
    return _sequential(step, state, batch_size, lambda logp: logp.argmax(-1), bos=bos, eos=eos, max_len=max_len,
                       min_len=min_len, no_repeat_ngram=no_repeat_ngram, return_attention=return_attention,
                       suppress=suppress)


def check_sampling(temperature: float, top_k: Optional[int], top_p: Optional[float]) -> None:
    """ValueError naming the first sampling option out of range: temperature > 0, top_k >= 1, top_p in (0, 1]."""
    if not temperature > 0:
        raise InputError(f"temperature must be > 0; got {temperature}")
    if top_k is not None and top_k < 1:
        raise InputError(f"top_k must be >= 1; got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise InputError(f"top_p must be in (0, 1]; got {top_p}")


def sample_next(logits: Tensor, temperature: float, top_k: Optional[int], top_p: Optional[float],
                generator: Optional[torch.Generator] = None) -> Tensor:
    """Draw one token per row: logits (..., V) → ids (..., 1), from softmax(z) with z = logits / temperature,
    keeping only the top_k largest z (None: all), then the smallest set whose probability reaches top_p
    (nucleus; None or 1: all). Options are not checked here (see `check_sampling`)."""
    z = logits / temperature
    if top_k is not None and top_k < z.shape[-1]:
        kth = z.topk(top_k, dim=-1).values[..., -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        probs, order = torch.softmax(z, -1).sort(-1, descending=True)
        cut = probs.cumsum(-1) - probs >= top_p  # tokens after the nucleus is full
        z = z.masked_fill(torch.zeros_like(cut).scatter(-1, order, cut), float("-inf"))
    return torch.multinomial(torch.softmax(z, -1), 1, generator=generator)


def sample_search(step: StepFn, state: Any, batch_size: int, *, bos: int, eos: int, max_len: int,
                  min_len: int = 0, no_repeat_ngram: int = 0, temperature: float = 1.0,
                  top_k: Optional[int] = None, top_p: Optional[float] = None,
                  generator: Optional[torch.Generator] = None, return_attention: bool = False,
                  suppress: Optional[Tensor] = None) -> List[List[Hypothesis]]:
    """Sample each next token: logits / temperature, then top-k and/or nucleus (top-p) truncation."""
    check_sampling(temperature, top_k, top_p)

    def choose(logp: Tensor) -> Tensor:
        return sample_next(logp, temperature, top_k, top_p, generator).squeeze(1)

    return _sequential(step, state, batch_size, choose, bos=bos, eos=eos, max_len=max_len, min_len=min_len,
                       no_repeat_ngram=no_repeat_ngram, return_attention=return_attention, suppress=suppress)


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's ((5 + length) / 6)^alpha (Wu et al. 2016); alpha 0 ranks by the plain sum of log-probs."""
    return ((5.0 + length) / 6.0) ** alpha


class _Finished:
    """The K best finished hypotheses of each of B sentences: scores (B, K) (-inf: none yet), tokens
    (B, K, max_len), lengths, whether each ended with the end token, attention rows (B, K, max_len, S)."""

    def __init__(self, B: int, K: int, max_len: int, eos: int, device: torch.device) -> None:
        self.B, self.K, self.max_len, self.eos = B, K, max_len, eos
        self.scores = torch.full((B, K), float("-inf"), device=device)
        self.tokens = torch.full((B, K, max_len), eos, dtype=torch.long, device=device)
        self.lengths = torch.zeros(B, K, dtype=torch.long, device=device)
        self.ended = torch.zeros(B, K, dtype=torch.bool, device=device)
        self.attention: Optional[Tensor] = None

    def merge(self, new_scores: Tensor, seq: Tensor, n_tok: int, ended: bool, attn: Optional[Tensor]) -> None:
        """Fold candidates in: new_scores (B, C) (-inf: not a candidate), seq (B, C, L) their tokens, of which
        the first n_tok count, attn (B, C, L', S) or None."""
        B, K, max_len = self.B, self.K, self.max_len
        C = new_scores.shape[1]
        seq = torch.cat([seq[:, :, :n_tok], seq.new_full((B, C, max_len - n_tok), self.eos)], -1)
        self.scores, pick = torch.cat([self.scores, new_scores], 1).topk(K, dim=1)  # (B, K)
        self.tokens = torch.cat([self.tokens, seq], 1).gather(1, pick.unsqueeze(-1).expand(B, K, max_len))
        self.lengths = torch.cat([self.lengths, self.lengths.new_full((B, C), n_tok)], 1).gather(1, pick)
        self.ended = torch.cat([self.ended, self.ended.new_full((B, C), ended)], 1).gather(1, pick)
        if attn is not None:
            S = attn.shape[-1]
            rows = n_tok + int(ended)  # the end token's attention row too
            attn = torch.cat([attn[:, :, :rows], attn.new_zeros(B, C, max_len - rows, S)], 2)
            if self.attention is None:
                self.attention = attn.new_zeros(B, K, max_len, S)
            self.attention = torch.cat([self.attention, attn], 1).gather(
                1, pick[:, :, None, None].expand(B, K, max_len, S))

    def best(self, n_best: int) -> List[List[Hypothesis]]:
        """The n_best hypotheses of each sentence, best first."""
        out: List[List[Hypothesis]] = []
        for b in range(self.B):
            hs = []
            for k in range(n_best):
                if not math.isfinite(float(self.scores[b, k])):
                    break
                n = int(self.lengths[b, k])
                rows = n + int(bool(self.ended[b, k]))
                hs.append(Hypothesis(self.tokens[b, k, :n].tolist(), float(self.scores[b, k]),
                                     self.attention[b, k, :rows].cpu() if self.attention is not None else None,
                                     finished=bool(self.ended[b, k])))
            out.append(hs)
        return out


def _check_beam(beam_size: Any, n_best: Any, alpha: float) -> None:
    if not isinstance(beam_size, int) or beam_size < 1:
        raise InputError(f"beam_size must be an int >= 1; got {beam_size!r}")
    if not 1 <= n_best <= beam_size:
        raise InputError(f"n_best must be in [1, beam_size={beam_size}]; got {n_best!r}")
    if alpha < 0:
        raise InputError(f"alpha (length penalty) must be >= 0; got {alpha}")


def _start_beams(state: Any, B: int, K: int, bos: int, device: torch.device) -> Tuple[Any, Tensor, Tensor, Tensor]:
    """K copies of each sentence's state, the start tokens (B·K,), the beams' scores (B, K) and tokens (B·K, 0)."""
    state = select_rows(state, torch.arange(B, device=device).repeat_interleave(K))
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: only the first may expand at step 0
    return (state, torch.full((B * K,), bos, dtype=torch.long, device=device), scores,
            torch.zeros(B * K, 0, dtype=torch.long, device=device))


def beam_search(step: StepFn, state: Any, batch_size: int, *, bos: int, eos: int, max_len: int,
                beam_size: int = 5, min_len: int = 0, no_repeat_ngram: int = 0, alpha: float = 0.0,
                n_best: int = 1, return_attention: bool = False, suppress: Optional[Tensor] = None
                ) -> List[List[Hypothesis]]:
    """Beam search over `batch_size` sentences at once (B·K rows per step).

    Each step takes the 2K best extensions of a sentence's K live beams. An extension by the end token
    that ranks among the first K becomes a finished hypothesis, scored (sum of log-probs) /
    length_penalty(length, alpha); the K best other extensions live on. A sentence is done when it has
    K finished hypotheses and its best live beam, normalised at the current length, cannot beat the
    worst of them; at max_len the live beams are finished as they are. Beam 1, alpha 0: greedy search.
    """
    _check(bos, eos, max_len, min_len, no_repeat_ngram)
    _check_beam(beam_size, n_best, alpha)
    K, B = beam_size, batch_size
    device = _device_of(state)
    N = B * K
    state, tokens, scores, hyps = _start_beams(state, B, K, bos, device)
    hist: Optional[Tensor] = None  # (N, t, S) attention rows of the live beams
    finished = _Finished(B, K, max_len, eos, device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    base = (torch.arange(B, device=device) * K).unsqueeze(1)  # (B, 1)
    rank = torch.arange(2 * K, device=device).unsqueeze(0)  # (1, 2K)
    for t in range(max_len):
        length = t + 1
        logits, state, a = step(tokens, state)
        V = logits.shape[-1]
        if V < 2 * K:
            raise InputError(f"beam_size {K} needs a vocabulary of at least {2 * K} tokens; got {V}")
        logp = _constrain(_log_probs(logits, suppress), hyps, eos, min_len, no_repeat_ngram)
        step_attn = None
        if return_attention and a is not None:
            step_attn = torch.cat([hist, a.float().unsqueeze(1)], 1) if hist is not None else a.float().unsqueeze(1)
        top_v, top_i = (scores.view(N, 1) + logp).view(B, K * V).topk(2 * K, dim=1)  # (B, 2K)
        rows = base + torch.div(top_i, V, rounding_mode="floor")  # (B, 2K) live rows extended
        tok = top_i % V
        is_eos = tok == eos
        add = is_eos & (rank < K) & ~done.unsqueeze(1) & torch.isfinite(top_v)
        if bool(add.any()):
            flat = rows.flatten()
            attn = step_attn.index_select(0, flat).view(B, 2 * K, t + 1, -1) if step_attn is not None else None
            finished.merge(torch.where(add, top_v / length_penalty(length, alpha), torch.full_like(top_v, -math.inf)),
                           hyps.index_select(0, flat).view(B, 2 * K, t), t, True, attn)
        scores, pos = top_v.masked_fill(is_eos, float("-inf")).topk(K, dim=1)  # (B, K)
        sel_rows = rows.gather(1, pos).flatten()  # (N,)
        sel_tok = tok.gather(1, pos)  # (B, K)
        hyps = torch.cat([hyps.index_select(0, sel_rows), sel_tok.view(N, 1)], 1)
        if step_attn is not None:
            hist = step_attn.index_select(0, sel_rows)
        state = select_rows(state, sel_rows)
        tokens = sel_tok.flatten()
        done = done | (finished.scores[:, K - 1] >= scores[:, 0] / length_penalty(length, alpha))
        if bool(done.all()):
            break
    if not bool(done.all()):  # cut at max_len: the live beams of unfinished sentences count as they are
        L = hyps.shape[1]
        live = torch.where(done.unsqueeze(1), torch.full_like(scores, float("-inf")),
                           scores / length_penalty(L, alpha))
        finished.merge(live, hyps.view(B, K, L), L, False, hist.view(B, K, L, -1) if hist is not None else None)
    return finished.best(n_best)


def _device_of(state: Any) -> torch.device:
    if isinstance(state, Tensor):
        return state.device
    items = state.values() if isinstance(state, dict) else state if isinstance(state, (tuple, list)) else ()
    for s in items:
        try:
            return _device_of(s)
        except ValueError:
            continue
    raise InputError("decoding: the state holds no tensor (cannot tell the device)")
