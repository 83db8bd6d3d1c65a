"""``rnnrt verify``: run one stream through several backends side by side and compare every step.

Think ``polygraphy run --trt --onnxrt``, but stateful: every backend gets its own :class:`Session`,
the same frames step by step, the state carried inside each Session, and the same resets at the same
steps. After every step each backend's outputs (and, by default, its carried state) are compared with
the reference backend (the first one) and with the outputs *recorded* in the feed, if it has any
(a Caffe ``io.npz`` is such a feed). Reported per compared tensor: the max abs and rel error over the
stream, the step where it was worst, the first step beyond ``atol + rtol * |reference|``, and the
error of every step (``--json``, ``--plot``).

Backends (``--backends``, comma-separated; each ``BASE[:key=value]...``):

- ``onnxruntime``: the config's graph on ONNX Runtime. Options ``opt=disable|basic|extended|all``
  (graph optimization level), ``graph=plan`` (run the graph the plan was built from: the reduced
  precision rewrite of ``rnnrt build --precision fp16``), ``threads=N``.
- ``tensorrt``: the plan built for the config (found through its manifest). Options ``plan=PATH``,
  ``runtime=tensorrt_lean`` (force a runtime module), ``runtime_cache=PATH`` (a TensorRT-RTX runtime
  cache chosen at run time).
- ``module.path:callable``: your own engine. ``callable(config, **options)`` returns an engine or an
  engine factory (e.g. a stand-in GPU engine in tests). An engine installed under the entry-point group
  ``rnnrt.engines`` is named by its bare name; it is loaded only when named. Every backend is resolved
  by the engine registry, :func:`rnnrt.engines.select.engine_for` (as ``rnnrt.load`` resolves it).

Every backend also takes the Session options ``feedback=copy|swap``, ``cuda_graph=0|1``, and
``label=NAME`` (its name in the report), ``precision=fp32|fp16|bf16`` (for the default tolerance).

Parts: ``backends.py`` (the ``--backends`` grammar, resolved by the engine registry), ``feeds.py`` (feed
files, generated frames, ``--reset-at``), ``compare.py`` (tolerances, per-step errors), ``report.py`` (table,
JSON, plot), ``run.py`` (:func:`verify` itself).

Example::

    from rnnrt.runtime.verify import verify

    report = verify("out/model.yaml", ["onnxruntime", "tensorrt"], steps=200, streams=4, resets=[(100, None)])
    print(report.table())
    assert report.passed
"""

from rnnrt.runtime.verify.backends import Backend, BackendSpec, parse_backends, resolve_backend
from rnnrt.runtime.verify.compare import TOLERANCES, Comparison, compare
from rnnrt.runtime.verify.feeds import MAX_FEED_BYTES, Feed, generate_feed, load_feed, parse_resets
from rnnrt.runtime.verify.report import SCHEMA, VerifyReport
from rnnrt.runtime.verify.run import default_backends, verify

__all__ = [
    "MAX_FEED_BYTES",
    "SCHEMA",
    "TOLERANCES",
    "Backend",
    "BackendSpec",
    "Comparison",
    "Feed",
    "VerifyReport",
    "compare",
    "default_backends",
    "generate_feed",
    "load_feed",
    "parse_backends",
    "parse_resets",
    "resolve_backend",
    "verify",
]
