"""The names of the values a batch, an engine's output and a record carry, in one place.

As MONAI's :class:`~monai.utils.enums.CommonKeys` (whose ``image``, ``label``, ``pred`` and
``loss`` these equal), a ``StrEnum``: members compare and hash as their strings, so
``batch[Keys.LABEL_MASK]`` and ``batch["label_mask"]`` are the same entry, configs keep writing the
plain strings, and code imports the names from here instead of from the engine that sets them.
"""

from __future__ import annotations

from monai.utils.enums import CommonKeys, StrEnum

__all__ = ["Keys"]


class Keys(StrEnum):
    """Batch, record and engine-output keys of the bundle."""

    IMAGE = CommonKeys.IMAGE.value  # the network's input
    LABEL = CommonKeys.LABEL.value  # multi-hot (multi-label) or one-hot (multi-class) float vector
    PRED = CommonKeys.PRED.value  # the network's output (logits in training, probabilities after postprocessing)
    LOSS = CommonKeys.LOSS.value  # the summed training loss
    LABEL_MASK = "label_mask"  # 1 where a label is known, 0 where not (left out of losses and metrics)
    LOSS_TERMS = "loss_terms"  # engine output: {term name: float} of one iteration, each already weighted
    LOSS_TERM_WEIGHTS = "loss_term_weights"  # engine output: {term name: samples its value averages} where not all
    TEACHER_IMAGE = "teacher_image"  # the image at the teacher's input size, when the teacher sees another size
    SAMPLE_INDEX = "sample_index"  # position in the training list: the key of teacher outputs computed once
    ERROR = "error"  # "" or why the image could not be read (LoadCXRd(on_error="record"))
    FILENAME = "filename"  # the input file of an inference sample
