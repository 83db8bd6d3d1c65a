"""StreamPool's argument and state checks: each refusal is a typed error whose whole message names the
argument, the value and the fix, and leaves the pool as it was (issue 23: the pool's mutation survivors)."""

from __future__ import annotations

import logging
import types

import numpy as np
import pytest

import rnnrt
from rnnrt.errors import BindingError, ConfigError, SnapshotError, StateError
from rnnrt.runtime.pool import _PLAN_CACHE, StreamPool, StreamState
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
                       (pool.reset, (bad,)), (pool.snapshot, (bad,)), (pool.slot_of, (bad,))):
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
    assert _restore_refused(pool, StateError, _state_like(state, tensors={"lstm1.c0": state.tensors["lstm1.c0"]})) == (
        fit + "1 state tensors vs 2." + note)  # what it has matches: the count differs
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


def test_step_refuses_frames_that_are_not_a_mapping(session):
    pool = StreamPool(session)
    pool.open("a")
    assert _refused(BindingError, pool.step, [np.ones((1, 1, 5), np.float32)]) == (
        "StreamPool.step | Got a list.\nNote: Pass a mapping {stream id: frame}.")


def test_streams_not_open_are_named(session):
    pool = StreamPool(session)
    pool.open("a")
    want = ("Stream 'zz' | Is not open in this pool.\n"
            "Note: open() it first (streams idle longer than idle_timeout are released).")
    for call in (pool.close, pool.reset, pool.slot_of, pool.snapshot):
        assert _refused(StateError, call, "zz") == want, call.__name__
    pool.close("zz", missing_ok=True)
    assert _refused(BindingError, pool.slot_of, ["a"]) == (
        "Stream id ['a'] | Is a list, which is not hashable.\nNote: Use str, int or tuple ids.")
    assert list(pool) == ["a"] and pool.free_slots == 2


class _Hooked(_Spy):
    """A Session that runs ``hooks[method]()`` once, inside its next call of that method (as another thread's
    pool call would land while the pool is in the Session), or raises ``fail[method]`` once there."""

    def __init__(self, session):
        super().__init__(session)
        self.hooks: dict = {}
        self.fail: dict = {}
        self.slots: list = []

    def _enter(self, method):
        if method in self.fail:
            raise self.fail.pop(method)
        hook = self.hooks.pop(method, None)
        if hook is not None:
            hook()

    def step(self, feeds, slots=None, **kwargs):
        self.slots.append(slots)
        self._enter("step")
        return super().step(feeds, slots=slots, **kwargs)

    def reset(self, slots=None):
        self._enter("reset")
        return self._session.reset(slots=slots)

    def read_state(self, slots):
        self._enter("read_state")
        return self._session.read_state(slots)

    def write_state(self, slots, values, start=False):
        self._enter("write_state")
        return self._session.write_state(slots, values, start=start)


def test_reset_during_a_step_counts_after_it(session):
    """A reset of a stream whose step is running: the step's outputs come back, and the stream's next frame
    is its t=0 (step count 0); the other stepped stream advances, a stream not stepped does not."""
    spy = _Hooked(session)
    pool = StreamPool(spy)
    for sid in "abc":
        pool.open(sid)
    x = np.ones((1, 1, 5), np.float32)
    pool.step({"a": x, "b": x})
    spy.hooks["step"] = lambda: pool.reset("a")
    outs = pool.step({"a": x, "b": x})
    np.testing.assert_array_equal(outs["a"]["lstm1"], outs["b"]["lstm1"])
    assert {sid: pool.snapshot(sid).steps for sid in "abc"} == {"a": 0, "b": 2, "c": 0}
    assert pool.snapshot("a").at_start and not pool.snapshot("b").at_start
    first = pool.step({"a": x, "b": x})["a"]["lstm1"]
    np.testing.assert_array_equal(first, _solo_first_step(session, x))
    pool.step({"b": x})
    pool.reset("b")
    assert pool.snapshot("b").steps == 0 and pool.snapshot("b").at_start


