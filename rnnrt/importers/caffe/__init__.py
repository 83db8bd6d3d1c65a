"""Caffe importer: reader (prototxt + caffemodel), converters and LSTM/RNN expansion."""

from rnnrt.importers.caffe.proto import CaffeSchema, ProtoEnum, ProtoExtension, ProtoField, ProtoMessage, default_schema
from rnnrt.importers.caffe.reader import CaffeLayer, CaffeNet, load_net, parse_prototxt

__all__ = [
    "CaffeLayer",
    "CaffeNet",
    "CaffeSchema",
    "ProtoEnum",
    "ProtoExtension",
    "ProtoField",
    "ProtoMessage",
    "default_schema",
    "load_net",
    "parse_prototxt",
]
