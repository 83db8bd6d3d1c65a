"""The Session's refusals and slot paths, checked on what they say and what they leave.

- Every refusal of ``write_state``/``read_state``/``step``/``step_chunk``/``step_async``/``reset``/``load``
  is compared as its whole typed message, and the state, the sequence-start marks and the arena the next
  step reads are bit-identical after it.
- Slot steps (``step(slots=...)``, ``step_chunk(slots=...)``) on a fixed and a dynamic batch, with ``copy``
  and ``swap`` feedback, equal each stream stepped alone; marks persist per slot; which arena holds the
  state follows the feedback rule of the module doc (a ``swap`` step of most slots swaps, of a few copies).
- ``load``'s options take effect: the engine's row count, validation against the ONNX graph, the plan
  looked up next to the YAML given.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import rnnrt
from rnnrt.engines.onnxruntime import OnnxRuntimeEngine
from rnnrt.errors import BindingError, ConfigError, StateError
from rnnrt.ir.config import load_config
from rnnrt.runtime.memory import DoneHandle
from tests.models import MODELS

B = 4
STATES = ["lstm1.c0", "lstm1.h0"]  # lstm_dynamic_batch / lstm_t1: (B, 7) float32 each
# Dynamic batch (the engine runs the listed rows) and fixed batch (the whole batch runs, rows scattered).
KINDS = [("lstm_dynamic_batch", {}, {"batch_size": B}), ("lstm_t1", {"batch": B}, {})]


def _load(tmp_path: Path, name: str = "lstm_dynamic_batch", params: dict | None = None, **kw):
    kw = {"batch_size": B, **kw} if name == "lstm_dynamic_batch" else kw
    yaml = MODELS[name](**(params if params is not None else ({"batch": B} if name == "lstm_t1" else {}))).save(
        tmp_path / name)
    return rnnrt.load(yaml, backend="onnxruntime", threads=1, **kw)


def _x(rng, n, k=None):
    shape = (1, n, 5) if k is None else (k, 1, n, 5)
    return rng.uniform(-1, 1, shape).astype(np.float32)


def _snapshot(s):
    return ({n: v.tobytes() for n, v in s.state.items()}, s.sequence_starts.tolist(), s.in_arena)


def _refused(s, error, message, call):
    """``call()`` raises ``error`` with exactly ``message`` and changes nothing in ``s``."""
    before = _snapshot(s)
    with pytest.raises(error) as info:
        call()
    assert str(info.value) == message
    assert _snapshot(s) == before, "a refusal changed the state, the marks or the arena"


@pytest.fixture
def stepped(tmp_path):
    """A swap-feedback session of batch 4 after two steps (state non-zero, no marks, arena 0)."""
    rng = np.random.default_rng(3)
    with _load(tmp_path, feedback="swap") as s:
        s.step({"data": _x(rng, B)}), s.step({"data": _x(rng, B)})
        yield s


# Refusals, whole messages.

def test_write_state_refusals(stepped):
    s = stepped
    good = {n: np.zeros((2, 7), np.float32) for n in STATES}
    expected = f"Expected {STATES}."
    _refused(s, BindingError, f"Session.write_state | Got state names ['bogus', 'lstm1.h0'].\nNote: {expected}",
             lambda: s.write_state([0, 1], {"lstm1.h0": good["lstm1.h0"], "bogus": good["lstm1.c0"]}))
    _refused(s, BindingError, f"Session.write_state | Got state names ['lstm1.h0'].\nNote: {expected}",
             lambda: s.write_state([0, 1], {"lstm1.h0": good["lstm1.h0"]}))
    _refused(s, BindingError, f"Session.write_state | Got state names list.\nNote: {expected}",
             lambda: s.write_state([0, 1], [good["lstm1.h0"], good["lstm1.c0"]]))
    # Names that are not strings are listed as text (sorted together with the strings).
    _refused(s, BindingError, f"Session.write_state | Got state names ['3', 'lstm1.c0'].\nNote: {expected}",
             lambda: s.write_state([0, 1], {3: good["lstm1.h0"], "lstm1.c0": good["lstm1.c0"]}))
    # Each state: an ndarray of exactly the dtype and the shape for these slots (the first bad one is named).
    shape_note = "Expected a float32 array of shape (2, 7)."
    for name in STATES:
        for bad, got in [(np.zeros((2, 7), np.float64), "('float64', (2, 7))"),
                         (np.zeros((2, 7), np.float16), "('float16', (2, 7))"),  # a safe cast is still refused
                         (np.zeros((3, 7), np.float32), "('float32', (3, 7))"),
                         (np.zeros((7, 2), np.float32), "('float32', (7, 2))"),
                         (np.zeros((2, 7), np.float32).tolist(), "list")]:
            values = {**good, name: bad}
            _refused(s, BindingError, f"State {name!r} | Received {got}.\nNote: {shape_note}",
                     lambda: s.write_state([0, 1], values))
    _refused(s, BindingError, "Session.write_state(slots=1) | Got a int, not a list of slots.\n"
             "Note: Pass a list of slot numbers in [0, 4), e.g. slots=[1].", lambda: s.write_state(1, good))
    _refused(s, BindingError, "Slot 4 | Is not a valid slot of a session with batch size 4.\n"
             "Note: Slots are integers in [0, 4).", lambda: s.write_state([0, 4], good))


def test_read_state_and_closed_refusals(tmp_path):
    with _load(tmp_path) as s:
        _refused(s, BindingError, "Session.read_state(slots='01') | Got a str, not a list of slots.\n"
                 "Note: Pass a list of slot numbers in [0, 4), e.g. slots=[1].", lambda: s.read_state("01"))
        _refused(s, BindingError, "Slot -1 | Is not a valid slot of a session with batch size 4.\n"
                 "Note: Slots are integers in [0, 4).", lambda: s.read_state([-1]))
        _refused(s, BindingError, "Session.reset(slots=2) | Got a int, not a list of slots.\n"
                 "Note: Pass a list of slot numbers in [0, 4), e.g. slots=[1].", lambda: s.reset(2))
    frame = {"data": np.zeros((1, B, 5), np.float32)}
    calls = {"reset": lambda: s.reset(), "input_buffers": lambda: s.input_buffers(),
             "read_state": lambda: s.read_state([0]),
             "write_state": lambda: s.write_state([0], {n: np.zeros((1, 7), np.float32) for n in STATES}),
             "step": lambda: s.step(frame), "step_chunk": lambda: s.step_chunk({"data": frame["data"][None]})}
    calls["step_async"] = lambda: s.step_async(frame)
    for what, call in calls.items():
        with pytest.raises(StateError) as info:
            call()
        name = "step" if what == "step_async" else what
        assert str(info.value) == f"Session | {name}() was called after close().\nNote: Create a new Session."
    with pytest.raises(StateError) as info:
        s.state
    assert str(info.value) == "Session | state was read after close().\nNote: Read it before closing the Session."


def test_step_refusals(stepped):
    s = stepped
    rng = np.random.default_rng(4)
    _refused(s, BindingError, "Session.step | out= got a list.\nNote: Pass a mapping {output name: numpy array}.",
             lambda: s.step({"data": _x(rng, B)}, out=[np.empty((1, B, 7), np.float32)]))
    _refused(s, BindingError, "Session.step(slots=...) | Slot 1 is listed twice.\n"
             "Note: Each slot takes one batch row per step.", lambda: s.step({"data": _x(rng, 2)}, slots=[1, 1]))
    _refused(s, BindingError, "Session.step(slots=3) | Got a int, not a list of slots.\n"
             "Note: Pass a list of slot numbers in [0, 4), e.g. slots=[1].", lambda: s.step({"data": _x(rng, 1)}, 3))
    _refused(s, BindingError, "Session.step(slots=...) | Slot 2 is listed twice.\n"
             "Note: Each slot takes one batch row per step.",
             lambda: s.step_async({"data": _x(rng, 3)}, slots=[2, 0, 2]))
    _refused(s, BindingError, "Session.step_chunk(slots=...) | Slot 0 is listed twice.\n"
             "Note: Each slot takes one batch row per step.",
             lambda: s.step_chunk({"data": _x(rng, 2, k=3)}, slots=[0, 0]))
    _refused(s, BindingError, "Session.step_chunk(slots=(1+1j)) | Got a complex, not a list of slots.\n"
             "Note: Pass a list of slot numbers in [0, 4), e.g. slots=[1].",
             lambda: s.step_chunk({"data": _x(rng, 1, k=2)}, slots=1j + 1))


def test_no_slots_step_nothing(stepped):
    s = stepped
    before = _snapshot(s)
    assert s.step({"data": np.zeros((1, 0, 5), np.float32)}, slots=[]) == {}
    handle = s.step_async({"data": np.zeros((1, 0, 5), np.float32)}, slots=[])
    assert isinstance(handle, DoneHandle) and handle.done() and handle.wait() == {}
    assert s.step_chunk({"data": np.zeros((2, 1, 0, 5), np.float32)}, slots=[]) == {}
    s.reset(slots=[])
    assert _snapshot(s) == before


def test_repr_names_model_engine_batch_and_closed(tmp_path):
    s = _load(tmp_path)
    model = str(s.config.model_path)
    assert repr(s) == f"Session(model={model!r}, engine='OnnxRuntimeEngine', batch_size=4, closed=False)"
    s.close()
    assert repr(s) == f"Session(model={model!r}, engine='OnnxRuntimeEngine', batch_size=4, closed=True)"


# Marks and written state.

def test_write_state_start_decides_the_auto_continuation(tmp_path):
    """A slot written with start=True begins a sequence at its next step (the auto-filled continuation is 0,
    so an LSTM ignores the written state there); start=False continues from the written state."""
    rng = np.random.default_rng(5)
    with _load(tmp_path) as s, _load(tmp_path / "fresh") as fresh:
        s.step({"data": _x(rng, B)})
        assert not s.sequence_starts.any()
        written = {n: rng.uniform(-1, 1, (1, 7)).astype(np.float32) for n in STATES}
        s.write_state([2], written, start=True)
        assert s.sequence_starts.tolist() == [False, False, True, False]
        assert {n: v.tobytes() for n, v in s.read_state([2]).items()} == {n: v.tobytes() for n, v in written.items()}
        x = _x(rng, B)
        y = s.step({"data": x})["lstm1"]
        assert not s.sequence_starts.any()
        np.testing.assert_array_equal(y[:, 2], fresh.step({"data": x})["lstm1"][:, 2])
        # start=False (the default): the written state carries on, the marks stay as they were.
        s.reset(slots=[0])
        s.write_state([2], written)
        assert s.sequence_starts.tolist() == [True, False, False, False]
        fresh.write_state([2], written)
        x = _x(rng, B)
        np.testing.assert_array_equal(s.step({"data": x[:, 2:3]}, slots=[2])["lstm1"],
                                      fresh.step({"data": x})["lstm1"][:, 2:3])
        assert s.sequence_starts.tolist() == [True, False, False, False]


def test_reset_marks_every_slot(tmp_path):
    rng = np.random.default_rng(6)
    with _load(tmp_path) as s:
        s.step({"data": _x(rng, B)})
        assert s.sequence_starts.tolist() == [False] * B
        s.reset(slots=[3])
        assert s.sequence_starts.tolist() == [False, False, False, True]
        s.reset()
        assert s.sequence_starts.tolist() == [True] * B
        assert all(not v.any() for v in s.state.values())


# Slot steps against each stream alone.

def _solo_outputs(tmp_path, name, params, xs, plan):
    """Per tick, per slot in the plan: the output of that slot's stream stepped alone in a batch-1 session."""
    solo_params, solo_kw = ({}, {"batch_size": 1}) if name == "lstm_dynamic_batch" else ({"batch": 1}, {})
    want = {}
    with _load(tmp_path / "solo", name, solo_params, **solo_kw) as solo:
        for slot in range(B):
            solo.reset()
            for t, slots in enumerate(plan):
                if slot in slots:
                    i = slots.index(slot)
                    want[t, slot] = solo.step_chunk({"data": xs[t][:, :, i:i + 1]})["lstm1"][:, :, 0]
    return want


