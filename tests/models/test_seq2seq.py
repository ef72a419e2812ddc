"""Seq2Seq: attention masking, bridges, teacher forcing / scheduled sampling, decoding (greedy, beam, sampling)."""

from __future__ import annotations

import math

import pytest
import torch

from rnnkit.data.pairs import EncodedPairs, PairBatches
from rnnkit.errors import InputError
from rnnkit.models.attention import Attention
from rnnkit.models.decoding import beam_search, greedy_search, length_penalty, sample_search, select_rows
from rnnkit.models.seq2seq import SamplingSchedule, Seq2Seq, Seq2SeqConfig, Seq2SeqTask
from rnnkit.training import TrainConfig, Trainer

V = 23


def tiny(**kw) -> Seq2Seq:
    cfg = dict(source_vocab_size=V, target_vocab_size=V, hidden_size=12, embedding_size=6, dropout=0.0,
               max_source_len=16, max_target_len=10)
    seed = kw.pop("seed", 0)
    cfg.update(kw)
    torch.manual_seed(seed)
    return Seq2Seq(Seq2SeqConfig(**cfg)).eval()


def padded_batch(lengths, S=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    S = S or max(lengths)
    src = torch.randint(4, V, (len(lengths), S), generator=g)
    for b, n in enumerate(lengths):
        src[b, n:] = 0
    return src, torch.tensor(lengths)


ATTN = ["none", "bahdanau", "dot", "general"]


# ----------------------------------------------------------------- attention
@pytest.mark.parametrize("kind", ["bahdanau", "dot", "general"])
def test_attention_masks_padding(kind):
    torch.manual_seed(0)
    att = Attention(kind, 8, 8, 5)
    memory = torch.randn(3, 6, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    q = torch.randn(3, 8)
    ctx, w = att(q, att.keys(memory), memory, mask)
    assert torch.all(w[~mask] == 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(3))
    # whatever sits in the padded memory rows changes nothing
    memory2 = memory.clone()
    memory2[~mask] = 1e3 * torch.randn(int((~mask).sum()), 8)
    ctx2, w2 = att(q, att.keys(memory2), memory2, mask)
    torch.testing.assert_close(ctx, ctx2)
    torch.testing.assert_close(w, w2)


def test_dot_attention_needs_equal_sizes():
    with pytest.raises(ValueError, match="general"):
        Attention("dot", 8, 6)


@pytest.mark.parametrize("attention", ATTN)
def test_padding_does_not_change_a_sentence(attention):
    """A sentence decodes (and scores) the same alone or batched with longer ones: masks and lengths work."""
    m = tiny(attention=attention)
    src, lengths = padded_batch([7, 3, 5])
    tgt = torch.randint(4, V, (3, 4))
    logits, attn = m(src, lengths, tgt)
    alone, attn1 = m(src[1:2, :3], lengths[1:2], tgt[1:2])
    torch.testing.assert_close(logits[1:2], alone, atol=1e-5, rtol=1e-5)
    if attention != "none":
        assert attn.shape == (3, 4, 7)
        assert torch.all(attn[1, :, 3:] == 0)
        torch.testing.assert_close(attn[1:2, :, :3], attn1, atol=1e-6, rtol=1e-5)
    else:
        assert attn is None


# ------------------------------------------------------------------ bridges
@pytest.mark.parametrize("cell", ["lstm", "gru", "sru", "rnn"])
@pytest.mark.parametrize("bridge", ["none", "copy", "learned"])
def test_bridges_and_cells(cell, bridge):
    m = tiny(cell=cell, bridge=bridge, num_layers=2, attention="general")
    src, lengths = padded_batch([5, 2])
    logits, _ = m(src, lengths, torch.randint(4, V, (2, 3)))
    assert logits.shape == (2, 3, V)
    logits.sum().backward()
    if bridge != "none":  # the decoder's initial state depends on the source through the bridge
        state = m.encode(src, lengths)
        first = state["layers"][0]
        h = first[0] if isinstance(first, tuple) else first
        assert h.abs().sum() > 0


def test_copy_bridge_copies_final_states():
    m = tiny(cell="gru", bridge="copy", num_layers=2, bidirectional=True)
    src, lengths = padded_batch([5, 2])
    _, final = m.encoder(m.source_embedding(src), lengths=lengths)
    state = m.encode(src, lengths)
    for l in range(2):
        torch.testing.assert_close(state["layers"][l], torch.cat([final[2 * l], final[2 * l + 1]], -1))


def test_bad_configs():
    with pytest.raises(ValueError, match="bridge 'copy'"):
        tiny(bridge="copy", num_layers=1, decoder_layers=2)
    with pytest.raises(ValueError, match="no view of the source"):
        tiny(attention="none", bridge="none")
    with pytest.raises(ValueError, match="attention"):
        tiny(attention="luong")


def test_hidden_size_is_per_direction():
    """As in torch.nn: each encoder direction has hidden_size units; the decoder, the encoder's output width."""
    m = tiny(hidden_size=11, bidirectional=True)  # odd is fine: nothing is split over the directions
    assert m.encoder.cells[0].hidden_size == 11 and m.memory_size == 22
    assert m.config.decoder_size == 22 and m.decoder_cells[0].hidden_size == 22
    assert tiny(hidden_size=11, bidirectional=False).memory_size == 11


def test_source_longer_than_maximum():
    m = tiny(max_source_len=4)
    src, lengths = padded_batch([5, 2])
    with pytest.raises(ValueError, match="at most 4"):
        m.generate(src, lengths)


# ------------------------------------------- teacher forcing and sampling
def test_teacher_forcing_is_the_step_loop():
    m = tiny(attention="general", input_feeding=True)
    src, lengths = padded_batch([4, 6])
    tgt = torch.randint(4, V, (2, 5))
    logits, _ = m(src, lengths, tgt, teacher_forcing=1.0)
    state = m.encode(src, lengths)
    for t in range(5):
        out, state, _ = m.step(tgt[:, t], state)
        torch.testing.assert_close(out, logits[:, t])


def test_scheduled_sampling_feeds_own_tokens():
    """With ε = 0 every input after the first is the model's own sample: the gold tokens stop mattering."""
    m = tiny(attention="bahdanau")
    src, lengths = padded_batch([4, 6])
    tgt = torch.randint(4, V, (2, 5))
    other = tgt.clone()
    other[:, 1:] = torch.randint(4, V, (2, 4))
    torch.manual_seed(3)
    a, _ = m(src, lengths, tgt, teacher_forcing=0.0)
    torch.manual_seed(3)
    b, _ = m(src, lengths, other, teacher_forcing=0.0)
    torch.testing.assert_close(a, b)
    c, _ = m(src, lengths, other, teacher_forcing=1.0)
    assert not torch.allclose(a[:, 1:], c[:, 1:])


def test_sampling_schedules():
    assert SamplingSchedule("none")(10_000) == 1.0
    lin = SamplingSchedule("linear", k=1.0, c=0.01, minimum=0.2)
    assert lin(0) == 1.0 and lin(50) == pytest.approx(0.5) and lin(1000) == 0.2
    exp = SamplingSchedule("exponential", k=0.99)
    assert exp(0) == 1.0 and exp(100) == pytest.approx(0.99 ** 100)
    sig = SamplingSchedule("inverse_sigmoid", k=10)
    assert sig(0) == pytest.approx(10 / 11) and sig(50) == pytest.approx(10 / (10 + math.exp(5)))
    for s in (lin, exp, sig):  # non-increasing
        values = [s(i) for i in range(0, 2000, 37)]
        assert all(a >= b for a, b in zip(values, values[1:]))
    for bad in (dict(kind="exponential", k=1.5), dict(kind="inverse_sigmoid", k=0.5), dict(kind="cosine"),
                dict(kind="linear", minimum=2.0)):
        with pytest.raises(ValueError):
            SamplingSchedule(**bad)


def test_task_label_smoothing_and_length_normalisation():
    m = tiny()
    src, lengths = padded_batch([4, 6])
    tin = torch.tensor([[2, 5, 6, 0], [2, 7, 8, 9]])
    tout = torch.tensor([[5, 6, 3, 0], [7, 8, 9, 3]])
    batch = dict(source=src, source_lengths=lengths, target_in=tin, target_out=tout)
    r = Seq2SeqTask().loss(m, batch, None)
    assert int(r.count) == 7
    rn = Seq2SeqTask(length_normalize=True).loss(m, batch, None)
    assert rn.count == 2
    logits, _ = m(src, lengths, tin)
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tout, ignore_index=0, reduction="none")
    torch.testing.assert_close(rn.loss_sum, ce[0].sum() / 3 + ce[1].sum() / 4)
    torch.testing.assert_close(r.loss_sum, ce.sum())
    m.train()
    rs = Seq2SeqTask(label_smoothing=0.1).loss(m, batch, None)
    assert float(rs.loss_sum.detach()) > float(r.loss_sum.detach())  # smoothing only while training: eval is plain NLL


def test_training_reduces_loss_on_a_copy_task():
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(4, 12, (int(torch.randint(2, 6, (1,), generator=g)),), generator=g).tolist()
            for _ in range(64)]
    data = EncodedPairs(seqs, seqs, ["x"] * 64)
    batches = PairBatches(data, 16, pad_id=0, bos_id=2, eos_id=3, seed=0)
    m = tiny(attention="general").train()
    trainer = Trainer(m, Seq2SeqTask(), batches, TrainConfig(max_steps=60, lr=1e-2, quiet=True, tensorboard=False),
                      val_data=PairBatches(data, 64, pad_id=0, bos_id=2, eos_id=3, shuffle=False))
    before = trainer.evaluate()["val_loss"]
    trainer.fit()
    after = trainer.evaluate()["val_loss"]
    assert after < 0.6 * before, (before, after)


