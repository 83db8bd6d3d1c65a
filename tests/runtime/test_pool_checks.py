"""StreamPool's argument and state checks: each refusal is a typed error whose whole message names the
argument, the value and the fix, and leaves the pool as it was (issue 23: the pool's mutation survivors)."""

from __future__ import annotations

import types

import numpy as np
import pytest

import rnnrt
from rnnrt.errors import BindingError, ConfigError, SnapshotError, StateError
from rnnrt.runtime.pool import StreamPool, StreamState
from tests.models import MODELS


@pytest.fixture()
def session(tmp_path):
    path = MODELS["lstm_dynamic_batch"]().save(tmp_path / "m")
    with rnnrt.load(path, backend="onnxruntime", threads=1, batch_size=3) as s:
        yield s


def _refused(err_type, call, *args, **kwargs) -> str:
    """The whole message of the ``err_type`` (exactly that class) that ``call`` raises."""
    with pytest.raises(err_type) as info:
        call(*args, **kwargs)
    assert type(info.value) is err_type
    return str(info.value)


def test_session_that_is_not_a_session(session):
    assert _refused(ConfigError, StreamPool, object()) == (
        "StreamPool | Got a object, not a Session.\nNote: Pass rnnrt.load(config, batch_size=N).")
    # A config without inputs is no Session config either.
    assert _refused(ConfigError, StreamPool, types.SimpleNamespace(config=object())) == (
        "StreamPool | Got a SimpleNamespace, not a Session.\nNote: Pass rnnrt.load(config, batch_size=N).")
    # The right config but none of the Session's methods: the message lists what is missing.
    assert _refused(ConfigError, StreamPool, types.SimpleNamespace(config=session.config, batch_size=3)) == (
        "StreamPool | Got a SimpleNamespace without ['io', 'step', 'reset', 'read_state', 'write_state', "
        "'sequence_starts'].\nNote: Pass a Session (rnnrt.load(config, batch_size=N)).")


def test_output_without_batch_axis():
    out = types.SimpleNamespace(name="y", batch_axis=None)
    cfg = types.SimpleNamespace(inputs=[], outputs=[out])
    assert _refused(ConfigError, StreamPool, types.SimpleNamespace(config=cfg)) == (
        "Output 'y' | Has no batch axis, so StreamPool cannot give each stream its own slot.\n"
        "Note: Pool only models whose every output has a batch_axis (convert with a batch dim).")


@pytest.mark.parametrize("bad", ["x", -1, 0, 0.0, -0.5, float("nan"), True, [1]])
def test_idle_timeout_must_be_a_positive_number(session, bad):
    assert _refused(ConfigError, StreamPool, session, idle_timeout=bad) == (
        f"StreamPool | idle_timeout={bad!r} is not a positive number of seconds.\n"
        "Note: Pass None to keep idle streams forever.")


@pytest.mark.parametrize("good", [0.25, 1, 2.5, np.float32(0.5)])
def test_idle_timeout_below_and_above_one_second(session, good):
    now = [0.0]
    pool = StreamPool(session, idle_timeout=good, clock=lambda: now[0])
    assert pool.idle_timeout == good
    pool.open("a")
    now[0] = float(good) * 0.9
    assert pool.expire() == [] and "a" in pool
    now[0] = float(good)  # idle exactly idle_timeout: kept
    assert pool.expire() == [] and "a" in pool
    now[0] = float(good) * 1.1
    assert pool.expire() == ["a"] and "a" not in pool


def test_on_expire_must_be_callable(session):
    assert _refused(ConfigError, StreamPool, session, on_expire=3) == (
        "StreamPool | on_expire=3 is not callable.\nNote: Pass a function or None.")


@pytest.mark.parametrize("bad", [["x"], {"a": 1}, {1, 2}, np.zeros(2)])
def test_unhashable_stream_ids(session, bad):
    pool = StreamPool(session)
    pool.open("a")
    want = (f"Stream id {bad!r} | Is a {type(bad).__name__}, which is not hashable.\n"
            "Note: Use str, int or tuple ids.")
    state = pool.snapshot("a")
    for call, args in ((pool.open, (bad,)), (pool.restore, (bad, state)), (pool.close, (bad,)),
                       (pool.reset, (bad,)), (pool.snapshot, (bad,))):
        assert _refused(BindingError, call, *args) == want, call.__name__
    assert list(pool) == ["a"] and pool.free_slots == 2