@pytest.mark.parametrize("feedback", ["copy", "swap"])
@pytest.mark.parametrize("name,params,kw", KINDS, ids=["dynamic", "fixed"])
def test_step_chunk_slots_equal_each_stream_alone(tmp_path, name, params, kw, feedback):
    rng = np.random.default_rng(7)
    # [0, 2, 1, 3]: every slot, first and last in place, the middle swapped (not the full batch in order).
    plan = [[0, 1, 2, 3], [2], [3, 0, 1], [0, 2, 1, 3], [1, 3], [2, 1, 0, 3], [0]]
    xs = [_x(rng, len(slots), k=3) for slots in plan]
    with _load(tmp_path, name, params, feedback=feedback, **kw) as s:
        got = []
        for slots, x in zip(plan, xs):
            before = s.state
            got.append(s.step_chunk({"data": x}, slots=slots)["lstm1"])
            absent = sorted(set(range(B)) - set(slots))
            for n, v in s.state.items():
                assert v[absent].tobytes() == before[n][absent].tobytes(), f"absent rows of {n} changed"
    want = _solo_outputs(tmp_path, name, params, xs, plan)
    for t, slots in enumerate(plan):
        for i, slot in enumerate(slots):
            np.testing.assert_allclose(got[t][:, :, i], want[t, slot], atol=1e-6, err_msg=f"slot {slot} tick {t}")


