"""SentencePiece subword tokenization (the `sentencepiece` package: BPE or unigram).

A trained model is a few hundred kB of protobuf bytes; `SentencePieceTokenizer`
holds those bytes, so a checkpoint can carry them (base64 in its JSON) and a run
directory can hold them as a `.model` file that the `spm_*` tools read too.

Special ids are fixed for every model rnnkit trains: pad 0, unk 1, bos 2, eos 3.
"""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path
from typing import Any, Dict, Iterable, List, Sequence, Union

from .text import DataError
from .._optional import require
from ..errors import InputError

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
MODEL_TYPES = ("bpe", "unigram")


class SentencePieceTokenizer:
    """Text <-> subword ids with a trained SentencePiece model (given as its serialized bytes)."""

    def __init__(self, model_bytes: bytes) -> None:
        spm = require("sentencepiece", extra="nlp", purpose="SentencePiece tokens")
        if not model_bytes:
            raise InputError("SentencePieceTokenizer: the model is empty")
        self.model_bytes = bytes(model_bytes)
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(self.model_bytes)
        except Exception as err:  # sentencepiece raises RuntimeError/OSError depending on the version
            raise InputError(f"SentencePieceTokenizer: not a SentencePiece model ({err})") from None
        ids = (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id())
        if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise InputError(f"SentencePieceTokenizer: expected special ids pad/unk/bos/eos = 0/1/2/3; the model "
                             f"has {ids} (train it with rnnkit.data.spm.train_sentencepiece)")

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.model_bytes).hexdigest()

    def encode(self, text: str) -> List[int]:
        """Subword ids of `text` (no bos/eos added)."""
        return self.sp.encode(text, out_type=int)

    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        return self.sp.encode(list(texts), out_type=int)

    def pieces(self, text: str) -> List[str]:
        return self.sp.encode(text, out_type=str)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`; pad/bos/eos are dropped."""
        return self.sp.decode([int(i) for i in ids if i not in (PAD_ID, BOS_ID, EOS_ID)])

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i))

    def piece_to_id(self, piece: str) -> int:
        """The id of `piece`; InputError if the model does not have it (SentencePiece would give unk)."""
        i = self.sp.piece_to_id(piece)
        if i == UNK_ID and piece != self.sp.id_to_piece(UNK_ID):
            raise InputError(f"the SentencePiece model has no piece {piece!r}")
        return i

    # --------------------------------------------------------- persistence
    def to_json(self) -> Dict[str, Any]:
        return {"sha256": self.sha256, "vocab_size": self.vocab_size,
                "model_b64": base64.b64encode(self.model_bytes).decode("ascii")}

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "SentencePieceTokenizer":
        raw = base64.b64decode(d["model_b64"])
        if hashlib.sha256(raw).hexdigest() != d.get("sha256"):
            raise InputError("SentencePiece model: SHA-256 differs from the recorded one (corrupt)")
        return cls(raw)

    @classmethod
    def load(cls, path: Union[str, Path]) -> "SentencePieceTokenizer":
        return cls(Path(path).read_bytes())

    def save(self, path: Union[str, Path]) -> None:
        """Write the .model file atomically."""
        from ..training.checkpoint import _write_atomic
        _write_atomic(Path(path), self.model_bytes)


def train_sentencepiece(sentences: Iterable[str], vocab_size: int, model_type: str = "bpe", *,
                        character_coverage: float = 1.0, num_threads: int = 1,
                        symbols: Sequence[str] = ()) -> SentencePieceTokenizer:
    """Train a SentencePiece model on `sentences` (one text per item), in memory.

    vocab_size is an upper bound: a corpus too small for it gets fewer pieces
    (hard_vocab_limit off) rather than an error. character_coverage 1.0 keeps
    every character (Hangul syllables included); lower it for huge alphabets. `symbols` are pieces kept
    whole with ids of their own (e.g. target-language tokens `<2ko>`), right after the special ids.
    """
    spm = require("sentencepiece", extra="nlp", purpose="SentencePiece tokens")
    if model_type not in MODEL_TYPES:
        raise InputError(f"spm model type must be one of {MODEL_TYPES}; got {model_type!r}")
    if not isinstance(vocab_size, int) or vocab_size < 8:
        raise InputError(f"vocab_size must be an int >= 8; got {vocab_size!r}")
    texts = [s for s in sentences if s.strip()]
    if not texts:
        raise DataError("cannot train SentencePiece on an empty corpus")
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=buf, vocab_size=vocab_size, model_type=model_type,
            character_coverage=character_coverage, pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
            hard_vocab_limit=False, num_threads=num_threads, minloglevel=2, input_sentence_size=0,
            shuffle_input_sentence=False, user_defined_symbols=list(symbols))
    except RuntimeError as err:  # e.g. a vocabulary smaller than the corpus's alphabet
        reason = str(err).split("] ", 1)[-1].strip()
        raise DataError(f"SentencePiece ({model_type}, vocab_size {vocab_size}) cannot be trained on this data: "
                        f"{reason}") from None
    return SentencePieceTokenizer(buf.getvalue())
