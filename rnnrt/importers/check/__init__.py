"""The convert-time equivalence check: the step graph computes what the original model computes.

After an importer made a step graph, :func:`check_conversion` runs it in ONNX Runtime on generated frames
(seeded; each input's dtype and shape, floats in [-1, 1), integers 0/1; inputs bound with ``--set`` stay
bound) over two short sequences with a reset between them, and checks:

- **streaming**: one frame per call with the state carried equals the original model. Where the step graph
  carries state the original does not (recurrent nodes whose state was exposed, carried context), the
  reference is the original's whole-sequence run (the sequence concatenated along its time axis); where
  the original has the state pairs itself, the reference is the original fed its state by hand (and the
  context ``--context`` carries, prepended by hand as the model's own wrapper does).
- **batch**: streams with different data in one batch equal each stream alone. When they do not, the op
  that mixes the rows is found and the model is marked one stream per batch
  (:attr:`rnnrt.ir.checks.ChecksRecord.batch_one`); a ``StreamPool`` over more than one slot refuses it.
- **reset**: a stream reset in the middle (its state zeroed, the continuation input 0, as the Session does)
  equals a fresh stream fed the same frames.
- **reference** (optional): the step graph streamed over a recorded feed (``call{k}/{name}`` .npz, the
  format ``rnnrt verify --feed`` reads) equals the outputs recorded there, e.g. from the package's own
  wrapper: this tells a model whose wrapper prepends context (Silero) from one converted without it.

A difference in streaming, reset or reference raises :class:`rnnrt.errors.EquivalenceError` naming the
first differing step and output and, where it can be found, the op: both runs are repeated with every
intermediate tensor exposed as an output and the first node whose outputs differ while its inputs agree
is named. Only ONNX Runtime and the step graph are used (no runtime stage).

One module per part: :mod:`.frames` (generated inputs, streams run with the state carried), :mod:`.compare`,
:mod:`.streaming`, :mod:`.batch` (the batch and reset checks), :mod:`.reference`, :mod:`.culprit` (bisection
of the differing op) and :mod:`.conversion` (the driver, :func:`check_conversion`, and the record).

::

    from rnnrt.ir.config import save_step_graph
    from rnnrt.importers.check import check_conversion
    from rnnrt.importers.onnx.importer import convert_onnx

    step = convert_onnx("lstm.onnx", add_reset=True)
    step = check_conversion(step, original="lstm.onnx")      # raises EquivalenceError on a difference
    save_step_graph(step, "out")                             # out/model.yaml records `checks:`
"""

from rnnrt.importers.check.batch import ROW_MIXING_OPS
from rnnrt.importers.check.compare import TOLERANCE
from rnnrt.importers.check.conversion import BUDGET_S, DEFAULT_STEPS, MAX_EXTERNAL_BYTES, check_conversion
from rnnrt.importers.check.frames import STREAMS

__all__ = ["BUDGET_S", "DEFAULT_STEPS", "MAX_EXTERNAL_BYTES", "ROW_MIXING_OPS", "STREAMS", "TOLERANCE", "check_conversion"]