@pytest.mark.parametrize("name,params,kw", KINDS, ids=["dynamic", "fixed"])
def test_step_chunk_clears_only_the_stepped_slots_marks(tmp_path, name, params, kw):
    rng = np.random.default_rng(8)
    with _load(tmp_path, name, params, **kw) as s, _load(tmp_path / "ref", name, params, **kw) as ref:
        s.step({"data": _x(rng, B)})
        s.reset(slots=[1, 2])
        x = _x(rng, 1, k=2)
        y = s.step_chunk({"data": x}, slots=[1])["lstm1"]
        assert s.sequence_starts.tolist() == [False, False, True, False]  # slot 2 has not stepped: still t=0
        np.testing.assert_allclose(y[:, :, 0], ref.step_chunk({"data": np.repeat(x, B, axis=2)})["lstm1"][:, :, 1],
                                   atol=1e-6)
        # Slot 2's first step is still a sequence start: it equals a fresh stream.
        x = _x(rng, 1)
        ref.reset()
        np.testing.assert_allclose(s.step({"data": x}, slots=[2])["lstm1"],
                                   ref.step({"data": np.repeat(x, B, axis=1)})["lstm1"][:, :1], atol=1e-6)


@pytest.mark.parametrize("chunk", [False, True], ids=["step", "step_chunk"])
def test_swap_feedback_swaps_for_most_slots_and_copies_for_a_few(tmp_path, chunk):
    """``feedback: swap``: a step of more than half the slots swaps the arenas (the others' rows are carried
    over), of half or fewer copies the stepped rows back; ``copy`` never swaps. The state is right either way.
    A fixed batch: the whole batch runs into the output arena (a dynamic batch on the host writes the
    stepped rows in place, so its arena never changes)."""
    rng = np.random.default_rng(9)
    fixed = ("lstm_t1", {"batch": B})
    plan = [([0, 1, 2], 1), ([3, 1], 1), ([2], 1), ([0, 1, 2, 3], 0), ([1, 3, 0], 1), ([0, 3], 1), (None, 0)]
    with _load(tmp_path, *fixed, feedback="swap") as s, _load(tmp_path / "copy", *fixed, feedback="copy") as c, \
            _load(tmp_path / "ref", *fixed, feedback="copy") as ref:
        for slots, arena in plan:
            n = B if slots is None else len(slots)
            x = _x(rng, n, k=2 if chunk else None)
            full = x if slots is None else np.zeros(x.shape[:-2] + (B, 5), np.float32)
            if slots is not None:
                full[..., slots, :] = x
            before = ref.state
            if chunk:
                got, also = s.step_chunk({"data": x}, slots=slots), c.step_chunk({"data": x}, slots=slots)
                want = ref.step_chunk({"data": full})
            else:
                got, also = s.step({"data": x}, slots=slots), c.step({"data": x}, slots=slots)
                want = ref.step({"data": full})
            rows = list(range(B)) if slots is None else slots
            np.testing.assert_allclose(got["lstm1"], want["lstm1"][..., rows, :], atol=1e-6)
            np.testing.assert_array_equal(also["lstm1"], got["lstm1"])
            # ref stepped every slot: put the unlisted slots back so that ref follows s.
            absent = sorted(set(range(B)) - set(rows))
            if absent:
                ref.write_state(absent, {k: v[absent] for k, v in before.items()})
            assert s.in_arena == arena, f"slots {slots}"
            assert c.in_arena == 0
            for k, v in ref.state.items():
                np.testing.assert_allclose(s.state[k], v, atol=1e-6, err_msg=k)
                np.testing.assert_array_equal(c.state[k], s.state[k], err_msg=k)