# ------------------------------------------------------------------ decoding
@pytest.mark.parametrize("attention", ATTN)
@pytest.mark.parametrize("extra", [dict(), dict(min_len=3), dict(no_repeat_ngram=2)])
def test_beam_one_equals_greedy(attention, extra):
    m = tiny(attention=attention, seed=4)
    src, lengths = padded_batch([7, 3, 5, 1, 6], seed=5)
    g = m.generate(src, lengths, method="greedy", max_len=9, return_attention=True, **extra)
    b = m.generate(src, lengths, method="beam", beam_size=1, max_len=9, alpha=0.0, return_attention=True, **extra)
    for hg, hb in zip(g, b):
        assert hg[0].tokens == hb[0].tokens
        assert hg[0].score == pytest.approx(hb[0].score, abs=1e-4)
        assert hg[0].finished == hb[0].finished
        if attention != "none":
            torch.testing.assert_close(hg[0].attention, hb[0].attention)


def scripted_step(table):
    """A step function whose next-token log-probs depend only on the last token: table (V, V)."""
    def step(tokens, state):
        return table[tokens], state, None
    return step


def test_beam_finds_what_greedy_misses():
    # from bos(2): token 4 (p .6) then only bad continuations; token 5 (p .4) then eos (p 1)
    Vs = 8
    logp = torch.full((Vs, Vs), -20.0)
    logp[2, 4], logp[2, 5] = math.log(0.6), math.log(0.4)
    logp[4, 6], logp[4, 7] = math.log(0.5), math.log(0.5)
    logp[6, 3] = logp[7, 3] = 0.0
    logp[5, 3] = 0.0
    state = {"dummy": torch.zeros(1, 1)}
    g = greedy_search(scripted_step(logp), state, 1, bos=2, eos=3, max_len=5)
    assert g[0][0].tokens[0] == 4  # greedy: 0.6 · 0.5 = 0.3
    b = beam_search(scripted_step(logp), state, 1, bos=2, eos=3, max_len=5, beam_size=3, n_best=3)
    assert b[0][0].tokens == [5]  # beam: 0.4
    assert b[0][0].score == pytest.approx(math.log(0.4), abs=1e-4)
    assert [h.score for h in b[0]] == sorted((h.score for h in b[0]), reverse=True)
    assert len(b[0]) == 3


