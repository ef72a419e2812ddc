"""Models built on rnnkit.Recurrent, each with the small task the trainer needs."""

from ..cells.registry import CELLS, make_cell
from .char_lm import LanguageModelTask, LMConfig, RecurrentLM, sample
from .word_lm import word_lm, word_task
from .scheduled_sampling import SamplingSchedule
from .seq2seq import Seq2Seq, Seq2SeqConfig, Seq2SeqTask

__all__ = ["CELLS", "LMConfig", "RecurrentLM", "LanguageModelTask", "make_cell", "sample", "word_lm", "word_task",
           "Seq2Seq", "Seq2SeqConfig", "Seq2SeqTask", "SamplingSchedule"]