def _state_like(state: StreamState, **changes) -> StreamState:
    """``state`` with some fields replaced (built like the pool builds it, skipping the hand-built checks)."""
    fields = {"model": state.model, "tensors": dict(state.tensors), "outputs": dict(state.outputs),
              "batch_axes": dict(state.batch_axes), "at_start": state.at_start, "steps": state.steps}
    fields.update(changes)
    return StreamState._from_pool(fields["model"], fields["tensors"], fields["outputs"], fields["batch_axes"],
                                  fields["at_start"], fields["steps"])


def _restore_refused(pool, err_type, state, **kwargs) -> str:
    """Refused restores take no slot and open nothing."""
    free, ids = pool.free_slots, list(pool)
    msg = _refused(err_type, pool.restore, "new", state, **kwargs)
    assert pool.free_slots == free and list(pool) == ids and "new" not in pool
    return msg


def test_restore_refuses_a_state_that_does_not_fit(session):
    pool = StreamPool(session)
    pool.open("a")
    pool.step({"a": np.ones((1, 1, 5), np.float32)})
    state = pool.snapshot("a")
    h = state.tensors["lstm1.h0"]
    fit = ("StreamPool.restore | The state does not fit this model: (input, output, dtype, shape, batch_axis) "
           "of the snapshot vs this pool: ")
    note = "\nNote: Restore only into a pool of the same model."
    assert _restore_refused(pool, StateError, _state_like(state, tensors={**state.tensors,
                                                                         "lstm1.h0": h.astype(np.float64)})) == (
        fit + "('lstm1.h0', 'lstm1.hT', 'float64', (1, 7), 0) vs ('lstm1.h0', 'lstm1.hT', 'float32', (1, 7), 0)."
        + note)
    assert _restore_refused(pool, StateError, _state_like(state, tensors={**state.tensors,
                                                                         "lstm1.h0": np.zeros((1, 8), np.float32)})) == (
        fit + "('lstm1.h0', 'lstm1.hT', 'float32', (1, 8), 0) vs ('lstm1.h0', 'lstm1.hT', 'float32', (1, 7), 0)."
        + note)
    assert _restore_refused(pool, StateError, _state_like(state, outputs={**state.outputs, "lstm1.c0": "x"})) == (
        fit + "('lstm1.c0', 'x', 'float32', (1, 7), 0) vs ('lstm1.c0', 'lstm1.cT', 'float32', (1, 7), 0)." + note)
    only_h = {"lstm1.h0": h}
    assert _restore_refused(pool, StateError, _state_like(state, tensors=only_h)) == (
        fit + "('lstm1.h0', 'lstm1.hT', 'float32', (1, 7), 0) vs ('lstm1.c0', 'lstm1.cT', 'float32', (1, 7), 0)."
        + note)
    other = "f" * 64
    assert _restore_refused(pool, StateError, _state_like(state, model=other)) == (
        f"StreamPool.restore | The state comes from model {other[:19]!r}... but this pool runs {pool.model[:19]!r}..."
        "\nNote: Restore into a pool of the same model file, or pass check_model=False if the models differ only "
        "in ways that keep the state meaning (e.g. a rebuilt plan).")
    # check_model=False takes the state of another model file whose state fits; it continues bit-exactly.
    slot = pool.restore("b", _state_like(state, model=other), check_model=False)
    assert pool.slot_of("b") == slot
    x = np.full((1, 1, 5), 0.5, np.float32)
    outs = pool.step({"a": x, "b": x})
    np.testing.assert_array_equal(outs["a"]["lstm1"], outs["b"]["lstm1"])


@pytest.mark.parametrize("steps", [-1, 2**63, True, 1.0, "3", None])
def test_restore_refuses_a_step_count_out_of_range(session, steps):
    pool = StreamPool(session)
    pool.open("a")
    state = pool.snapshot("a")
    assert _restore_refused(pool, SnapshotError, _state_like(state, steps=steps)) == (
        f"StreamPool.restore | The state's step count {steps!r} is out of range.\n"
        f"Note: A step count is an int in [0, {2**63 - 1}]; pass a StreamState from snapshot().")