def test_every_slot_in_order_is_a_full_batch_step(tmp_path):
    """``slots`` listing every slot in order is the full-batch step (``slots=None``): on a dynamic batch with
    swap feedback it swaps the arenas like a full step, where a step of some slots writes their rows in place."""
    rng = np.random.default_rng(10)
    with _load(tmp_path, feedback="swap") as s, _load(tmp_path / "ref", feedback="swap") as ref:
        for slots, arena in [([0, 1, 2, 3], 1), (np.arange(B), 0), ([0, 2, 1, 3], 0), ([3, 2, 1, 0], 0),
                             (range(B), 1)]:
            x = _x(rng, B)
            order = list(slots)
            full = np.empty_like(x)
            full[:, order] = x
            np.testing.assert_array_equal(s.step({"data": x}, slots=slots)["lstm1"],
                                          ref.step({"data": full})["lstm1"][:, order])
            assert s.in_arena == arena, f"slots {order}"


# load's options.

def test_load_refusals(tmp_path):
    yaml = MODELS["lstm_dynamic_batch"]().save(tmp_path / "m")
    with pytest.raises(ConfigError) as info:
        rnnrt.load(42)
    assert str(info.value) == "rnnrt.load | Got a int as the config.\nNote: Pass the path of a YAML config (or a ModelConfig)."
    with pytest.raises(ConfigError) as info:
        rnnrt.load(yaml, backend="onnxruntime", batch_size=2, thread=1, engine="x")
    assert str(info.value) == ("rnnrt.load | Unknown keyword arguments ['engine', 'thread'].\nNote: Known: batch_size, "
                               "feedback, cuda_graph, outputs, input_memory, check_finite, threads, providers, "
                               "runtime_cache, plan.")


