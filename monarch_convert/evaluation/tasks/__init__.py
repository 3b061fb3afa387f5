"""The evaluator's tasks, one module each, and the registry :func:`get_task` looks them up in.

A task subclasses :class:`base.Task` and overrides the hooks where it differs (what head and
columns it needs, how it batches, runs, predicts, scores and compares outputs). Importing this
package imports neither torch nor transformers: the tasks do when they run.
"""

from __future__ import annotations

from ...errors import MonarchConvertError
from .base import Batch, Options, Task, TaskOptions
from .image_classification import ImageClassification
from .question_answering import QuestionAnswering
from .sentence_embedding import SentenceEmbedding
from .summarization import Summarization
from .text_classification import TextClassification

TASKS: dict[str, type[Task]] = {
    t.name: t for t in (ImageClassification, TextClassification, QuestionAnswering, Summarization, SentenceEmbedding)
}
ALIASES = {"image": "image-classification", "text": "text-classification", "qa": "question-answering",
           "extractive-qa": "question-answering", "summarize": "summarization", "embedding": "sentence-embedding",
           "sentence-embeddings": "sentence-embedding", "embeddings": "sentence-embedding"}

__all__ = ["ALIASES", "TASKS", "Batch", "Options", "Task", "TaskOptions", "get_task"]


def get_task(name: str) -> Task:
    """A fresh instance of the task ``name`` (or an alias), which holds this evaluation's state."""
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in TASKS:
        raise MonarchConvertError(f"unknown task {name!r} (tasks: {', '.join(TASKS)})")
    return TASKS[key]()