def test_zeroing_that_fails_stays_pending(session):
    """The Session's reset of newly opened slots fails: the step raises that error, no stream advances, and
    the next step zeroes the slots first."""
    spy = _Hooked(session)
    pool = StreamPool(spy)
    x = np.ones((1, 1, 5), np.float32)
    pool.open("a")
    pool.step({"a": x})
    pool.close("a")
    pool.open("b")  # slot 0 again, a's state still in it until zeroed
    spy.fail["reset"] = StateError("reset failed")
    assert _refused(StateError, pool.step, {"b": x}) == "reset failed"
    assert pool.snapshot("b").steps == 0
    np.testing.assert_array_equal(pool.step({"b": x})["b"]["lstm1"], _solo_first_step(session, x))


def test_streams_closed_during_a_restore_or_snapshot(session):
    """Table calls landing while a restore writes or a snapshot reads: closing another stream frees its slot at
    once; opening the id being restored is refused (it is not open yet, nor free)."""
    spy = _Hooked(session)
    pool = StreamPool(spy)
    x = np.ones((1, 1, 5), np.float32)
    for sid in "ab":
        pool.open(sid)
    pool.step({"a": x, "b": x})
    state = pool.snapshot("a")
    refused = []

    def during_write():
        pool.close("b")
        refused.append(_refused(StateError, pool.open, "r"))

    spy.hooks["write_state"] = during_write
    assert pool.restore("r", state) == 2
    assert refused == ["Stream 'r' | Is already open.\nNote: Close it first, or use another id."]
    assert sorted(pool) == ["a", "r"] and pool.free_slots == 1 and pool.open("c") == 1
    spy.hooks["read_state"] = lambda: pool.close("c")
    assert pool.snapshot("r").steps == 1
    assert sorted(pool) == ["a", "r"] and pool.open("d") == 1


def test_restore_into_a_slot_freed_before_its_zeroing(session):
    """A stream opened and closed without a step leaves its slot to be zeroed; a restore into that slot
    writes it whole, and the restored stream continues from its state (the zeroing is dropped)."""
    pool = StreamPool(session)
    x = np.full((1, 1, 5), 0.5, np.float32)
    pool.open("src")
    pool.step({"src": x})
    state = pool.snapshot("src")
    pool.open("tmp")
    pool.close("tmp")
    assert pool.restore("r", state) == 1
    outs = pool.step({"src": x, "r": x})
    np.testing.assert_array_equal(outs["r"]["lstm1"], outs["src"]["lstm1"])
    assert not np.array_equal(outs["r"]["lstm1"], _solo_first_step(session, x))


def test_repeated_stream_patterns_reuse_one_read_only_slot_array(session):
    """The Session gets the same read-only slot array for a pattern of streams seen since the last open or
    close (so it skips re-checking it), a fresh one after; at most _PLAN_CACHE patterns are kept."""
    spy = _Hooked(session)
    pool = StreamPool(spy)
    for sid in "abc":
        pool.open(sid)
    x = np.ones((1, 3, 5), np.float32)

    def slots_of(ids):
        pool.step_batch(ids, {"data": x[:, :len(ids)]})
        slots = spy.slots[-1]
        assert not slots.flags.writeable
        assert slots.tolist() == [pool.slot_of(sid) for sid in ids]
        return slots

    first = {ids: slots_of(ids) for ids in (("a", "b"), ("b",), ("c", "a"))}
    for ids, slots in first.items():
        assert slots_of(ids) is slots and slots_of(list(ids)) is slots, ids
    pool.close("c")
    pool.open("c")  # a and b kept their slots, but a plan is never trusted across an open or close
    assert slots_of(("a", "b")) is not first["a", "b"]
    with rnnrt.load(session.config.model_path.parent / "model.yaml", backend="onnxruntime", threads=1,
                    batch_size=5) as big:
        spy = _Hooked(big)
        pool = StreamPool(spy)
        for sid in "abcde":
            pool.open(sid)
        x = np.ones((1, 5, 5), np.float32)
        patterns = [(a, b) for a in "abcde" for b in "abcde" if a != b][:_PLAN_CACHE + 1]
        kept = [slots_of(ids) for ids in patterns]
        assert slots_of(patterns[-1]) is kept[-1] and slots_of(patterns[1]) is kept[1]
        assert slots_of(patterns[0]) is not kept[0]  # the oldest pattern was dropped