def test_beam_batched_equals_one_sentence_at_a_time():
    m = tiny(attention="bahdanau", seed=2)
    src, lengths = padded_batch([7, 3, 5, 2], seed=9)
    batched = m.generate(src, lengths, method="beam", beam_size=4, alpha=0.6, n_best=2, max_len=9)
    for b in range(4):
        n = int(lengths[b])
        alone = m.generate(src[b:b + 1, :n], lengths[b:b + 1], method="beam", beam_size=4, alpha=0.6, n_best=2,
                           max_len=9)
        assert [h.tokens for h in alone[0]] == [h.tokens for h in batched[b]]
        for x, y in zip(alone[0], batched[b]):
            assert x.score == pytest.approx(y.score, abs=1e-4)


def test_ngram_blocking_and_min_len():
    m = tiny(seed=7)
    src, lengths = padded_batch([6, 6, 6], seed=3)
    for method in ("greedy", "beam"):
        hyps = m.generate(src, lengths, method=method, beam_size=3, max_len=10, no_repeat_ngram=2, min_len=10)
        for h in hyps:
            toks = h[0].tokens
            assert len(toks) == 10  # min_len = max_len: the end token was never allowed
            bigrams = list(zip(toks, toks[1:]))
            assert len(bigrams) == len(set(bigrams))