@pytest.mark.parametrize("steps", [0, 5, np.int64(7), 2**63 - 1])
def test_restore_keeps_the_step_count_and_start_flag(session, steps):
    pool = StreamPool(session)
    pool.open("a")
    state = _state_like(pool.snapshot("a"), steps=steps, at_start=False)
    pool.restore("b", state)
    again = pool.snapshot("b")
    assert again.steps == steps and type(again.steps) is int and again.at_start is False


def test_restore_refuses_what_is_not_a_state(session):
    pool = StreamPool(session)
    assert _restore_refused(pool, SnapshotError, b"bytes") == (
        "StreamPool.restore | Got a bytes.\n"
        "Note: Pass a StreamState (from snapshot() or StreamState.from_bytes()).")


@pytest.fixture(scope="module")
def sr_yaml(tmp_path_factory):
    """A model with an int64 scalar input ``sr`` that has no batch axis (Silero-like), dynamic batch."""
    from rnnrt.importers.onnx.importer import convert_onnx
    from rnnrt.ir.config import save_step_graph
    from tests.models.onnx_sources import shared_sr_onnx

    return save_step_graph(convert_onnx(shared_sr_onnx("N")), tmp_path_factory.mktemp("sr"))


def test_shared_value_checks_name_the_input_and_the_fix(sr_yaml):
    with rnnrt.load(sr_yaml, backend="onnxruntime", batch_size=2, threads=1) as session:
        assert _refused(ConfigError, StreamPool, session) == (
            "Input 'sr' | Has no batch axis (one value for all streams) and StreamPool got none.\n"
            "Note: Pass StreamPool(session, shared={'sr': value}), or fold it at convert time "
            "(rnnrt convert ... --set sr=VALUE).")
        assert _refused(ConfigError, StreamPool, session, shared=16000) == (
            "StreamPool | shared=16000 is a int, not a mapping.\n"
            "Note: Pass shared={input name: value}, e.g. shared={'sr': 16000}.")
        assert _refused(ConfigError, StreamPool, session, shared={"sr": 16000, "x": 1}) == (
            "StreamPool(shared={'x': ...}) | Has a batch axis; each stream feeds its own value in its frame.\n"
            "Note: shared takes only inputs without a batch axis: ['sr'].")
        assert _refused(ConfigError, StreamPool, session, shared={"nope": 1, "sr": 16000}) == (
            "StreamPool(shared={'nope': ...}) | Is not an input of the model.\n"
            "Note: shared takes only inputs without a batch axis: ['sr'].")
        pool = StreamPool(session, shared={"sr": 16000})
        assert list(pool.shared) == ["sr"] and pool.shared["sr"] == 16000
        pool.open("a")
        for what, call in (("StreamPool.step_batch", pool.step_batch), ("StreamPool.step_chunk", pool.step_chunk)):
            for ids in ("a", b"a", 3):
                assert _refused(BindingError, call, ids, np.zeros((1, 4), np.float32)) == (
                    f"{what} | stream_ids is a {type(ids).__name__}.\n"
                    "Note: Pass a sequence of stream ids, one per batch row of the feeds.")
        before = session.read_state([0])
        assert _refused(BindingError, pool.step_batch, ["a"], {"sr": np.int64(8000), "x": np.zeros((1, 4), np.float32)}) == (
            "StreamPool.step_batch input 'sr' | Has no batch axis and the pool feeds it.\n"
            "Note: The pool feeds every step the value given as StreamPool(session, shared=...); "
            "leave 'sr' out of the feeds.")
        assert _refused(BindingError, pool.step, {"a": {"x": np.zeros((1, 4), np.float32), "sr": np.int64(8000)}}) == (
            "Stream 'a' | Frame carries input 'sr', which has no batch axis.\n"
            "Note: The pool feeds every step the value given as StreamPool(session, shared={'sr': ...}); "
            "leave it out of frames.")
        np.testing.assert_array_equal(session.read_state([0])["state"], before["state"])


