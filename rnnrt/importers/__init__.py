"""Importers: read a trained model (Caffe prototxt + caffemodel, ONNX) and write an ONNX step graph."""