def test_suppressed_tokens_are_never_emitted_and_the_rest_renormalised():
    m = tiny(seed=7)
    src, lengths = padded_batch([6, 4, 5], seed=3)
    free = m.generate(src, lengths, method="greedy", max_len=8)
    used = sorted({t for h in free for t in h[0].tokens})
    suppress = torch.zeros(m.config.target_vocab_size, dtype=torch.bool)
    suppress[used[0]] = True  # a token greedy search chose
    for method in ("greedy", "beam", "sample"):
        hyps = m.generate(src, lengths, method=method, beam_size=3, max_len=8, suppress=suppress,
                          generator=torch.Generator().manual_seed(0))
        assert all(used[0] not in h.tokens for hs in hyps for h in hs), method
    # the softmax is over the allowed tokens: with eos alone allowed, it comes first with probability 1
    scripted = torch.log_softmax(torch.randn(8, 8, generator=torch.Generator().manual_seed(1)), -1)
    only_eos = torch.ones(8, dtype=torch.bool)
    only_eos[3] = False
    h = greedy_search(scripted_step(scripted), {"s": torch.zeros(1, 1)}, 1, bos=2, eos=3, max_len=4, suppress=only_eos)
    assert h[0][0].tokens == [] and h[0][0].finished and h[0][0].score == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(InputError, match="suppress must be a bool tensor of shape"):
        m.generate(src, lengths, suppress=torch.zeros(3, dtype=torch.bool))


def test_sampling_is_seeded_and_respects_top_k():
    m = tiny(seed=1)
    src, lengths = padded_batch([5, 4], seed=2)
    a = m.generate(src, lengths, method="sample", generator=torch.Generator().manual_seed(0), top_k=1)
    g = m.generate(src, lengths, method="greedy")
    assert [h[0].tokens for h in a] == [h[0].tokens for h in g]  # top-k 1 is greedy
    s1 = m.generate(src, lengths, method="sample", temperature=1.5, top_p=0.9,
                    generator=torch.Generator().manual_seed(5))
    s2 = m.generate(src, lengths, method="sample", temperature=1.5, top_p=0.9,
                    generator=torch.Generator().manual_seed(5))
    assert [h[0].tokens for h in s1] == [h[0].tokens for h in s2]


def test_decoding_argument_errors():
    step = scripted_step(torch.zeros(8, 8))
    state = torch.zeros(2, 1)
    with pytest.raises(ValueError, match="n_best"):
        beam_search(step, state, 2, bos=2, eos=3, max_len=4, beam_size=2, n_best=3)
    with pytest.raises(ValueError, match="min_len"):
        greedy_search(step, state, 2, bos=2, eos=3, max_len=4, min_len=5)
    with pytest.raises(ValueError, match="temperature"):
        sample_search(step, state, 2, bos=2, eos=3, max_len=4, temperature=0.0)
    with pytest.raises(ValueError, match="vocabulary"):
        beam_search(step, state, 2, bos=2, eos=3, max_len=4, beam_size=5)


def test_select_rows_and_length_penalty():
    state = {"a": (torch.arange(3), [torch.arange(6).view(3, 2)]), "n": None}
    out = select_rows(state, torch.tensor([2, 0]))
    assert out["a"][0].tolist() == [2, 0] and out["a"][1][0].tolist() == [[4, 5], [0, 1]] and out["n"] is None
    assert length_penalty(1, 0.0) == 1.0 and length_penalty(7, 1.0) == pytest.approx(2.0)