class _Spy:
    """A Session that records the feeds of each step (everything else is the Session's)."""

    def __init__(self, session):
        self._session = session
        self.feeds: list[dict] = []

    def step(self, feeds, slots=None, **kwargs):
        self.feeds.append({name: np.array(v) for name, v in feeds.items()})
        self.last = dict(feeds)
        return self._session.step(feeds, slots=slots, **kwargs)

    def __getattr__(self, name):
        return getattr(self._session, name)


def test_full_batch_of_bare_frames_is_packed_into_the_session_input_buffer(session):
    spy = _Spy(session)
    pool = StreamPool(spy)
    for sid in "abc":
        pool.open(sid)
    x = np.arange(15, dtype=np.float32).reshape(3, 1, 1, 5)
    pool.step({"a": x[0], "b": x[1], "c": x[2]})  # every slot, in slot order: the Session's own buffer
    staging = session.input_buffers()["data"]
    assert spy.last["data"] is staging
    np.testing.assert_array_equal(staging, np.concatenate(x, axis=1))
    pool.step({"a": x[0], "b": x[1]})  # two of three slots: the pool's buffer, never the Session's
    assert not np.shares_memory(spy.last["data"], staging)
    np.testing.assert_array_equal(spy.last["data"], np.concatenate(x[:2], axis=1))
    pool.step({"b": x[1], "a": x[0], "c": x[2]})  # every slot, not in slot order
    assert not np.shares_memory(spy.last["data"], staging)
    np.testing.assert_array_equal(spy.last["data"], np.concatenate([x[1], x[0], x[2]], axis=1))


def test_continuation_fed_by_some_frames_is_filled_for_the_others(session):
    """A frame that omits the continuation input gets 1, or 0 at its stream's first step; one that feeds
    it keeps its value. The filled rows follow the frame order."""
    spy = _Spy(session)
    pool = StreamPool(spy)
    x = np.ones((1, 1, 5), np.float32)
    for sid in "abc":
        pool.open(sid)
    pool.step({"a": x, "c": x})       # a and c are past their first step, b is not
    pool.reset("c")                   # c starts again
    pool.step({"b": {"data": x}, "a": {"data": x, "cont": np.full((1, 1), 0.5, np.float32)}, "c": {"data": x}})
    np.testing.assert_array_equal(spy.feeds[-1]["cont"], [[0.0, 0.5, 0.0]])
    pool.step({"b": {"data": x}, "a": {"data": x, "cont": np.full((1, 1), 0.5, np.float32)}, "c": {"data": x}})
    np.testing.assert_array_equal(spy.feeds[-1]["cont"], [[1.0, 0.5, 1.0]])
    # No frame feeds it: the Session fills it itself (no continuation feed from the pool).
    pool.step({"a": x, "b": x})
    assert "cont" not in spy.feeds[-1]


def test_frame_errors_name_the_stream_and_the_input(session):
    pool = StreamPool(session)
    for sid in "ab":
        pool.open(sid)
    x = np.ones((1, 1, 5), np.float32)
    before = session.read_state([0, 1])
    assert _refused(BindingError, pool.step, {"a": x, "b": {"data": x, "nope": x}}) == (
        "Stream 'b' | Frame has unknown input 'nope'.\nNote: Inputs: ['cont', 'data'].")
    assert _refused(BindingError, pool.step, {"a": x, "b": None}) == (
        "Stream 'b' | Got a bare NoneType.\nNote: Pass a mapping {input name: array}; inputs: ['cont', 'data'].")
    assert _refused(BindingError, pool.step, {"a": {"data": x}, "b": {"cont": np.ones((1, 1), np.float32)}}) == (
        "Stream 'b' | Frame has no input 'data'.\nNote: Feed every input of ['cont', 'data'].")
    assert _refused(BindingError, pool.step_batch, ["a", ["x"]], np.ones((1, 2, 5), np.float32)) == (
        "Stream id ['x'] | Is not hashable.\nNote: Use str, int or tuple ids.")
    assert _refused(BindingError, pool.step_batch, ["b", "a", "a"], np.ones((1, 3, 5), np.float32)) == (
        "Stream 'a' | Is listed twice in one step.\n"
        "Note: Step each stream at most once per call (its frames follow one another).")
    assert _refused(StateError, pool.step, {"a": x, "zz": x}) == (
        "Stream 'zz' | Is not open in this pool.\n"
        "Note: open() it first (streams idle longer than idle_timeout are released).")
    after = session.read_state([0, 1])
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])
    # A bare list is taken as the single input's value (checked like an array).
    outs = pool.step({"a": x.tolist(), "b": x})
    np.testing.assert_array_equal(outs["a"]["lstm1"], outs["b"]["lstm1"])