def test_load_rows_follow_the_batch(tmp_path):
    """ONNX Runtime picks its threads from the cost of one step: the batch's rows on a dynamic batch, one
    step of the fixed graph otherwise."""
    dyn = MODELS["lstm_dynamic_batch"]().save(tmp_path / "dyn")
    fixed = MODELS["lstm_t1"](batch=6).save(tmp_path / "fixed")
    with rnnrt.load(dyn, backend="onnxruntime", batch_size=5, threads=None) as s:
        assert s.engine.rows == 5 and s.batch_size == 5
    with rnnrt.load(fixed, backend="onnxruntime", threads=None) as s:
        assert s.engine.rows == 1 and s.batch_size == 6


def test_load_validates_a_yaml_but_not_a_loaded_config(tmp_path, monkeypatch):
    import rnnrt.ir.config as config_mod

    yaml = MODELS["lstm_dynamic_batch"]().save(tmp_path / "m")
    # A YAML whose state shape disagrees with its ONNX graph is refused (the config is checked once).
    bad = tmp_path / "m" / "bad.yaml"
    bad.write_text(yaml.read_text().replace("shape: [batch, 7]", "shape: [batch, 9]"))
    assert bad.read_text() != yaml.read_text()
    with pytest.raises(ConfigError):
        load_config(bad)
    with pytest.raises(ConfigError):
        rnnrt.load(bad, backend="onnxruntime", batch_size=2)
    calls = []
    real = config_mod.validate_against_model
    monkeypatch.setattr(config_mod, "validate_against_model", lambda cfg: calls.append(cfg) or real(cfg))
    with rnnrt.load(yaml, backend="onnxruntime", batch_size=2, threads=1):
        pass
    assert len(calls) == 1  # once, by load (load_config does not check it a second time)
    cfg = load_config(yaml, validate=False)
    with rnnrt.load(cfg, backend="onnxruntime", batch_size=2, threads=1) as s:
        assert s.config is cfg
    assert len(calls) == 1  # a loaded config is the caller's: not checked again


