"""Layer 3, model optimisations: each technique turns a trained model into a deployable one.

One module per technique (``none``, ``weight_pruning``, ``channel_pruning``, ``fp16``, ``int8``;
every public module of the package is imported, so a new technique is one new module), the
deployed number formats (``precisions``; the heavy lowerings in private modules, imported when a
model is built) and what they share (``base``: :class:`Compressed`, :func:`compress`).

A technique is ``function(model, dataset, params, fine_tune) -> (model, record)``. It must be
deterministic in the structure it produces, so that a cached result is rebuilt by running the
technique again without fine-tuning (``fine_tune=None``) and loading the cached state dict. A
technique that changes the arithmetic names it in its record (``precision``, ``tolerance``, and for
int8 ``calibration`` with the ``calibration_split``, ``calibration_samples`` and ``calibration_digest``
of the training images that set it);
:func:`compress` hands them on as the fields of :class:`Compressed`.
"""

from dlas_dse.registry import import_modules

# each module registers its technique, these first, in the order they are listed
import_modules(__name__, __path__, first=("none", "weight_pruning", "channel_pruning", "fp16", "int8"))

# re-exported after import_modules, so that techniques register in the order above
from dlas_dse.stack.compression.base import FINE_TUNING, Compressed, FineTune, compress  # noqa: E402
from dlas_dse.stack.compression.int8 import calibrate_input_scales  # noqa: E402
from dlas_dse.stack.compression.precisions import PRECISIONS, Precision, precision  # noqa: E402
from dlas_dse.stack.compression.weight_pruning import global_magnitude_masks  # noqa: E402

__all__ = ["FINE_TUNING", "PRECISIONS", "Compressed", "FineTune", "Precision", "calibrate_input_scales", "compress",
           "global_magnitude_masks", "precision"]