def test_open_refusals_name_the_stream_and_the_fix(session):
    pool = StreamPool(session)
    for sid in "abc":
        pool.open(sid)
    state = pool.snapshot("a")
    want = "Stream 'a' | Is already open.\nNote: Close it first, or use another id."
    assert _refused(StateError, pool.open, "a") == want
    assert _restore_refused(pool, StateError, state) == (
        "StreamPool | All 3 slots are taken; cannot open stream 'new'.\n"
        "Note: Close streams, set idle_timeout, or load the Session with a bigger batch_size.")
    assert _refused(StateError, pool.open, "d") == (
        "StreamPool | All 3 slots are taken; cannot open stream 'd'.\n"
        "Note: Close streams, set idle_timeout, or load the Session with a bigger batch_size.")
    pool.close("b")
    assert _refused(StateError, pool.restore, "a", state) == want
    assert pool.restore("b", state) == 1 and pool.free_slots == 0


class _FailingWrite(_Spy):
    """A Session whose next ``write_state`` fails (as a device copy might)."""

    fail = True

    def write_state(self, slots, values, start=False):
        if self.fail:
            self.fail = False
            raise StateError("write failed")
        return self._session.write_state(slots, values, start=start)


def test_failed_restore_gives_the_slot_back_zeroed(session):
    spy = _FailingWrite(session)
    pool = StreamPool(spy)
    pool.open("a")
    x = np.ones((1, 1, 5), np.float32)
    pool.step({"a": x})
    state = pool.snapshot("a")
    pool.close("a")       # slot 0 holds a's rows until it is zeroed
    with pytest.raises(StateError, match="write failed"):
        pool.restore("b", state)
    assert "b" not in pool and pool.free_slots == 3 and list(pool) == []
    assert pool.restore("b", state) == 0  # the id is free again, the slot too
    pool.close("b")
    spy.fail = True
    with pytest.raises(StateError, match="write failed"):
        pool.restore("c", state)
    assert pool.open("d") == 0  # the slot of the failed restore starts from zero
    np.testing.assert_array_equal(pool.step({"d": x})["d"]["lstm1"], _solo_first_step(session, x))


def _solo_first_step(session, x):
    with rnnrt.load(session.config.model_path.parent / "model.yaml", backend="onnxruntime", threads=1,
                    batch_size=1) as solo:
        return solo.step({"data": x})["lstm1"]


@pytest.mark.parametrize("at_start", [True, False])
def test_restore_keeps_the_sequence_start_flag(session, at_start):
    """A state snapshotted before its first step restores at a sequence start: the filled continuation is 0."""
    spy = _Spy(session)
    pool = StreamPool(spy)
    pool.open("a")
    x = np.ones((1, 1, 5), np.float32)
    if not at_start:
        pool.step({"a": x})
    state = pool.snapshot("a")
    assert state.at_start is at_start
    pool.open("b")
    pool.step({"b": x})
    pool.restore("r", state)
    pool.step({"b": {"data": x, "cont": np.ones((1, 1), np.float32)}, "r": {"data": x}})
    np.testing.assert_array_equal(spy.feeds[-1]["cont"], [[1.0, 0.0 if at_start else 1.0]])


def test_restore_into_a_full_pool_releases_idle_streams(session):
    now = [0.0]
    expired = []
    pool = StreamPool(session, idle_timeout=1.0, clock=lambda: now[0], on_expire=expired.append)
    for sid in "abc":
        pool.open(sid)
    state = pool.snapshot("b")
    now[0] = 0.5
    pool.step({"b": np.ones((1, 1, 5), np.float32), "c": np.ones((1, 1, 5), np.float32)})
    now[0] = 1.25  # a is idle past the timeout, b and c are not
    assert pool.restore("r", state) == 0
    assert expired == ["a"] and sorted(pool) == ["b", "c", "r"]