@pytest.mark.parametrize("how", ["close", "expire"])
def test_a_step_after_streams_changed_slots_finds_the_new_slots(session, how):
    """Streams closed (or expired) and opened again in other slots: a repeated pattern of ids steps the slots
    they occupy now, never the old ones (another stream's state)."""
    now = [0.0]
    pool = StreamPool(session, idle_timeout=10.0, clock=lambda: now[0])
    x = np.ones((1, 1, 5), np.float32)
    for sid in "abc":
        pool.open(sid)
    pool.step({"c": x})
    if how == "close":
        pool.close("a")
        pool.close("c")
    else:
        now[0] = 5.0
        pool.step({"b": x})
        now[0] = 10.5  # a and c idle for more than 10 s, b for 5.5
        assert pool.expire() == ["a", "c"]
    assert pool.open("c") == 0 and pool.open("d") == 2
    out = pool.step({"c": x})["c"]["lstm1"]
    np.testing.assert_array_equal(out, _solo_first_step(session, x))
    assert pool.snapshot("c").steps == 1 and pool.snapshot("d").steps == 0
    assert not pool.snapshot("d").tensors["lstm1.h0"].any() and pool.snapshot("c").tensors["lstm1.h0"].any()


def test_stream_idle_just_past_the_timeout_is_released_at_the_next_step(session):
    """Idle longer than idle_timeout by the clock's own arithmetic (0.1 + 0.2 > 0.3 in floats): released."""
    now = [0.1]
    expired = []
    pool = StreamPool(session, idle_timeout=0.2, clock=lambda: now[0], on_expire=expired.append)
    pool.open("a")
    now[0] = 0.2
    pool.open("b")
    now[0] = 0.1 + 0.2
    assert now[0] - 0.2 > 0.1
    pool.step({"b": np.ones((1, 1, 5), np.float32)})
    assert expired == ["a"] and list(pool) == ["b"]


def test_callback_errors_are_logged_and_the_last_100_kept(session, caplog):
    now = [0.0]
    errors = []

    def on_expire(sid):
        errors.append(ValueError(f"boom {sid}"))
        raise errors[-1]

    pool = StreamPool(session, idle_timeout=1.0, clock=lambda: now[0], on_expire=on_expire)
    with caplog.at_level(logging.ERROR, logger="rnnrt"):
        for k in range(40):
            for i in range(3):
                pool.open((k, i))
            now[0] += 2.0
            assert pool.expire() == [(k, 0), (k, 1), (k, 2)]
    assert len(errors) == 120 and len(pool.callback_errors) == 100
    assert pool.callback_errors == [((k, i), errors[3 * k + i]) for k in range(40) for i in range(3)][20:]
    record = caplog.records[-1]
    assert record.name == "rnnrt" and record.getMessage() == "StreamPool | on_expire((39, 2)) raised ValueError: boom (39, 2)"
    assert record.exc_info[1] is errors[-1]


