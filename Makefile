# make run   : create .venv, install rnnrt, run the CPU demo
# make test  : create .venv, install rnnrt with test extras, run the whole suite
PY ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install run test test-gpu bench proto clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/python -m rnnrt.demo

test: install
	$(BIN)/python -m pytest -q

test-gpu: install
	$(BIN)/python -m pytest -q -m gpu

bench: install
	$(BIN)/python benchmarks/cpu_step.py

# Regenerates rnnrt/caffe/caffe.desc (a FileDescriptorSet) from rnnrt/caffe/caffe.proto.
proto: install
	$(BIN)/python -m grpc_tools.protoc -Irnnrt/caffe --include_imports \
		--descriptor_set_out=rnnrt/caffe/caffe.desc rnnrt/caffe/caffe.proto

clean:
	rm -rf $(VENV) build *.egg-info
