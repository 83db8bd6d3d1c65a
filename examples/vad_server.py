"""A voice-activity WebSocket server: many clients stream PCM, each chunk answered with its speech probability.

Every connection is one stream. A client sends binary messages of 512 16-bit little-endian PCM samples
at 16 kHz (1024 bytes, 32 ms of audio); the server answers each, in order, with a text message
``{"seq": k, "speech": p}`` (p: Silero VAD's speech probability of chunk k of this connection). A
malformed message gets ``{"seq": k, "error": "..."}`` and changes nothing (the stream goes on). All
connections share one ``rnnrt.StreamBatcher``: the chunks that arrived together run as one engine step.

Run::

    pip install 'rnnrt[examples]' silero-vad
    rnnrt convert "$(python -c 'import silero_vad, os; print(os.path.dirname(silero_vad.__file__))')/data/silero_vad.onnx" \\
        -o out/silero --set sr=16000 --context input:64
    python examples/vad_server.py serve --model out/silero/model.yaml --port 8765 --streams 256
    python examples/vad_server.py load --url ws://127.0.0.1:8765 --clients 50 --seconds 10

``serve`` prints ``ready ws://HOST:PORT`` once it listens. ``load`` runs N clients that send chunks of a
synthetic signal at real-time pace (every 32 ms) and prints the latency percentiles from send to answer.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import sys
import time

import numpy as np

RATE, CHUNK = 16000, 512


def pcm_to_frame(message: bytes) -> np.ndarray:
    """One message (16-bit little-endian PCM) as the model's frame: float32 in [-1, 1), batch dim 1."""
    if not isinstance(message, (bytes, bytearray)) or len(message) != 2 * CHUNK:
        got = f"{len(message)} bytes" if isinstance(message, (bytes, bytearray)) else "a text message"
        raise ValueError(f"expected {2 * CHUNK} bytes ({CHUNK} int16 samples), got {got}")
    return (np.frombuffer(message, dtype="<i2").astype(np.float32) / 32768.0)[None]


async def serve(model: str, host: str, port: int, streams: int, max_delay_ms: float) -> None:
    import websockets

    import rnnrt

    session = rnnrt.load(model, batch_size=streams)
    batcher = rnnrt.StreamBatcher(rnnrt.StreamPool(session), max_delay_ms=max_delay_ms)
    output = session.output_names[0]
    ids = itertools.count()

    async def connection(ws) -> None:
        sid = next(ids)
        try:
            for seq in itertools.count():
                try:
                    message = await ws.recv()
                except websockets.ConnectionClosed:
                    return
                try:
                    out = await batcher.step(sid, pcm_to_frame(message))
                    reply = {"seq": seq, "speech": float(out[output].reshape(-1)[0])}
                except (ValueError, rnnrt.RnnrtError) as err:  # this chunk only; the stream goes on
                    reply = {"seq": seq, "error": str(err)}
                await ws.send(json.dumps(reply))
        finally:
            batcher.close_stream(sid)

    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with websockets.serve(connection, host, port, max_size=2 ** 16) as server:
        bound = next(iter(server.sockets)).getsockname()
        print(f"ready ws://{bound[0]}:{bound[1]}", flush=True)
        await stop
    await batcher.aclose()
    m = batcher.metrics()
    print(f"served {m.frames} chunks in {m.ticks} ticks (mean batch {m.mean_batch:.1f})", flush=True)
    session.close()


def test_signal(seconds: float, seed: int) -> np.ndarray:
    """Noise with voiced bursts (harmonics under a syllable-rate envelope), as int16 PCM."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    voiced = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 560), 1))
    envelope = np.clip(np.sin(2 * np.pi * 0.5 * t + seed), 0, None) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    x = 0.3 * voiced * envelope + 0.01 * rng.standard_normal(len(t))
    return (np.clip(x, -1, 1) * 32767).astype("<i2")


async def client(url: str, pcm: np.ndarray, realtime: bool) -> tuple[list, list]:
    """Streams ``pcm`` chunk by chunk (every 32 ms when ``realtime``); returns (speech probabilities, latencies)."""
    import websockets

    probs, latencies = [], []
    async with websockets.connect(url, max_size=2 ** 16) as ws:
        start = time.perf_counter()
        for k in range(len(pcm) // CHUNK):
            if realtime:
                await asyncio.sleep(max(0.0, start + k * CHUNK / RATE - time.perf_counter()))
            sent = time.perf_counter()
            await ws.send(pcm[k * CHUNK:(k + 1) * CHUNK].tobytes())
            reply = json.loads(await ws.recv())
            latencies.append(time.perf_counter() - sent)
            probs.append(reply.get("speech", reply.get("error")))
    return probs, latencies


async def load(url: str, clients: int, seconds: float) -> None:
    results = await asyncio.gather(*(client(url, test_signal(seconds, seed), True) for seed in range(clients)))
    ms = np.concatenate([lat for _, lat in results]) * 1e3
    print(f"{clients} clients, {len(ms)} chunks: latency p50 {np.percentile(ms, 50):.1f} ms, "
          f"p99 {np.percentile(ms, 99):.1f} ms, max {ms.max():.1f} ms")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="Run the server.")
    s.add_argument("--model", required=True, help="The converted Silero VAD model.yaml (see the module doc).")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8765, help="0: any free port (printed).")
    s.add_argument("--streams", type=int, default=256, help="Most connections at once (the pool's slots).")
    s.add_argument("--max-delay-ms", type=float, default=2.0)
    c = sub.add_parser("load", help="Run N real-time clients against a server.")
    c.add_argument("--url", default="ws://127.0.0.1:8765")
    c.add_argument("--clients", type=int, default=50)
    c.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args(argv)
    if args.command == "serve":
        asyncio.run(serve(args.model, args.host, args.port, args.streams, args.max_delay_ms))
    else:
        asyncio.run(load(args.url, args.clients, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
