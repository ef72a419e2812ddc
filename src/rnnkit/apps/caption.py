"""Image captioning with soft attention (Show, Attend and Tell) on MNIST digit scenes or a Flickr8k/COCO-style folder.

Digit scenes hold 1-3 MNIST digits (data/mnist) in a row or a column, captioned from their layout; a
folder of images comes with its captions file (images and captions). A small CNN gives a grid of
features, a decoder on any rnnkit cell attends over it. Validation: cross-entropy per word (val_loss).
At the end, on the test split: BLEU-1..4, chrF and (digit scenes) exact digit and relation match,
greedy and with beam width `beam`, next to a no-attention baseline trained for baseline_minutes
(OUT/results.md, results.json) and caption_examples.png (images, captions, attention maps).

    >>> from rnnkit.apps import caption
    >>> run = caption.train(caption.CaptionSettings(max_steps=20))       # doctest: +SKIP
    >>> caption.caption(run, ["scene.png"], beam=3)                      # doctest: +SKIP
    ['a 7 above a 2']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..cells import CELLS
from ..data.captions import CaptionBatches, CaptionVocab, DigitScenes, digit_vocab, tokenize
from ..errors import InputError, InputTypeError
from ..models.caption import CAPTION_ATTENTIONS, CaptionConfig, CaptionModel, CaptionTask, caption_metrics
from ..models.scheduled_sampling import SCHEDULES, SamplingSchedule
from .runner import Prepared, Recipe, Run, say
from .settings import TrainingSettings, setting, setting_name, settings_class
from .video import mnist_pools

__all__ = ["CaptionSettings", "train", "load", "caption", "write_attention", "RECIPE"]

#: what captioning uses of the vision extra: images, BLEU, the figures (not SSIM)
NEEDS = ("PIL", "sacrebleu", "matplotlib")
#: an image as a user gives it: a file, or an array/tensor (C, S, S) or (S, S) at the model's size
Image = Union[str, Path, np.ndarray, torch.Tensor]


@settings_class
class CaptionSettings(TrainingSettings):
    """Settings of `rnnkit train caption` (defaults: digit scenes of 1-3 digits, an LSTM with attention)."""

    DEFAULTS = dict(out="runs/caption", batch_size=32, lr=2e-3, clip_norm=5.0, max_minutes=10.0, eval_every=200,
                    checkpoint_every=200, threads=1)
    data: Optional[str] = setting(None, "Directory with the MNIST IDX files for digit scenes (default: data/mnist).",
                                  path=True)
    images: Optional[str] = setting(None, "Image folder of a Flickr8k/COCO-style data set (with captions) instead "
                                          "of digit scenes.", path=True)
    captions: Optional[str] = setting(None, "Captions file for images: Flickr8k token file, captions.txt CSV or "
                                            "COCO JSON.", path=True)
    image_size: int = setting(60, "Images are resized (scenes drawn) to S x S.", min=1)
    max_digits: int = setting(3, "Digit scenes: 1 to this many digits.", min=1, max=3)
    cell: str = setting("lstm", "Decoder cell.", choices=tuple(CELLS))
    hidden_size: int = setting(128, "Decoder hidden units.", min=1)
    embedding_size: int = setting(64, "Word embedding size.", min=1)
    attention: str = setting("bahdanau", "Soft attention over the grid, or none (the mean feature every step).",
                             choices=CAPTION_ATTENTIONS)
    attention_size: int = setting(64, "Width of the additive attention.", min=1)
    cnn_width: int = setting(16, "Channels of the first CNN block (doubled per block).", min=1)
    cnn_blocks: int = setting(3, "CNN blocks (conv-ReLU-pool); the grid is S / 2^blocks per side.", min=1)
    dropout: float = setting(0.1, "Dropout before the output layer.", min=0, max=1, max_open=True)
    alpha_c: float = setting(0.0, "Weight λ of the doubly stochastic attention penalty (Xu et al. use 1; with "
                                  "captions much shorter than the grid it pushes attention towards uniform, so "
                                  "the digit recipe uses 0).", min=0)
    sampling: str = setting("none", "Scheduled sampling of the fed word (none = teacher forcing).", choices=SCHEDULES)
    sampling_k: float = setting(1.0, "Schedule parameter k.",
                                acts_with=("sampling", ("linear", "exponential", "inverse_sigmoid")))
    sampling_c: float = setting(0.0, "Schedule parameter c (linear).", min=0, acts_with=("sampling", ("linear",)))
    sampling_min: float = setting(0.0, "Lowest probability of feeding the gold word.", min=0, max=1,
                                  acts_with=("sampling", ("linear", "exponential", "inverse_sigmoid")))
    max_len: int = setting(16, "Most words generated (and kept of a training caption).", min=1)
    beam: int = setting(3, "Beam width of the final test scoring (1 = greedy; greedy is always scored too).", min=1)
    batches_per_epoch: int = setting(100, "Batches per epoch.", min=1)
    val_images: int = setting(256, "Validation images.", min=1)
    test_images: int = setting(500, "Test images for the final metrics.", min=1)
    baseline_minutes: float = setting(5.0, "After training, train the no-attention baseline for this long and "
                                           "report it next to the model (0: skip).", min=0)

    def check(self) -> None:
        super().check()
        if (self.images is None) != (self.captions is None):
            raise InputError(f"{setting_name('images')} and {setting_name('captions')} go together (an image folder "
                             f"and its captions file)")
        for name in ("data", "max_digits"):
            if self.images is not None and self.explicit(name):
                raise InputError(f"{setting_name(name)} is for digit scenes; with {setting_name('images')} the "
                                 f"images come from that folder: leave it out")
        try:
            self.sampling_schedule()  # its own checks (k's range per schedule)
        except InputError as err:
            raise InputError(f"{setting_name('sampling')} {self.sampling}, {setting_name('sampling_k')} "
                             f"{self.sampling_k}, {setting_name('sampling_c')} {self.sampling_c}: {err}") from None
        self.model_config(vocab_size=4, channels=1)  # the model's (a grid left by the pooling blocks)

    def sampling_schedule(self) -> SamplingSchedule:
        return SamplingSchedule(self.sampling, self.sampling_k, self.sampling_c, self.sampling_min)

    def model_config(self, vocab_size: int, channels: int, attention: Optional[str] = None) -> CaptionConfig:
        return CaptionConfig(vocab_size=vocab_size, channels=channels, image_size=self.image_size,
                             cnn_width=self.cnn_width, cnn_blocks=self.cnn_blocks, cell=self.cell,
                             embedding_size=self.embedding_size, hidden_size=self.hidden_size,
                             attention=attention or self.attention, attention_size=self.attention_size,
                             dropout=self.dropout, max_len=self.max_len)


# ---------------------------------------------------------------------- data
Items = Callable[[int], Tuple[np.ndarray, List[str]]]


@dataclass
class CaptionData:
    """Per split (train, valid, test): items(i) -> (image, captions) and their count (None: endless scenes)."""

    splits: Dict[str, Tuple[Items, Optional[int]]]
    vocab: CaptionVocab
    channels: int
    #: test image i -> (digits in reading order, orientation), for the exact-match metrics (digit scenes)
    truths: Optional[Callable[[int], Tuple[Tuple[int, ...], str]]] = None


def caption_data(s: CaptionSettings, vocab_json: Optional[List[str]] = None) -> CaptionData:
    """The digit scenes, or the image folder split 80/10/10 by a permutation seeded by `seed`."""
    from ..data.captions import load_caption_folder, load_image

    if s.images:
        folder = load_caption_folder(s.images, s.captions)
        n = len(folder.paths)
        if n < 3:
            raise InputError(f"captions file {s.captions!r} names {n} image(s); need at least 3 (train, valid, test)")
        order = np.random.default_rng(s.seed).permutation(n).tolist()
        n_test = max(1, n // 10)
        parts = {"test": order[:n_test], "valid": order[n_test:2 * n_test], "train": order[2 * n_test:]}
        vocab = (CaptionVocab.from_json(vocab_json) if vocab_json is not None else
                 CaptionVocab.build([c for k in parts["train"] for c in folder.captions[k]]))

        def items(idx: List[int]) -> Items:
            return lambda i: (load_image(folder.paths[idx[i]], s.image_size, 3), folder.captions[idx[i]])

        return CaptionData({k: (items(v), len(v)) for k, v in parts.items()}, vocab, 3)
    pools = mnist_pools(s.data)
    scenes = {k: DigitScenes(pools[k], s.image_size, max_digits=s.max_digits, seed=s.seed)
              for k in ("train", "valid", "test")}

    def scene_items(split: str) -> Items:
        def item(i: int) -> Tuple[np.ndarray, List[str]]:
            sc = scenes[split].scene(i)
            return sc.image, sc.captions
        return item

    def truths(i: int) -> Tuple[Tuple[int, ...], str]:
        sc = scenes["test"].scene(i)
        return sc.digits, sc.orientation

    return CaptionData({k: (scene_items(k), None) for k in scenes}, digit_vocab(), 1, truths)


def batches(s: CaptionSettings, data: CaptionData) -> Tuple[CaptionBatches, CaptionBatches]:
    """(training batches, the fixed validation batches)."""
    train_items, n_train = data.splits["train"]
    val_items, n_val = data.splits["valid"]
    train_data = CaptionBatches(train_items, n_train, data.vocab, s.batch_size, s.batches_per_epoch, fixed=False,
                                max_len=s.max_len, seed=s.seed)
    n_val = min(s.val_images, n_val or s.val_images)
    vb = min(s.batch_size, n_val)
    val_data = CaptionBatches(val_items, n_val, data.vocab, vb, max(1, n_val // vb), fixed=True, max_len=s.max_len)
    return train_data, val_data


def prepare(s: CaptionSettings, resumed: Optional[Dict[str, Any]], rank: int, world: int) -> Prepared:
    from .._optional import require_extra
    require_extra("vision", "rnnkit train caption", NEEDS)
    data = caption_data(s, resumed["vocab"] if resumed else None)
    config = s.model_config(len(data.vocab), data.channels)
    train_data, val_data = batches(s, data)
    source = ({"images": str(s.images), "captions": str(s.captions)} if s.images
              else {"digit_scenes": {"max_digits": s.max_digits, "seed": s.seed}})
    kind = "Flickr8k/COCO-style folder" if s.images else f"digit scenes (1-{s.max_digits} MNIST digits)"
    return Prepared(CaptionModel(config), CaptionTask(alpha_c=s.alpha_c, schedule=s.sampling_schedule()), train_data,
                    val_data, info={"model": config.to_dict(), "vocab": data.vocab.to_json(), "data": source},
                    report=[f"caption: {kind}, vocabulary {len(data.vocab)}"])


# ---------------------------------------------------------------------- the final evaluation
def evaluate_captioner(model: CaptionModel, items: Items, count: int, vocab: CaptionVocab, *, beam: int,
                       truths: Optional[Callable] = None, batch_size: int = 50) -> Dict[str, Any]:
    """Captions of test images 0..count−1 and their metrics (see models.caption.caption_metrics)."""
    model.eval()
    hyps: List[str] = []
    refs: List[List[str]] = []
    for start in range(0, count, batch_size):
        pairs = [items(i) for i in range(start, min(count, start + batch_size))]
        images = torch.from_numpy(np.stack([p[0] for p in pairs])).to(next(model.parameters()).device)
        hyps += [vocab.decode(h.tokens) for h in model.generate(images, beam_size=beam, return_attention=False)]
        refs += [[" ".join(tokenize(c)) for c in p[1]] for p in pairs]
    metrics = caption_metrics(hyps, refs, [truths(i) for i in range(count)] if truths is not None else None)
    return {"metrics": metrics, "hypotheses": hyps[:20], "references": [r[0] for r in refs[:20]]}


def train_baseline(run: Run, data: CaptionData) -> Tuple[CaptionModel, int]:
    """The no-attention baseline trained for baseline_minutes with the run's optimiser: (model, steps)."""
    from ..training.config import TrainConfig
    from ..training.trainer import Trainer

    s = run.settings
    torch.manual_seed(s.seed)
    base = CaptionModel(s.model_config(len(data.vocab), data.channels, attention="none"))
    train_data, val_data = batches(s, data)
    config = TrainConfig(max_minutes=s.baseline_minutes, optimizer=s.optimizer, lr=s.lr, clip_norm=s.clip_norm,
                         seed=s.seed, quiet=s.quiet, tensorboard=False)
    say(s, f"training the no-attention baseline for {s.baseline_minutes} min")
    summary = Trainer(base, CaptionTask(alpha_c=s.alpha_c, schedule=s.sampling_schedule()), train_data, config,
                      val_data=val_data, device=run.device).fit()
    return base, summary["step"]


