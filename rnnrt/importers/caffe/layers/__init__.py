"""Caffe layer converters, one module per layer family. Importing this package registers them."""

from rnnrt.importers.caffe.layers import activation  # noqa: F401 (registers)
from rnnrt.importers.caffe.layers import conv  # noqa: F401 (registers)
from rnnrt.importers.caffe.layers import eltwise  # noqa: F401 (registers)
from rnnrt.importers.caffe.layers import embed  # noqa: F401 (registers)
from rnnrt.importers.caffe.layers import inner_product  # noqa: F401 (registers)
from rnnrt.importers.caffe.layers import io  # noqa: F401 (registers)
from rnnrt.importers.caffe.layers import normalization  # noqa: F401 (registers)
from rnnrt.importers.caffe.layers import pooling  # noqa: F401 (registers)
from rnnrt.importers.caffe.layers import recurrent  # noqa: F401 (registers)
from rnnrt.importers.caffe.layers import shape  # noqa: F401 (registers)