def test_step_batch_writes_into_out_and_split_cuts_views(session):
    pool = StreamPool(session)
    for sid in "ab":
        pool.open(sid)
    x = np.arange(10, dtype=np.float32).reshape(1, 2, 5) / 10
    buf = np.full((1, 2, 7), np.nan, np.float32)
    got = pool.step_batch(["b", "a"], x, out={"lstm1": buf})
    assert got["lstm1"] is buf
    with rnnrt.load(session.config.model_path.parent / "model.yaml", backend="onnxruntime", threads=1,
                    batch_size=2) as ref:
        np.testing.assert_array_equal(buf, ref.step(x)["lstm1"])
    # split() cuts them per stream: row views of the Session's fresh outputs, no copy.
    rows = pool.split(["b", "a"], got)
    for i, sid in enumerate("ba"):
        assert rows[sid]["lstm1"].shape == (1, 1, 7) and np.shares_memory(rows[sid]["lstm1"], buf)
        np.testing.assert_array_equal(rows[sid]["lstm1"], buf[:, i:i + 1])


class _ViewSession(_Spy):
    """A Session with ``outputs="view"``: each step's outputs live in its own arrays, rewritten by the next step."""

    outputs = "view"

    def __init__(self, session):
        super().__init__(session)
        self.views: dict = {}

    def step(self, feeds, slots=None, **kwargs):
        outs = super().step(feeds, slots=slots, **kwargs)
        for name, value in outs.items():
            view = self.views.get(name)
            if view is None or view.shape != value.shape:
                view = self.views[name] = np.empty_like(value)
            view[...] = value
        return {name: self.views[name] for name in outs}


def test_outputs_of_a_view_session_are_copied_out(session):
    """pool.step's outputs are the caller's even when the Session's outputs are views it rewrites."""
    pool = StreamPool(_ViewSession(session))
    for sid in "ab":
        pool.open(sid)
    x = np.ones((1, 1, 5), np.float32)
    first = pool.step({"a": x, "b": x})
    kept = {sid: out["lstm1"].copy() for sid, out in first.items()}
    pool.step({"a": -x, "b": -x})
    for sid in "ab":
        np.testing.assert_array_equal(first[sid]["lstm1"], kept[sid])


def test_step_chunk_with_shared_values_and_no_frames(sr_yaml):
    """The shared values of a chunk go along the frames' leading axis; with no frame at all the Session names
    the missing input."""
    with rnnrt.load(sr_yaml, backend="onnxruntime", batch_size=2, threads=1) as session:
        pool = StreamPool(session, shared={"sr": 16000})
        pool.open("a")
        assert _refused(BindingError, pool.step_chunk, ["a"], {}) == (
            "Input 'x' | Is missing from the frame.\nNote: Feed every input of ['x', 'sr'].")
        x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 1, 4)
        got = pool.step_chunk(["a"], {"x": x})["y"]
        with rnnrt.load(sr_yaml, backend="onnxruntime", batch_size=1, threads=1) as ref:
            want = [ref.step({"x": x[k], "sr": np.int64(16000)})["y"] for k in range(3)]
        np.testing.assert_array_equal(got, np.stack(want))


# A model whose batch axis folds the streams with time, with two per-stream inputs, a shared input with a
# dynamic dim and two outputs (one folded): h' = tanh((sum_t x_t W + h U) * g * sum(scale)), z = h',
# y_t = x_t W + h. x holds T*N time-major rows (row t*N + n is stream n's frame t); so does y.
FOLD_T, FOLD_F, FOLD_H = 3, 4, 2