def finish(run: Run) -> Dict[str, Any]:
    """BLEU, chrF and exact match on the test split (greedy, beam, the baseline); caption_examples.png."""
    s, out, step = run.settings, run.out, run.summary.get("step")
    data = caption_data(s, run.info["vocab"])
    test_items, n_test = data.splits["test"]
    count = min(s.test_images, n_test or s.test_images)
    name = f"{s.cell} + {s.attention} attention" if s.attention != "none" else f"{s.cell}, no attention"
    rows: Dict[str, Dict[str, float]] = {}
    examples: Dict[str, Any] = {}
    for beam in sorted({1, s.beam}):
        r = evaluate_captioner(run.model, test_items, count, data.vocab, beam=beam, truths=data.truths)
        rows[f"{name}, {decoding(beam)}"], examples[f"beam{beam}"] = r["metrics"], r
    if s.baseline_minutes and s.attention != "none":
        base, base_steps = train_baseline(run, data)
        r = evaluate_captioner(base, test_items, count, data.vocab, beam=s.beam, truths=data.truths)
        rows[f"{s.cell}, no attention (baseline, {base_steps} steps), {decoding(s.beam)}"] = r["metrics"]
        examples["baseline"] = r
    table = metrics_table(rows)
    header = (f"Test split: {count} images, after {step} training steps. BLEU and chrF from sacrebleu (corpus "
              f"level, every phrasing of a scene as a reference, tokens as written).\n\n")
    write_attention(run, [test_items(i) for i in range(min(4, count))], out / "caption_examples.png")
    say(s, f"wrote {out / 'caption_examples.png'}")
    return {"images": count, "step": step, "rows": rows, "examples": examples, "markdown": header + table}