def test_load_does_not_check_the_onnx_graph_when_a_plan_runs(tmp_path, monkeypatch):
    """A TensorRT plan's bindings are checked by the Session; the ONNX graph is not read (stand-in: the
    ONNX Runtime engine reported as the ``tensorrt`` choice)."""
    import dataclasses

    import rnnrt.engines.select as select
    import rnnrt.ir.config as config_mod

    yaml = MODELS["lstm_dynamic_batch"]().save(tmp_path / "m")
    real_for = select.engine_for
    monkeypatch.setattr(select, "engine_for",
                        lambda *a, **kw: dataclasses.replace(real_for(*a, **kw), backend="tensorrt"))
    calls = []
    monkeypatch.setattr(config_mod, "validate_against_model", lambda cfg: calls.append(cfg))
    with rnnrt.load(yaml, backend="onnxruntime", batch_size=2, threads=1) as s:
        assert s.batch_size == 2
    assert calls == []


def test_load_auto_looks_for_the_plan_of_the_yaml_given(tmp_path, caplog):
    """backend="auto" looks for ``<yaml stem>.plan.json`` next to the YAML it was given (here a broken one:
    the log line says what is wrong with it, and ONNX Runtime runs)."""
    yaml = MODELS["lstm_dynamic_batch"]().save(tmp_path / "m")
    named = yaml.with_name("named.yaml")
    named.write_text(yaml.read_text())
    manifest = named.with_name("named.plan.json")
    manifest.write_text("{not json")
    with caplog.at_level(logging.INFO, logger="rnnrt"), rnnrt.load(named, batch_size=2, threads=1) as s:
        assert type(s.engine).__name__ == "OnnxRuntimeEngine"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rnnrt.load | Using ONNX Runtime")]
    assert len(lines) == 1 and "named.plan.json" in lines[0], lines
    manifest.unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rnnrt"), rnnrt.load(named, batch_size=2, threads=1):
        pass
    assert [r.getMessage() for r in caplog.records if "Using ONNX Runtime" in r.getMessage()] == [
        "rnnrt.load | Using ONNX Runtime: no TensorRT plan was built for the config (run `rnnrt build`)."]


# The constructor's refusals.

class _Bindings(OnnxRuntimeEngine):
    """ONNX Runtime with its bindings or memory space changed: an engine that disagrees with the config."""

    def __init__(self, model, change=None, memory="host"):
        super().__init__(model, threads=1)
        self._change, self.memory = change or (lambda role, bindings: bindings), memory

    def input_bindings_impl(self):
        return self._change("input", super().input_bindings_impl())

    def output_bindings_impl(self):
        return self._change("output", super().output_bindings_impl())


def _drop(role_wanted, name):
    return lambda role, bs: [b for b in bs if not (role == role_wanted and b.name == name)]


def _retype(role_wanted, name, dtype):
    import dataclasses

    return lambda role, bs: [dataclasses.replace(b, dtype=np.dtype(dtype)) if role == role_wanted and b.name == name
                             else b for b in bs]


def _extra(role, bs):
    from rnnrt.engines.base import Binding

    return bs + [Binding("spare", np.dtype(np.float32), (1,))] if role == "input" else bs