def _folded_model():
    from onnx import TensorProto, checker, helper, numpy_helper

    from rnnrt.ir.stepgraph import StatePair, StepGraph, TensorSpec
    from tests.models.registry import TinyModel

    T, F, H = FOLD_T, FOLD_F, FOLD_H
    rng = np.random.default_rng(5)
    W = rng.uniform(-1, 1, (F, H)).astype(np.float32)
    U = rng.uniform(-1, 1, (H, H)).astype(np.float32)
    n = helper.make_node
    nodes = [
        n("Reshape", ["x", "tnf"], ["xr"]), n("ReduceSum", ["xr", "axis0"], ["s"], keepdims=0),
        n("MatMul", ["s", "W"], ["sw"]), n("MatMul", ["h", "U"], ["hu"]), n("Add", ["sw", "hu"], ["pre"]),
        n("Mul", ["pre", "g"], ["pre_g"]), n("ReduceSum", ["scale"], ["k"], keepdims=0),
        n("Mul", ["pre_g", "k"], ["pre_k"]), n("Tanh", ["pre_k"], ["hN"]), n("Identity", ["hN"], ["z"]),
        n("MatMul", ["xr", "W"], ["xw"]), n("Unsqueeze", ["h", "axis0"], ["h1"]), n("Add", ["xw", "h1"], ["yr"]),
        n("Reshape", ["yr", "rows"], ["y"]),
    ]
    vi = helper.make_tensor_value_info
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "folded",
        [vi("x", f32, ["TN", F]), vi("g", f32, ["N", 1]), vi("scale", f32, ["K"]), vi("h", f32, ["N", H])],
        [vi("y", f32, ["TN", H]), vi("z", f32, ["N", H]), vi("hN", f32, ["N", H])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(U, "U"),
         numpy_helper.from_array(np.array([T, -1, F], np.int64), "tnf"),
         numpy_helper.from_array(np.array([0], np.int64), "axis0"),
         numpy_helper.from_array(np.array([-1, H], np.int64), "rows")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    checker.check_model(model)
    step = StepGraph(
        model=model,
        inputs=[TensorSpec("x", "float32", ("TN", F), 0, batch_fold=(T, 1)), TensorSpec("g", "float32", ("N", 1), 0),
                TensorSpec("scale", "float32", ("K",), None)],
        outputs=[TensorSpec("y", "float32", ("TN", H), 0, batch_fold=(T, 1)), TensorSpec("z", "float32", ("N", H), 0)],
        states=[StatePair("h", "hN", ("N", H), "float32", 0)],
        source={"format": "test", "model": "folded"},
    )

    def reference(frame, h, scale):
        """One stream's step in float64: frame x (T, F), g (1, 1); h (H,) -> (y (T, H), z (1, H), h')."""
        x = frame["x"].astype(np.float64)
        hn = np.tanh((x.sum(0) @ W + h @ U) * frame["g"][0, 0] * scale.sum(dtype=np.float64))
        return x @ W + h, hn[None], hn

    return TinyModel("folded", step, {"W": W, "U": U}, reference)


@pytest.fixture(scope="module")
def folded(tmp_path_factory):
    model = _folded_model()
    return model.save(tmp_path_factory.mktemp("folded")), model.reference


def test_folded_frames_of_several_time_steps_go_to_their_streams(folded):
    """Frames of T=3 time-major rows: each stream's rows interleave with the others' in the packed input
    (row t*n + k), come back as that stream's own T rows, and every output reaches its stream; the shared
    input has a dynamic dim. Checked against a float64 reference per stream over steps of varying streams."""
    yaml, reference = folded
    scale = np.array([0.5, 0.25, 0.125], np.float32)
    rng = np.random.default_rng(7)
    with rnnrt.load(yaml, backend="onnxruntime", threads=1, batch_size=3) as session:
        pool = StreamPool(session, shared={"scale": scale})
        state = {}
        for sid in "abc":
            pool.open(sid)
            state[sid] = np.zeros(FOLD_H)
        for ids in (["a", "b", "c"], ["c", "a"], ["b"], ["b", "c", "a"]):
            frames = {sid: {"x": rng.uniform(-1, 1, (FOLD_T, FOLD_F)).astype(np.float32),
                            "g": rng.uniform(0.5, 2, (1, 1)).astype(np.float32)} for sid in ids}
            outs = pool.step(frames)
            assert list(outs) == ids
            for sid in ids:
                y, z, state[sid] = reference(frames[sid], state[sid], scale)
                assert sorted(outs[sid]) == ["y", "z"]
                np.testing.assert_allclose(outs[sid]["y"], y, rtol=1e-5, atol=1e-6, err_msg=f"{ids} {sid}")
                np.testing.assert_allclose(outs[sid]["z"], z, rtol=1e-5, atol=1e-6, err_msg=f"{ids} {sid}")


def test_bare_frames_are_refused_when_the_model_has_several_inputs(folded):
    yaml, _ = folded
    with rnnrt.load(yaml, backend="onnxruntime", threads=1, batch_size=2) as session:
        pool = StreamPool(session, shared={"scale": np.ones(2, np.float32)})
        pool.open("a")
        for bare in (np.zeros((FOLD_T, FOLD_F), np.float32), [[0.0] * FOLD_F] * FOLD_T):
            assert _refused(BindingError, pool.step, {"a": bare}) == (
                f"Stream 'a' | Got a bare {type(bare).__name__}.\n"
                "Note: Pass a mapping {input name: array}; inputs: ['g', 'x'].")
        assert pool.snapshot("a").steps == 0


@pytest.fixture()
def scan_session(tmp_path):
    """An LSTM over T time steps per call, T dynamic (a dynamic non-batch dim), dynamic batch of 3."""
    from tests.models.lstm import lstm_step_graph

    path = lstm_step_graph(5, (7,), batch="N", time="T", scan=True, seed=1).save(tmp_path / "scan")
    with rnnrt.load(path, backend="onnxruntime", threads=1, batch_size=3) as s:
        yield s


def test_frames_that_disagree_on_a_dynamic_dim_are_refused(scan_session):
    pool = StreamPool(scan_session)
    for sid in "ab":
        pool.open(sid)
    x2, x3 = np.ones((2, 1, 5), np.float32), np.ones((3, 1, 5), np.float32)
    msg = _refused(BindingError, pool.step, {"a": x2, "b": x3})
    assert msg.startswith("Input 'data' | Frames of this step disagree on a dynamic dim: ") and msg.endswith(
        ".\nNote: Every stream stepped together must use the same sizes for non-batch dims."), msg
    assert pool.snapshot("a").steps == 0 and pool.snapshot("b").steps == 0
    outs = pool.step({"a": x3, "b": x3})  # the same T for both: stepped, each stream's T rows back
    assert outs["a"]["lstm1"].shape == (3, 1, 7)
    np.testing.assert_array_equal(outs["a"]["lstm1"], outs["b"]["lstm1"])


def test_frames_are_packed_into_one_buffer_per_shape(scan_session):
    """The frames of a step are packed into the pool's buffer for that shape, the same one every step (no
    allocation per step), whether they come bare or as mappings; the Session reads the right rows."""
    spy = _Spy(scan_session)
    pool = StreamPool(spy)
    for sid in "abc":
        pool.open(sid)
    x = np.arange(20, dtype=np.float32).reshape(2, 2, 1, 5) / 20  # T=2
    pool.step({"a": x[0], "b": x[1]})
    buf = spy.last["data"]
    np.testing.assert_array_equal(buf, np.concatenate(x, axis=1))
    pool.step({"b": x[1], "a": x[0]})  # frame order: b first
    assert spy.last["data"] is buf
    np.testing.assert_array_equal(buf, np.concatenate(x[::-1], axis=1))
    pool.step({"a": {"data": x[1]}, "b": {"data": x[1]}})
    assert spy.last["data"] is buf
    np.testing.assert_array_equal(buf, np.concatenate([x[1], x[1]], axis=1))


@pytest.mark.parametrize("shape", [(1, 1, 6), (1, 1, 5, 1)])
def test_frames_of_a_wrong_shape_are_refused_naming_the_stream(session, shape):
    """Every frame with the same wrong shape (a wrong dim, or an extra one): refused per stream, never packed."""
    pool = StreamPool(session)
    for sid in "ab":
        pool.open(sid)
    x = np.ones(shape, np.float32)
    for frame in (x, {"data": x}):
        msg = _refused(BindingError, pool.step, {"a": frame, "b": frame})
        assert msg.startswith(f"Stream 'a' input 'data' | Received shape {shape}"), msg
    assert pool.snapshot("a").steps == 0