def decoding(beam: int) -> str:
    return "greedy" if beam == 1 else f"beam {beam}"


def metrics_table(rows: Dict[str, Dict[str, float]]) -> str:
    """Markdown: one row per captioner, BLEU-1..4, chrF and (digit scenes) the exact matches in %."""
    keys = ["bleu1", "bleu2", "bleu3", "bleu4", "chrf"]
    names = {"digits_exact": "digits exact %", "layout_exact": "digits+relation exact %"}
    extra = [k for k in names if any(k in m for m in rows.values())]
    head = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "chrF"] + [names[k] for k in extra]
    lines = ["| model | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{m[k]:.1f}" for k in keys + extra) + " |" for name, m in rows.items()]
    return "\n".join(lines)


RECIPE = Recipe("caption", CaptionSettings, prepare, finish, lambda m: CaptionModel(CaptionConfig(**m)),
                lambda info: {"vocab": checked_vocab(info)})


def checked_vocab(info: Dict[str, Any]) -> CaptionVocab:
    vocab = CaptionVocab.from_json(info["vocab"])
    if len(vocab) != info["model"]["vocab_size"]:
        raise ValueError(f"vocabulary of {len(vocab)} words but the model expects {info['model']['vocab_size']}")
    return vocab


def train(settings: Optional[CaptionSettings] = None, **changes: Any) -> Run:
    """Train a captioner: `train(CaptionSettings(max_minutes=5))` or
    `train(images="Images", captions="captions.txt")`."""
    return RECIPE.train(settings, **changes)