def test_constructor_refusals(tmp_path):
    from rnnrt.runtime.session import Session

    yaml = MODELS["lstm_dynamic_batch"]().save(tmp_path / "m")
    cfg = load_config(yaml)
    model = str(cfg.model_path)
    engine = "'_Bindings'"  # the engine's class name
    cases = [
        ((42, None), {}, "Session | Got a int as the config.\nNote: Pass a path to a YAML config or a ModelConfig."),
        ((cfg, None), {"feedback": "move"}, "Session | feedback='move' is not supported.\nNote: Use 'copy' or 'swap'."),
        ((cfg, None), {"outputs": "gpu"},
         "Session | outputs='gpu' is not supported.\nNote: Use 'host', 'view' or 'device'."),
        ((cfg, lambda: _Bindings(model, memory="unified")), {},
         f"Engine {engine} | Uses memory space 'unified', which the Session does not support.\n"
         "Note: Supported: 'host', 'device'."),
        ((cfg, lambda: _Bindings(model, _drop("input", "cont"))), {},
         f"Config input 'cont' | Is not an input of engine {engine}.\n"
         "Note: The engine's inputs are ['data', 'lstm1.c0', 'lstm1.h0']."),
        ((cfg, lambda: _Bindings(model, _drop("output", "lstm1.cT"))), {},
         f"Config output 'lstm1.cT' | Is not an output of engine {engine}.\n"
         "Note: The engine's outputs are ['lstm1', 'lstm1.hT']."),
        ((cfg, lambda: _Bindings(model, _retype("input", "lstm1.h0", np.float16))), {},
         "Config input 'lstm1.h0' | Has dtype 'float32' but the engine has 'float16'.\n"
         "Note: Rebuild the engine or fix the config."),
        ((cfg, lambda: _Bindings(model, _retype("output", "lstm1", np.float64))), {},
         "Config output 'lstm1' | Has dtype 'float32' but the engine has 'float64'.\n"
         "Note: Rebuild the engine or fix the config."),
        ((cfg, lambda: _Bindings(model, _extra)), {},
         "Engine input 'spare' | Is not declared in the config.\nNote: Every engine input must be in the config."),
    ]
    for args, kw, message in cases:
        made = []
        factory = args[1]
        if factory is not None:
            args = (args[0], lambda f=factory: made.append(f()) or made[-1])
        with pytest.raises(ConfigError) as info:
            Session(*args, batch_size=B, **kw)
        assert str(info.value) == message
        # An engine the Session made is released again when the Session cannot be made.
        assert all(not e.is_active for e in made)
    # The config's own engine, unchanged, is accepted (the cases above fail on what they change only).
    with Session(cfg, lambda: _Bindings(model), batch_size=B, feedback="swap", outputs="view") as s:
        assert (s.feedback, s.outputs, s.batch_size) == ("swap", "view", B)


def test_batch_one_models_run_one_stream_per_session(tmp_path):
    """A model whose convert-time check found its batch rows mixing refuses batch_size > 1, runs at 1."""
    from rnnrt.ir.checks import ChecksRecord
    from rnnrt.runtime.session import Session

    yaml = MODELS["lstm_dynamic_batch"]().save(tmp_path / "m")
    cfg = load_config(yaml)
    cfg = cfg.model_copy(update={"checks": ChecksRecord(seed=0, steps=8, batch_one="batch statistics mix the rows")})
    model = str(cfg.model_path)
    with pytest.raises(ConfigError) as info:
        Session(cfg, lambda: OnnxRuntimeEngine(model, threads=1), batch_size=2)
    assert str(info.value) == ("Session batch_size=2 | The model runs one stream per batch only: batch statistics mix "
                               "the rows.\nNote: Its convert-time check found the streams of a batch mixing: use "
                               "batch_size=1 (one Session per stream).")
    with Session(cfg, lambda: OnnxRuntimeEngine(model, threads=1), batch_size=1) as s:
        assert s.batch_size == 1
        assert s.step({"data": np.ones((1, 1, 5), np.float32)})["lstm1"].shape == (1, 1, 7)


def test_a_fresh_session_and_the_config_defaults(tmp_path):
    yaml = MODELS["lstm_dynamic_batch"]().save(tmp_path / "m")
    with _load(tmp_path / "a") as s:
        assert s.closed is False and s.in_arena == 0 and s.cuda_graph is False and s.feedback == "copy"
        assert (s.input_names, s.output_names) == (["data", "cont"], ["lstm1"])
        assert s.sequence_starts.tolist() == [True] * B
    s.close()
    assert s.closed is True
    # The config's session section gives the defaults; an argument overrides it.
    cfg = yaml.with_name("graph.yaml")
    cfg.write_text(yaml.read_text().replace("feedback: copy, cuda_graph: false", "feedback: swap, cuda_graph: true"))
    with rnnrt.load(cfg, backend="onnxruntime", batch_size=B, threads=1) as s:
        assert (s.feedback, s.cuda_graph) == ("swap", True)  # cuda_graph is recorded; a host engine ignores it
    with rnnrt.load(cfg, backend="onnxruntime", batch_size=B, threads=1, feedback="copy", cuda_graph=False) as s:
        assert (s.feedback, s.cuda_graph) == ("copy", False)