def load(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> Run:
    """A trained captioner from its run directory or a checkpoint (best weights first)."""
    return RECIPE.load(path, device)


# ---------------------------------------------------------------------- inference
def caption(run: Run, images: Sequence[Image], beam: int = 1) -> List[str]:
    """One caption per image. images: files (resized to the model's size), or arrays/tensors (C, S, S) or
    (S, S) at the model's size, uint8 0..255 or floats in [0, 1]; beam: beam width (1 = greedy)."""
    return [" ".join(words) for words, _ in _generate(run, _image_batch(run, images), beam)]


def write_attention(run: Run, images: Sequence[Union[Image, Tuple[np.ndarray, List[str]]]], path: Union[str, Path],
                    beam: int = 1) -> List[str]:
    """A PNG at `path`: one row per image, the attention map of every word of its caption; returns the
    captions. An image may come as (image, [reference caption, ...]): the first reference is shown too."""
    from ..models.caption import plot_attention
    refs = [item[1][0] if isinstance(item, tuple) else "" for item in images]
    batch = _image_batch(run, [item[0] if isinstance(item, tuple) else item for item in images])
    out = _generate(run, batch, beam)
    titles = [f"model: {' '.join(words)}" + (f"   |   reference: {ref}" if ref else "")
              for (words, _), ref in zip(out, refs)]
    plot_attention(path, list(batch.cpu()), [w for w, _ in out], [a for _, a in out], titles)
    return [" ".join(words) for words, _ in out]


def _generate(run: Run, batch: torch.Tensor, beam: int) -> List[Tuple[List[str], Optional[torch.Tensor]]]:
    """(words, attention (steps, L)) of the best caption of every image of `batch` (B, C, S, S)."""
    if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1:
        raise InputError(f"{setting_name('beam')} must be an int >= 1 (1 = greedy); got {beam!r}")
    vocab = run.extras.get("vocab") or checked_vocab(run.info)
    return [([vocab.itos[t] for t in h.tokens], h.attention.cpu() if h.attention is not None else None)
            for h in run.model.generate(batch, beam_size=beam)]


def _image_batch(run: Run, images: Sequence[Image]) -> torch.Tensor:
    """(B, C, S, S) float32 on the run's device; InputError naming the image that does not fit."""
    from ..data.captions import load_image
    if isinstance(images, (str, Path, np.ndarray, torch.Tensor)) and not (
            isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4):
        images = [images]  # one image
    c = run.model.config
    arrays = []
    for k, image in enumerate(images):
        if isinstance(image, (str, Path)):
            arrays.append(load_image(image, c.image_size, c.channels))
            continue
        a = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else image
        if not isinstance(a, np.ndarray):
            raise InputTypeError(f"images[{k}] must be a path, a numpy array or a tensor; got {type(image).__name__}")
        a = a[None] if a.ndim == 2 and c.channels == 1 else a
        if a.shape != (c.channels, c.image_size, c.image_size):
            raise InputError(f"images[{k}] must have shape ({c.channels}, {c.image_size}, {c.image_size}) for this "
                             f"model (or be an image file); got {tuple(image.shape)}")
        a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise InputError(f"images[{k}]: float images must lie in [0, 1] (or be uint8 0..255)")
        arrays.append(a)
    if not arrays:
        raise InputError("caption: no images given")
    return torch.from_numpy(np.stack(arrays)).to(run.device)
