"""Ray engine: a run's signal plan computed on a Ray cluster, the cache written by the workers.

``run_plan`` is the engine's entry point (``signals.compute`` calls it for ``engine="ray"``): the signals a
run still lacks are grouped into passes (one pass for every cheap CPU signal together; one pass for each
model, GPU, LLM or other signal that uses all cores itself), each pass is one pool of actors (``PlanWorker``)
that sets every signal of the pass up once and, per shard, computes each signal on the shard rows that
signal lacks (``engines.local.compute_shard``: the local engine's batches, so the values are identical) and
writes the parts itself (``SignalStore.write_part`` / ``VectorStore.write_shard``, atomic, keyed by the
shard's ids). A call returns only small done records (``DoneRecord``, with the shard's LLM usage
counters when the signal has them); the driver reads the values back from the cache. A pass's actors are
kept for the next pass that asks for the same CPUs/GPUs per actor (``_actor_pool``: a worker process costs
seconds to start); reading on the workers, or a pass with other resources, ends them first. The cache folder must therefore be one every worker sees: a local path on a one-machine
cluster, a shared file system or object store on a real one. A killed run resumes by shard as with the
local engine (finished parts stay, their rows are not recomputed); a dead worker's shard is given to a new
actor (``MAX_ATTEMPTS`` tries per shard).

Shards are cut by the driver in pool order of the missing ids; their size is ``shard_size`` when given,
else the smallest ``Signal.shard_size`` of the pass, else ``auto_shard_size`` (about four shards per actor,
so an actor that finishes early takes more work, within [1,024, 65,536] records).

Settings (``RaySettings``, the recipe's ``ray:`` section, ``--ray-address``): the cluster address (else
``RAY_ADDRESS``, else a local instance bound to 127.0.0.1, no dashboard), actors per signal, CPUs and GPUs
per actor (fractional GPUs allowed) and the job's ``runtime_env``. A signal asks for GPUs only by what it
declares (``resources = {"gpus": n}``, or a model on ``device="cuda..."``) or by ``gpus_per_actor``;
nothing is probed on the driver. An unreachable cluster, a refused token (``ray.exceptions.AuthenticationError``)
or a connection that does not come up in ``connect_timeout_s`` is a ``ClusterError`` (exit 6).

A shared cluster is the operator's to secure: Ray's token authentication (``RAY_AUTH_MODE=token``) and a
private network (head and worker ports reachable only from the cluster's nodes); see docs/outputs.md.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import dataclasses
import math
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from .. import fs, progress
from ..errors import ClusterError, ConfigError, MissingDependencyError, SiftkitError
from ..signals.base import Signal

LOCALHOST = "127.0.0.1"
MIN_SHARD, MAX_SHARD, SHARDS_PER_ACTOR = 1024, 65536, 4
MIN_READ_CHUNK = 4 << 20  # bytes of JSON Lines per reading task, at least (a task and its files cost ~10 ms)
MAX_ATTEMPTS = 4          # tries per shard when workers die (node lost, OOM kill)
IN_FLIGHT = 2             # calls queued per actor: the next shard is ready when one finishes
DEFAULT_CONNECT_TIMEOUT = 60.0


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class RaySettings:
    """The recipe's ``ray:`` section. ``actors``, ``cpus_per_actor`` and ``gpus_per_actor`` are a number for
    every pass or a mapping ``{signal_name: n, default: n}``."""

    address: str | None = None
    actors: int | dict[str, int] | None = None
    cpus_per_actor: float | dict[str, float] | None = None
    gpus_per_actor: float | dict[str, float] | None = None
    runtime_env: dict[str, Any] | None = None
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    def pick(self, key: str, name: str) -> Any:
        """The value of ``key`` for signal ``name``: its own entry, else ``default``, else the number."""
        v = getattr(self, key)
        if isinstance(v, dict):
            return v.get(name, v.get("default"))
        return v


RAY_KEYS = {"address", "actors", "cpus_per_actor", "gpus_per_actor", "runtime_env", "connect_timeout_s"}


def parse_ray_settings(data: Any, source: str = "config") -> RaySettings:
    """Validate a ``ray:`` mapping; every error names the key (``recipe.yaml: ray.gpus_per_actor.lm_loss``)."""
    if data is None:
        return RaySettings()
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: ray: expected a mapping with keys {sorted(RAY_KEYS)}, got {data!r}")
    unknown = set(data) - RAY_KEYS
    if unknown:
        raise ConfigError(f"{source}: ray: unknown key(s) {sorted(unknown)}; allowed: {sorted(RAY_KEYS)}")
    addr = data.get("address")
    if addr is not None and (not isinstance(addr, str) or not addr.strip()):
        raise ConfigError(f"{source}: ray.address: expected 'host:port', 'ray://host:10001' or 'auto', got {addr!r}")

    def number(v: Any, where: str, *, integer: bool, positive: bool) -> Any:
        ok = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok or (v <= 0 if positive else v < 0) or (not integer and math.isnan(v)):
            kind = "a positive integer" if integer else ("a positive number" if positive else "a number >= 0")
            raise ConfigError(f"{source}: {where}: expected {kind}, got {v!r}")
        return v

    def per_signal(key: str, *, integer: bool, positive: bool) -> Any:
        v = data.get(key)
        if v is None:
            return None
        if isinstance(v, dict):
            if not v:
                raise ConfigError(f"{source}: ray.{key}: an empty mapping; give a number or {{signal: n}}")
            out = {}
            for name, n in v.items():
                if not isinstance(name, str):
                    raise ConfigError(f"{source}: ray.{key}: signal names are strings, got {name!r}")
                out[name] = number(n, f"ray.{key}.{name}", integer=integer, positive=positive)
            return out
        return number(v, f"ray.{key}", integer=integer, positive=positive)

    env = data.get("runtime_env")
    if env is not None and not isinstance(env, dict):
        raise ConfigError(f"{source}: ray.runtime_env: expected a mapping (pip, env_vars, working_dir, ...), "
                          f"got {env!r}")
    timeout = data.get("connect_timeout_s", DEFAULT_CONNECT_TIMEOUT)
    number(timeout, "ray.connect_timeout_s", integer=False, positive=True)
    return RaySettings(address=addr.strip() if addr else None,
                       actors=per_signal("actors", integer=True, positive=True),
                       cpus_per_actor=per_signal("cpus_per_actor", integer=False, positive=False),
                       gpus_per_actor=per_signal("gpus_per_actor", integer=False, positive=False),
                       runtime_env=copy.deepcopy(env), connect_timeout_s=float(timeout), raw=dict(data))


def auto_shard_size(rows: int, actors: int) -> int:
    """About ``SHARDS_PER_ACTOR`` shards per actor (an actor that finishes early takes the next one), at
    least ``MIN_SHARD`` records (a call and a part file cost a few ms each) and at most ``MAX_SHARD``."""
    want = math.ceil(max(1, rows) / (SHARDS_PER_ACTOR * max(1, actors)))
    return int(min(MAX_SHARD, max(MIN_SHARD, want)))


def gpus_for(sig: Signal, settings: RaySettings) -> float:
    """GPUs per actor for ``sig``: ``gpus_per_actor`` (per signal or default) for model and embedding signals
    (they have a ``device``), else what the signal declares: ``resources`` gpus (class attribute) or a model
    pinned to ``device="cuda..."``. Never a probe of the driver's own GPUs."""
    per = settings.gpus_per_actor
    if isinstance(per, dict) and sig.name in per:
        return float(per[sig.name])
    device = getattr(sig, "device", None)
    if isinstance(device, str):                      # a model / embedding signal
        v = settings.pick("gpus_per_actor", sig.name)
        if v is not None:
            return float(v)
        return 1.0 if device.startswith("cuda") else 0.0
    # Other signals declare what they need from their parameters alone (the judge: backend vllm).
    return float((sig.resources or {}).get("gpus", 0) or 0)


# --------------------------------------------------------------------------- connection


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("ray", "ray", "the Ray engine") from None
    return ray


def _probe(address: str, timeout: float) -> None:
    """A TCP connect to the head's port before ``ray.init`` (which retries an unreachable GCS for minutes)."""
    a = address.removeprefix("ray://")
    a = a.split("/", 1)[0]
    host, _, port = a.rpartition(":")
    if not host:
        host, port = a, ("10001" if address.startswith("ray://") else "6379")
    host = host.strip("[]")
    try:
        port_n = int(port)
    except ValueError:
        raise ConfigError(f"ray address {address!r}: the port {port!r} is not a number") from None
    try:
        with socket.create_connection((host, port_n), timeout=min(timeout, 10.0)):
            pass
    except OSError as e:
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}. Check --ray-address "
                           f"/ RAY_ADDRESS / ray.address and that the head node runs (ray start --head)") from None


def init_ray(address: str | None = None, *, runtime_env: dict[str, Any] | None = None,
             timeout: float | None = None) -> Any:
    """Connect to the Ray cluster at ``address`` (or ``RAY_ADDRESS``), else start a local instance that
    listens on 127.0.0.1 only (no dashboard), so nothing on the network can reach it. Already connected:
    the current session is used. Errors: ``ClusterError`` (unreachable, refused token, timeout)."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        # Ray resolves "127.0.0.1" to the machine's outward address unless it runs as a single-machine
        # "cluster"; this switch (read by Ray's constants, also inherited by its processes) keeps every
        # Ray process (GCS, raylet, workers, agents) bound to the loopback interface.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    timeout = float(timeout or DEFAULT_CONNECT_TIMEOUT)
    if address not in (None, "auto", "local"):
        _probe(address, timeout)
    opts: dict[str, Any] = {"ignore_reinit_error": True, "include_dashboard": False,
                            "log_to_driver": False, "configure_logging": False}
    if runtime_env:
        opts["runtime_env"] = runtime_env
    where = address or "a local instance"
    if address is None:
        _keep_ray_local()
        opts["_node_ip_address"] = LOCALHOST
        address = "local"   # a new instance, never a cluster found on this machine (/tmp/ray/ray_current_cluster)
    result: dict[str, BaseException | None] = {}

    def connect() -> None:
        try:
            ray.init(address=address, **opts)
            result["error"] = None
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            result["error"] = e

    if address == "local":   # starting our own instance: nothing to wait for but this machine
        connect()
        if result.get("error") is None:
            # Stopped at exit by us first (atexit runs last-registered first): Ray's own exit hook sleeps
            # 0.5 s for log lines to print, and this instance prints none to the driver (log_to_driver off).
            atexit.register(ray.shutdown)
    else:                    # a cluster: ray.init retries an unresponsive GCS for minutes, so bound the wait
        t = threading.Thread(target=connect, name="siftkit-ray-init", daemon=True)
        t.start()
        t.join(timeout)
    if "error" not in result:
        raise ClusterError(f"no answer from the Ray cluster at {where} within {timeout:g} s "
                           f"(ray.connect_timeout_s); check the address and the cluster's health")
    err = result.get("error")
    if err is None:
        return ray
    auth = getattr(getattr(ray, "exceptions", None), "AuthenticationError", None)
    if auth is not None and isinstance(err, auth):
        raise ClusterError(f"the Ray cluster at {where} refused the credentials: {err.message.strip()} "
                           f"(token authentication: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)"
                           ) from None
    if isinstance(err, (ConnectionError, TimeoutError)):
        cause = f" ({err.__cause__})" if err.__cause__ else ""
        raise ClusterError(f"cannot connect to the Ray cluster at {where}: {err}{cause}") from None
    raise err


def _keep_ray_local() -> None:
    try:
        from ray._private import ray_constants
    except ImportError:  # pragma: no cover - a Ray without this module
        return
    if hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        ray_constants.ENABLE_RAY_CLUSTER = False   # Ray was imported before the variable was set


# --------------------------------------------------------------------------- progress from the workers


TICK_S = 0.5        # seconds between a running call's progress reports (at most 2 a second per call)
POLL_S = 0.25       # seconds between the driver's reads of the counter (while it waits for results)
POLL_WAIT_S = 0.05  # the longest the driver waits for the counter's answer (a round trip is ~1 ms)
COUNTER_AFTER_S = 1.0   # the counter actor is made once a call has run this long (a short run never pays it)

ProgressKey = tuple   # one call of one try: (run token, pass, task, attempt) or (run token, "read", task)


class ProgressCounter:
    """Actor body (``num_cpus=0``, one per Ray session, ``_progress_counter``): the latest counts each
    running call reported, ``{key: {channel: n}}`` (a channel: a signal's fingerprint, or ``"items"`` read).
    A call sends its cumulative counts, so a lost, late or repeated report never adds up twice; the
    driver reads them (``snapshot``) and drops the calls it has the done records of (``forget``)."""

    def __init__(self) -> None:
        self.counts: dict[ProgressKey, dict[str, int]] = {}

    def report(self, key: ProgressKey, counts: dict[str, int]) -> None:
        self.counts[key] = counts

    def snapshot(self) -> dict[ProgressKey, dict[str, int]]:
        return self.counts

    def forget(self, keys: Sequence[ProgressKey]) -> None:
        for k in keys:
            self.counts.pop(k, None)


_FOUND: dict[str, Any] = {}   # in a worker process: the counters found by name (``Ticker``)


class Ticker:
    """In a worker: one call's progress (``on(channel)`` is an ``on_batch`` callback), reported to the
    ``ProgressCounter`` fire-and-forget at most every ``TICK_S`` seconds; a call shorter than that reports
    nothing (its done record says it all). ``report``: ``(counter's name, key)`` from the driver, or
    ``None``; the counter is looked up by name when the first report is due (once per worker process): the
    driver makes it only once a call has run ``COUNTER_AFTER_S``, so until then there is none to report to."""

    def __init__(self, report: tuple[str, ProgressKey] | None):
        self.name, self.key = report if report is not None else (None, None)
        self.counts: dict[str, int] = {}
        self.next = time.monotonic() + TICK_S

    def on(self, channel: str) -> Callable[[int], None] | None:
        if self.name is None:
            return None

        def tick(n: int) -> None:
            self.counts[channel] = self.counts.get(channel, 0) + n
            now = time.monotonic()
            if now >= self.next:
                self.next = now + TICK_S
                counter = _FOUND.get(self.name) or _find_counter(self.name)
                if counter is not None:
                    counter.report.remote(self.key, dict(self.counts))

        return tick


def _find_counter(name: str) -> Any:
    import ray

    try:
        _FOUND[name] = ray.get_actor(name)
    except ValueError:          # not made yet: the next report looks again
        return None
    return _FOUND[name]


_COUNTER: dict[str, Any] = {}   # {"key": session, "name": its counter's name, "actor": None until made}


def _counter_name(ray: Any) -> str:
    """The name of the Ray session's ``ProgressCounter`` (the actor itself is made by ``_progress_counter``)."""
    key = _session(ray)
    if _COUNTER.get("key") != key:
        _COUNTER.clear()
        _COUNTER.update(key=key, name=f"siftkit-progress-{os.urandom(6).hex()}", actor=None)
    return _COUNTER["name"]


def _progress_counter(ray: Any) -> Any:
    """The Ray session's ``ProgressCounter`` actor, made on first use (on the driver's node, no CPU, named
    ``_counter_name``) and kept for the session's later passes and runs; ``None`` where it cannot be made
    (progress then comes with the done records only)."""
    try:
        name = _counter_name(ray)
        if _COUNTER["actor"] is None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            here = NodeAffinitySchedulingStrategy(node_id=_COUNTER["key"][2], soft=True)
            _COUNTER["actor"] = ray.remote(ProgressCounter).options(
                name=name, num_cpus=0, max_restarts=0, scheduling_strategy=here).remote()
        return _COUNTER["actor"]
    except Exception as e:  # noqa: BLE001 - progress is never worth failing a run for
        progress.debug(f"ray: no progress counter ({type(e).__name__}: {e}); progress per done record only")
        return None


class WorkerProgress:
    """On the driver: the counts the running calls reported, turned into progress per channel for
    ``emit(channel, n)``. The done records stay the source of truth: ``start(key, caps)`` registers a
    call (``caps``: the most rows it can report per channel, e.g. its shard's rows), ``poll()`` makes the
    session's counter once a call has run ``COUNTER_AFTER_S`` (if no earlier run made it) and reads it
    (waiting ``POLL_WAIT_S`` at most: a snapshot not back yet is read at a later poll), ``finish(key,
    exact)`` replaces the call's reports by its done record's counts, ``drop(key)`` forgets a failed try
    (its retry reports under a new key, or, a Ray task retried by Ray, the same key anew: never twice).
    What is emitted per channel is the running maximum of (finished counts + reports of the running calls),
    so it only grows, never passes the finished counts' total, and equals it once every call is done."""

    def __init__(self, ray: Any, emit: Callable[[str, int], None]):
        self.ray, self.emit = ray, emit
        self.counter: Any = None       # made by a poll once a call has run COUNTER_AFTER_S (``_progress_counter``)
        self.name: str | None = None
        self.lost = False
        self.t0: dict[ProgressKey, float] = {}   # when each running call started
        self.token = os.urandom(6).hex()          # the session's counter outlives this run
        self.live: dict[ProgressKey, dict[str, int | None]] = {}
        self.seen: dict[ProgressKey, dict[str, int]] = {}
        self.exact: dict[str, int] = {}
        self.shown: dict[str, int] = {}
        self.asked: Any = None
        self.last = time.monotonic()

    def key(self, *parts: Any) -> ProgressKey:
        return (self.token, *parts)

    def start(self, key: ProgressKey, caps: dict[str, int | None]) -> tuple[str, ProgressKey] | None:
        """Register a call; returns what the worker's ``Ticker`` needs: the counter's name and the key
        (``None``: no counter)."""
        self.live[key] = caps
        if self.lost:
            return None
        if self.name is None:
            try:
                self.name = _counter_name(self.ray)
            except Exception:  # noqa: BLE001 - no session details: progress per done record only
                self.lost = True
                return None
        if self.counter is None and _COUNTER.get("name") == self.name and _COUNTER.get("actor") is not None:
            self.counter = _COUNTER["actor"]        # made by an earlier run of this session
        self.t0[key] = time.monotonic()
        return (self.name, key)

    def poll(self) -> None:
        """Read the counter's reports (at most every ``POLL_S`` seconds; waits ``POLL_WAIT_S`` at most)."""
        if self.counter is None:
            now = time.monotonic()
            if self.lost or not any(now - t >= COUNTER_AFTER_S for t in self.t0.values()):
                return
            self.counter = _progress_counter(self.ray)   # a call has run a while: worth a counter
            self.lost = self.counter is None
            if self.counter is None:
                return
        ray = self.ray
        now = time.monotonic()
        if self.asked is None and self.live and now - self.last >= POLL_S:
            self.last = now
            self.asked = self.counter.snapshot.remote()
        if self.asked is not None:
            ready, _ = ray.wait([self.asked], timeout=POLL_WAIT_S)
            if not ready:            # a counter still starting, or busy: read at a later poll
                return
            try:
                snap = ray.get(self.asked)
            except Exception as e:  # noqa: BLE001 - a lost counter: progress per done record from here on
                progress.debug(f"ray: progress counter lost ({type(e).__name__}); progress per done record only")
                self.counter, self.lost = None, True
                return
            finally:
                self.asked = None
            stale = [k for k in snap if k[0] == self.token and k not in self.live]
            if stale:                                 # reports that came after their call's done record
                self.counter.forget.remote(stale)
            for k, counts in snap.items():
                if k in self.live:
                    self.seen[k] = counts
            self._emit()

    def finish(self, key: ProgressKey, exact: dict[str, int]) -> None:
        self.drop(key)
        for ch, n in exact.items():
            self.exact[ch] = self.exact.get(ch, 0) + n
        self._emit()

    def drop(self, key: ProgressKey) -> None:
        self.seen.pop(key, None)
        self.t0.pop(key, None)
        if self.live.pop(key, None) is not None and self.counter is not None:
            self.counter.forget.remote([key])

    def _emit(self) -> None:
        now = dict(self.exact)
        for k, counts in self.seen.items():
            caps = self.live[k]
            for ch, n in counts.items():
                cap = caps.get(ch)
                now[ch] = now.get(ch, 0) + (min(n, cap) if cap is not None else n)
        for ch, v in now.items():
            d = v - self.shown.get(ch, 0)
            if d > 0:
                self.shown[ch] = v
                self.emit(ch, d)


class ReadProgress:
    """The Ray reading's progress (``RayTaskReader``): items read (records + rejects, ``io.pool.result_items``)
    for ``read_pool``'s ``read`` stage through ``advance(n)``, and one ``signal:<name>`` stage per signal
    computed while reading (rows, its total estimated from the bytes read so far, as the ``read`` stage's),
    both per batch from the workers (``WorkerProgress``) and exact once each task's result is in."""

    def __init__(self, advance: Callable[[int], None] | None = None):
        self.advance = advance
        self.tracker: WorkerProgress | None = None
        self.stages: dict[str, progress.Stage] = {}
        self.opened: list[Any] = []               # the stages' context managers, left in close()
        self.sizes: list[int] = []
        self.bytes_total = self.bytes_done = 0

    def begin(self, ray: Any, tasks: Sequence[Any], signals: Sequence[Signal]) -> None:
        from ..io.pool import _task_size

        self.sizes = [_task_size(t) for t in tasks]
        self.bytes_total = sum(self.sizes)
        for s in signals:
            cm = progress.stage(f"signal:{s.name}")
            self.opened.append(cm)
            st = cm.__enter__()
            st.set(engine="ray", while_reading=True)
            self.stages[s.fingerprint()] = st
        self.tracker = WorkerProgress(ray, self._emit)

    def _emit(self, channel: str, n: int) -> None:
        if channel == "items":
            if self.advance is not None:
                self.advance(n)
        elif channel in self.stages:
            self.stages[channel].update(n)

    def start(self, i: int) -> tuple[str, ProgressKey] | None:
        """What reading task ``i`` reports to (its ``report`` argument)."""
        return None if self.tracker is None else self.tracker.start(self.tracker.key("read", i), {})

    def poll(self) -> None:
        if self.tracker is not None:
            self.tracker.poll()

    def finish(self, i: int, res: dict[str, Any], scored: Sequence[DoneRecord] = ()) -> None:
        """Task ``i``'s result is in (read on a worker, in the driver, or reused from an earlier run)."""
        from ..io.pool import result_items

        if self.tracker is None:
            return
        self.tracker.finish(self.tracker.key("read", i),
                            {"items": result_items(res), **{r["fingerprint"]: r["rows"] for r in scored}})
        self.bytes_done += self.sizes[i]
        if 0 < self.bytes_done < self.bytes_total:
            for st in self.stages.values():
                st.set_total(max(st.n, int(st.n * self.bytes_total / self.bytes_done)))

    def close(self, failed: bool = False) -> None:
        for st in self.stages.values():
            if failed:
                st.close(failed=True)
            else:
                st.set_total(st.n)
        for cm in self.opened:
            cm.__exit__(None, None, None)
        self.stages, self.opened = {}, []


# --------------------------------------------------------------------------- the plan


Segments = list[tuple[str, np.ndarray]]   # a shard read by the worker: (pool Arrow file, row positions), in order


@dataclass
class Pass:
    """Signals computed by one actor pool: ``shards`` are pool-row tables cut by the driver, or segments
    of the pool's Arrow files that the worker reads itself (``Pool.spill``); ``rows[i][fingerprint]`` the
    positions in shard ``i`` that signal still lacks (``None``: every row)."""

    signals: list[Signal]
    shards: list[pa.Table | Segments]
    rows: list[dict[str, np.ndarray | None]]
    sizes: list[int]
    actors: int
    cpus: float
    gpus: float

    @property
    def label(self) -> str:
        return "+".join(s.name for s in self.signals)


DoneRecord = dict[str, Any]   # {"shard": i, "signal": name, "fingerprint": fp, "rows": n, "seconds": s}
#                               (+ "usage": the worker's LLM counters for that shard, ``Usage.take()``)
Writer = Callable[[str, Signal, pa.Array, dict[str, Any]], Any]   # (cache_dir, signal, ids, values): one part


def write_scalar_part(cache_dir: str, sig: Signal, ids: pa.Array, values: dict[str, Any]) -> str:
    """The default ``Writer``: a scalar signal's part through ``SignalStore`` (vector signals pass
    ``signals.vectors.write_vector_part``)."""
    from ..signals.store import SignalStore

    return SignalStore(cache_dir).write_part(sig, ids, values)


class PlanWorker:
    """Actor body: the signals of the passes it serves, each set up once (on first use); per call one shard,
    each signal on the rows it lacks, parts written to the shared cache; returns done records only.
    An actor outlives its pass: ``add`` gives it the next pass's signals (``_actor_pool`` keeps one pool per
    run, so a second pass does not pay for new worker processes)."""

    def __init__(self, signals: Sequence[Signal], cache_dir: str, write: Writer | None = None):
        self.signals: dict[str, Signal] = {}
        self.writers: dict[str, Writer] = {}
        self.cache_dir = cache_dir
        self.files: dict[str, pa.Table] = {}     # pool Arrow files, memory-mapped once per actor
        self.add(signals, cache_dir, write)

    def add(self, signals: Sequence[Signal], cache_dir: str, write: Writer | None = None) -> bool:
        """The signals of the next pass (and its cache folder and part writer)."""
        if cache_dir != self.cache_dir:
            self.files = {}
        self.cache_dir = cache_dir
        for s in signals:
            fp = s.fingerprint()
            self.signals[fp] = s
            self.writers[fp] = write or write_scalar_part
            if hasattr(s, "begin_run"):   # an LLM signal: this run's endpoint and response cache (set on the driver)
                s.begin_run(cache_dir)
        return True

    def run(self, shard: int, table: pa.Table | Segments, rows: dict[str, np.ndarray | None],
            report: tuple[str, ProgressKey] | None = None) -> list[DoneRecord]:
        """``report``: where to send the rows computed per batch (``Ticker``), ``None`` for none."""
        from .local import _WORKER_SIGNAL, compute_shard

        if not isinstance(table, pa.Table):
            table = self._read(table)
        ticker = Ticker(report)
        out = []
        for fp, pos in rows.items():
            sig = self.signals[fp]
            sub = table if pos is None else table.take(pa.array(pos, pa.int64()))
            t0 = time.perf_counter()
            values = compute_shard(sig, sub, ticker.on(fp))
            self.writers[fp](self.cache_dir, sig, sub.column("id").combine_chunks(), values)
            rec: DoneRecord = {"shard": shard, "signal": sig.name, "fingerprint": fp, "rows": int(sub.num_rows),
                               "seconds": round(time.perf_counter() - t0, 4)}
            live = _WORKER_SIGNAL.get(fp, sig)
            if hasattr(live, "take_usage"):   # LLM usage counted in this process since the last shard
                rec["usage"] = live.take_usage()
            out.append(rec)
        return out

    def _read(self, segments: Segments) -> pa.Table:
        parts = []
        for path, pos in segments:
            if path not in self.files:
                from ..io.pool import map_spilled

                self.files[path] = map_spilled(path, spill_copies(self.cache_dir))  # a URL: once per machine
            t = self.files[path]
            parts.append(t.select([c for c in t.column_names if c != "original"]).take(pa.array(pos, pa.int64())))
        return pa.concat_tables(parts).combine_chunks()


def _segments(rows: np.ndarray, spill: Sequence[tuple[str, int]], starts: np.ndarray) -> Segments:
    """Pool rows (sorted) as positions in the pool's Arrow files."""
    f = np.searchsorted(starts, rows, side="right") - 1
    out = []
    for i in np.unique(f):
        sel = rows[f == i]
        out.append((spill[int(i)][0], (sel - starts[i]).astype(np.int64)))
    return out


def is_cheap(sig: Signal, settings: RaySettings) -> bool:
    """A signal of the shared CPU pass (and computed while reading, ``ray_task_reader``): parallel, no GPU,
    no per-run state (LLM signals have an endpoint and a response cache: ``begin_run``)."""
    return bool(sig.parallel) and not gpus_for(sig, settings) and not hasattr(sig, "begin_run")


def plan_passes(todo: Sequence[tuple[Signal, np.ndarray]], pool: pa.Table, settings: RaySettings,
                resources: dict[str, float], shard_size: int | None = None,
                spill: Sequence[tuple[str, int]] | None = None) -> list[Pass]:
    """Group the signals that lack values (``(signal, pool rows it lacks)``) into passes and cut their
    shards: the cheap CPU signals (parallel, no GPU, no per-run state) share one pass over the union of
    their rows; each other signal gets its own pass, sharded like the local engine (its own rows).
    With ``spill`` (``Pool.spill``) a shard is a list of segments the worker reads from the pool's Arrow
    files, so the driver never copies the text; else a table cut from ``pool``."""
    from .local import make_shards

    starts = np.cumsum([0] + [n for _, n in spill])[:-1] if spill else None

    cheap = [(s, r) for s, r in todo if is_cheap(s, settings)]
    rest = [(s, r) for s, r in todo if not any(s is c for c, _ in cheap)]
    cpus_total = float(resources.get("CPU", 1) or 1)
    gpus_total = float(resources.get("GPU", 0) or 0)
    passes = []
    groups = ([cheap] if cheap else []) + [[x] for x in rest]
    for group in groups:
        sigs = [s for s, _ in group]
        gpus = max(gpus_for(s, settings) for s in sigs)
        cpus_v = [settings.pick("cpus_per_actor", s.name) for s in sigs]
        cpus = float(max(v for v in cpus_v if v is not None)) if any(v is not None for v in cpus_v) else 1.0
        if gpus and gpus > gpus_total:
            raise ConfigError(f"signal {sigs[0].name} asks for {gpus:g} GPU(s) per actor (ray.gpus_per_actor or "
                              f"its device) but the Ray cluster has {gpus_total:g}")
        given = [settings.pick("actors", s.name) for s in sigs]
        if any(v is not None for v in given):
            actors = int(max(v for v in given if v is not None))
        elif gpus:
            actors = max(1, int(gpus_total // gpus))
        elif all(s.parallel for s in sigs):
            actors = max(1, int(cpus_total // max(cpus, 1e-9)) if cpus else int(cpus_total))
        else:
            actors = 1
        union = np.unique(np.concatenate([r for _, r in group])) if len(group) > 1 else group[0][1]
        own = [s.shard_size for s in sigs if s.shard_size]
        size = int(shard_size or (min(own) if own else auto_shard_size(len(union), actors)))
        cuts = [union[i:i + size] for i in range(0, len(union), size)]
        shards: list[pa.Table | Segments] = ([_segments(c, spill, starts) for c in cuts] if spill
                                             else list(make_shards(pool, union, size)))
        rows: list[dict[str, np.ndarray | None]] = [{} for _ in shards]
        for s, r in group:
            lacks = np.isin(union, r, assume_unique=True)
            for i in range(len(shards)):
                part = lacks[i * size:(i + 1) * size]
                if part.all():
                    rows[i][s.fingerprint()] = None
                elif part.any():
                    rows[i][s.fingerprint()] = np.flatnonzero(part).astype(np.int64)
        passes.append(Pass(sigs, shards, rows, [len(c) for c in cuts], max(1, min(actors, len(shards))), cpus, gpus))
    return passes


def run_plan(todo: Sequence[tuple[Signal, np.ndarray]], pool: pa.Table, cache_dir: str, *,
             settings: RaySettings | None = None, shard_size: int | None = None,
             on_done: Callable[[DoneRecord], None] | None = None,
             spill: Sequence[tuple[str, int]] | None = None, write: Writer | None = None,
             on_progress: Callable[[str, int], None] | None = None) -> list[DoneRecord]:
    """Compute every ``(signal, pool rows it lacks)`` of ``todo`` on Ray, the parts written to
    ``cache_dir`` by the workers; returns the done records (also given to ``on_done`` as they arrive).
    ``on_progress(fingerprint, rows)``: rows computed, as the workers' batches finish (``WorkerProgress``:
    inside a shard too, at most every ``TICK_S`` seconds); per signal they sum to its done records' rows,
    each shard's share given in full before ``on_done`` gets its records.
    ``spill`` (``Pool.spill``): the workers read their shards' rows from the pool's Arrow files.
    ``write(cache_dir, signal, ids, values)`` writes one part in the worker (default: ``SignalStore``)."""
    settings = settings or RaySettings()
    if not todo:
        return []
    ray = init_ray(settings.address, runtime_env=settings.runtime_env, timeout=settings.connect_timeout_s)
    passes = plan_passes(todo, pool, settings, ray.cluster_resources(), shard_size, spill)

    done: list[DoneRecord] = []
    tracker = WorkerProgress(ray, on_progress) if on_progress is not None else None
    for p in passes:
        progress.debug(f"ray pass {p.label}: {len(p.shards)} shard(s) of up to {max(p.sizes):,} records, "
                       f"{p.actors} actor(s), {p.cpus:g} CPU / {p.gpus:g} GPU each",
                       stage="ray", signals=[s.name for s in p.signals], shards=len(p.shards), actors=p.actors,
                       cpus=p.cpus, gpus=p.gpus)
        tasks = [(i, p.shards[i], p.rows[i]) for i in range(len(p.shards)) if p.rows[i]]

        def got(recs: list[DoneRecord]) -> None:
            for r in recs:
                done.append(r)
                if on_done is not None:
                    on_done(r)

        _run_pass(ray, p, cache_dir, tasks, got, write, tracker)
    return done


def cache_root(cache_dir: str) -> str:
    """The cache folder as the workers must see it: absolute for a local path (a worker's working folder
    is not the driver's), URLs unchanged."""
    return cache_dir if "://" in str(cache_dir) else os.path.abspath(cache_dir)


def _run_pass(ray: Any, p: Pass, cache_dir: str, tasks: list[tuple[int, Any, dict]],
              on_result: Callable[[list[DoneRecord]], Any], write: Writer | None = None,
              tracker: WorkerProgress | None = None) -> None:
    from ray import exceptions as rex

    retry = (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError,
             rex.LocalRayletDiedError)
    if not tasks:
        return
    cache = cache_root(cache_dir)
    actors = _actor_pool(ray, p, cache, write, min(p.actors, len(tasks)))

    def new_actor() -> Any:
        return _remote_worker(ray, p).remote(p.signals, cache, write)

    slots = deque(a for _ in range(IN_FLIGHT) for a in range(len(actors)))
    queue = deque(range(len(tasks)))
    attempts = [0] * len(tasks)
    pending: dict[Any, tuple[int, int]] = {}
    refs: dict[int, Any] = {}
    while queue or pending:
        while queue and slots:
            a, t = slots.popleft(), queue.popleft()
            shard, table, rows = tasks[t]
            if t not in refs:
                refs[t] = ray.put(table)   # kept until the shard is done: a retry does not re-send it
            report = None
            if tracker is not None:        # a retry reports under its own key: its rows never count twice
                report = tracker.start(tracker.key(id(p), t, attempts[t]),
                                       {fp: p.sizes[shard] if pos is None else len(pos) for fp, pos in rows.items()})
            pending[actors[a].run.remote(shard, refs[t], rows, report)] = (t, a)
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=None if tracker is None else POLL_S)
        if tracker is not None:
            tracker.poll()
        for ref in ready:
            t, a = pending.pop(ref)
            key = None if tracker is None else tracker.key(id(p), t, attempts[t])
            try:
                recs = ray.get(ref)
            except rex.RayTaskError as e:
                raise _task_failure(e, f"ray pass {p.label}: shard {tasks[t][0]} failed") from None
            except retry as e:
                if tracker is not None:
                    tracker.drop(key)
                attempts[t] += 1
                if attempts[t] >= MAX_ATTEMPTS:
                    raise ClusterError(f"ray pass {p.label}: shard {tasks[t][0]} failed {attempts[t]} times "
                                       f"(workers died: {type(e).__name__}); finished shards are cached, "
                                       f"rerun to resume") from None
                queue.appendleft(t)
                actors[a] = new_actor()     # the old actor is gone (or going): a fresh one takes its slot
                _POOL["actors"] = actors
                slots.append(a)
                continue
            refs.pop(t, None)
            slots.append(a)
            if tracker is not None:
                tracker.finish(key, {r["fingerprint"]: r["rows"] for r in recs})
            on_result(recs)


_POOL: dict[str, Any] = {}   # the actors of the last pass: {"key": (session, shape), "actors": [...]}


def _session(ray: Any) -> tuple:
    ctx = ray.get_runtime_context()
    return (ctx.gcs_address, ctx.get_job_id(), ctx.get_node_id())


def _remote_worker(ray: Any, p: Pass) -> Any:
    return ray.remote(PlanWorker).options(num_cpus=p.cpus, num_gpus=p.gpus or None, max_restarts=0,
                                          max_task_retries=0)


def _actor_pool(ray: Any, p: Pass, cache: str, write: Writer | None, n: int) -> list[Any]:
    """``n`` actors for pass ``p``: the last pass's actors when they have the same resources (CPUs, GPUs)
    in the same Ray session, given ``p``'s signals with ``PlanWorker.add`` (a worker process costs about
    2 s to start on a busy 2-core machine; a pass reusing them costs one small call), plus new ones when
    ``p`` wants more; else the old ones are released first (they hold their CPUs/GPUs) and new ones made."""
    key = (_session(ray), p.cpus, p.gpus)
    if _POOL.get("key") != key:
        release_actors(ray)
    actors = list(_POOL.get("actors", []))
    reused = actors[:n]
    for a in reused:    # not waited for: an actor runs its calls in order, and a dead one fails its first shard
        a.add.remote(p.signals, cache, write)
    for a in actors[n:]:              # more than this pass wants: they would hold CPUs it does not use
        ray.kill(a)
    remote = _remote_worker(ray, p)
    out = reused + [remote.remote(p.signals, cache, write) for _ in range(n - len(reused))]
    _POOL.update(key=key, actors=out)
    return out


def release_actors(ray: Any = None) -> None:
    """End the actors kept from the last pass (they hold CPUs that reading tasks or another pass need)."""
    actors, _POOL["actors"] = _POOL.get("actors", []), []
    _POOL.pop("key", None)
    if actors and ray is not None and ray.is_initialized():
        for a in actors:
            with contextlib.suppress(Exception):   # an actor already gone
                ray.kill(a)


# --------------------------------------------------------------------------- reading on the workers


def pool_file_key(task: Any) -> str:
    """The name of a file task's Arrow file in ``<cache>/_pool/``: the file (path, size, mtime) and every
    read option, so a rerun over the same inputs writes the same names."""
    import orjson
    import xxhash

    from .._version import __version__

    try:
        stamp = fs.stat_key(task.path)     # size:mtime, of a local file or an object
    except OSError:
        stamp = None
    blob = orjson.dumps([__version__, fs.abspath(task.path),
                         stamp, task.rel, task.source, task.format, task.mapping, task.header, task.recover,
                         task.byte_range, task.problem], option=orjson.OPT_SORT_KEYS, default=str)
    return xxhash.xxh3_128_hexdigest(blob)


STALE_COPY_S = 3600.0   # local copies of a remote cache's pool files older than this are removed by the next read


def spill_copies(cache_dir: str) -> str | None:
    """Where this machine keeps its downloaded copies of a remote cache's ``_pool`` files
    (``fs.local_folder(cache, "_pool")``); ``None`` for a local cache (its files are mapped in place)."""
    return fs.local_folder(cache_dir, "_pool") if fs.is_remote(cache_dir) else None


def _prune_copies(folder: str, max_age_s: float = STALE_COPY_S) -> None:
    """Remove the local copies of earlier runs' pool files (every run writes its pool files anew, so old
    copies are never read again; a mapped one stays valid after unlinking, a missing one is downloaded)."""
    now = time.time()
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return
    for name in names:
        p = os.path.join(folder, name)
        try:
            if not name.startswith(".dl-") and now - os.path.getmtime(p) > max_age_s:
                os.remove(p)
        except OSError:
            pass


def _task_result(ray: Any, refs: Any, what: str) -> Any:
    """``ray.get(refs)`` for Ray tasks retried by Ray itself (``max_retries``): a task that raised is
    ``_task_failure``; workers that died on every try are a ``ClusterError`` (finished work is kept: rerun)."""
    from ray import exceptions as rex

    try:
        return ray.get(refs)
    except rex.RayTaskError as e:
        raise _task_failure(e, f"{what} failed") from None
    except (rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError) as e:
        raise ClusterError(f"{what} failed {MAX_ATTEMPTS} times (workers died: {type(e).__name__}); "
                           f"rerun") from None


def _task_failure(e: Exception, what: str) -> Exception:
    """The error to raise for a task or actor call that raised: siftkit's own error as it was raised on the
    worker (its file, line and exit code intact), anything else as a RuntimeError saying ``what`` failed."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, SiftkitError):
        return cause
    return RuntimeError(f"{what}: {cause or e}")


def read_signals(signals: Sequence[Signal], cache_dir: str, settings: RaySettings) -> list[Signal]:
    """The signals of a run that the reading tasks compute as they read (``ray_task_reader``): the cheap
    scalar ones (``is_cheap``, no vector columns) whose cache holds no part yet. A signal with parts (an
    earlier run, a killed one, a pool that grew) is left to the plan, which computes exactly the ids the
    cache lacks; one computed while reading is found whole in the cache by ``compute_signals``."""
    from ..signals.store import SignalStore

    store = SignalStore(cache_dir)
    out, seen = [], set()
    for sig in signals:
        fp = sig.fingerprint()
        if fp in seen or not is_cheap(sig, settings) or getattr(sig, "kind", None) == "vector":
            continue
        seen.add(fp)
        if not store.parts(sig):
            out.append(sig)
    return out


def _read_task(task: Any, path: str, cache_dir: str, signals: Sequence[Signal],
               report: tuple[str, ProgressKey] | None = None) -> dict[str, Any]:
    """One file task on a worker: read and normalise it (``io.pool.process_task``, the local code), write its
    Arrow file to ``path``, then compute each of ``signals`` on its records and write one cache part per
    signal (``PlanWorker``'s code: the same batches and part writer as the plan). Returns the reader's
    result (rejects, file info, the Arrow file's path) with ``scored``, the signals' done records.
    ``report``: where to send the items read and the rows computed per batch (``Ticker``)."""
    import orjson

    from ..io import pool as io_pool
    from ..io.pool import process_task, write_spilled
    from .local import compute_shard

    ticker = Ticker(report)
    before, io_pool._READ_CALLBACK = io_pool._READ_CALLBACK, ticker.on("items") or io_pool._READ_CALLBACK
    try:
        res = process_task(task)
    finally:
        io_pool._READ_CALLBACK = before
    table = res.pop("table")
    res["table_path"] = write_spilled(table, path)
    if task.records is None:     # a file: its reading is kept for the next run (``RayTaskReader`` reuses it)
        fs.write_atomic(_read_meta_path(path), orjson.dumps(
            {"rows": table.num_rows, "rejects": res["rejects"], "rel": res["rel"], "format": res["format"],
             "info": dataclasses.asdict(res["info"]) if res["info"] is not None else None}, default=str))
    res["scored"] = scored = []
    if not table.num_rows:
        return res
    rows = table.select([c for c in table.column_names if c != "original"])
    ids = rows.column("id").combine_chunks()
    for sig in signals:
        t0 = time.perf_counter()
        values = compute_shard(sig, rows, ticker.on(sig.fingerprint()))
        write_scalar_part(cache_dir, sig, ids, values)
        scored.append({"shard": task.rel, "signal": sig.name, "fingerprint": sig.fingerprint(),
                       "rows": int(rows.num_rows), "seconds": round(time.perf_counter() - t0, 4)})
    return res


def _read_meta_path(arrow_path: str) -> str:
    """The reading's side file next to a pool Arrow file: its rejects, file info and row count (JSON)."""
    return arrow_path[: -len(".arrow")] + ".json"


def _reuse_reading(task: Any, path: str, names: set[str]) -> dict[str, Any] | None:
    """The result of an earlier run's reading of ``task`` (same file version, same read options: the key of
    ``path``), from ``<cache>/_pool``: its side file and Arrow file; ``None`` when absent or unreadable."""
    import orjson

    from ..io.pool import FileInfo

    meta = _read_meta_path(path)
    if fs.basename(meta) not in names or fs.basename(path) not in names:
        return None
    try:
        m = orjson.loads(fs.read_bytes(meta))
        info = FileInfo(**m["info"]) if m["info"] is not None else None
        return {"rejects": m["rejects"], "rel": m["rel"], "format": m["format"], "info": info,
                "table_path": path, "rows": int(m["rows"])}
    except (OSError, ValueError, KeyError, TypeError) as e:
        progress.debug(f"read: not reusing {path}: {e}")
        return None


class RayTaskReader:
    """``read_pool``'s ``run_tasks`` for the Ray engine: each file task is read and normalised on a worker
    (``io.pool.process_task``, the local code) into ``<cache>/_pool/<key>.arrow`` (Arrow IPC, written
    atomically); the driver gets the rejects and the file's info back and memory-maps the table, so the
    pool's text is never in the driver's memory (only the pages of the columns it reads). In-memory inputs
    are read in the driver (they are there already) and written the same way. With a URL cache each file is
    one PUT and every machine maps a local copy (``spill_copies``), so no shared file system is needed.

    ``signals``: the run's signals; those of ``read_signals`` (cheap, not cached yet) are computed by the
    same task on the records it has just read, and their parts written to the cache, so a run's cheap
    signals cost no second pass over the data (no shard tables, no second read of the Arrow files).
    ``scored`` collects their done records (``compute_signals(..., read_scored=)`` counts them as computed)."""

    def __init__(self, cache_dir: str, settings: RaySettings | None = None, signals: Sequence[Signal] = ()):
        self.cache_dir = cache_dir
        self.settings = settings or RaySettings()
        self.signals = list(signals)
        self.scored: list[DoneRecord] = []

    def _ray(self) -> Any:
        s = self.settings
        return init_ray(s.address, runtime_env=s.runtime_env, timeout=s.connect_timeout_s)

    def chunk_bytes(self, total_bytes: int) -> int:
        """The size of a JSON Lines reading task (``read_pool`` cuts larger ranges): about
        ``SHARDS_PER_ACTOR`` tasks per CPU of the cluster, so every worker is busy and one that finishes early
        takes another, within [``MIN_READ_CHUNK``, ``io.pool.JSONL_CHUNK_BYTES``]."""
        from ..io.pool import JSONL_CHUNK_BYTES

        cpus = float(self._ray().cluster_resources().get("CPU", 1) or 1)
        want = math.ceil(max(1, total_bytes) / (SHARDS_PER_ACTOR * max(1.0, cpus)))
        return int(min(JSONL_CHUNK_BYTES, max(MIN_READ_CHUNK, want)))

    def count_lines(self, jobs: list[tuple[str, int, int]]) -> list[int]:
        """Newlines in each ``(path, start, end)`` byte range, counted on the workers in parallel (the driver
        then numbers the JSONL ranges' lines, ``io.pool.number_lines``, without reading the files itself)."""
        if not jobs:
            return []
        from ..io.readers import count_newlines

        ray = self._ray()
        remote = ray.remote(count_newlines).options(num_cpus=1, max_retries=MAX_ATTEMPTS - 1)
        return [int(n) for n in _task_result(ray, [remote.remote(*j) for j in jobs],
                                             "counting the lines of the JSONL inputs on ray")]

    def __call__(self, tasks: list[Any], finished: Callable[[Any, dict[str, Any]], None],
                 advance: Callable[[int], None] | None = None) -> dict[int, dict[str, Any]]:
        """Read ``tasks``; ``finished(task, result)`` as each is in; ``advance(n)``: the items read
        (records + rejects), per batch from the workers, each task's exact count by its ``finished``."""
        prog = ReadProgress(advance)
        try:
            out = self._read(tasks, finished, prog)
        except BaseException:
            prog.close(failed=True)
            raise
        prog.close()
        return out

    def _read(self, tasks: list[Any], finished: Callable[[Any, dict[str, Any]], None],
              prog: ReadProgress) -> dict[int, dict[str, Any]]:
        from ..io.pool import _load_spilled, _task_size, map_spilled

        settings = self.settings
        ray = self._ray()
        release_actors(ray)   # actors kept from an earlier run hold the CPUs these tasks need
        root = cache_root(self.cache_dir)
        folder = fs.join(root, "_pool")    # a URL: the workers PUT, every reader downloads
        fs.makedirs(folder)
        copies = spill_copies(root)
        if copies:
            _prune_copies(copies)
        sigs = read_signals(self.signals, root, settings) if self.signals else []
        if sigs:
            progress.debug(f"read: computing {', '.join(s.name for s in sigs)} in the reading tasks",
                           stage="read", signals=[s.name for s in sigs])
        prog.begin(ray, tasks, sigs)
        remote = ray.remote(_read_task).options(num_cpus=1, max_retries=MAX_ATTEMPTS - 1)
        sig_ref = ray.put(sigs)
        done: dict[int, dict[str, Any]] = {}
        pending: dict[Any, int] = {}

        def got(i: int, res: dict[str, Any]) -> None:
            scored = res.pop("scored", [])
            self.scored.extend(scored)
            if "table" not in res:            # read now: map its Arrow file (a reused reading is mapped)
                res["pool_file"] = res["table_path"]
                res = _load_spilled(res, copies)
            done[i] = res
            prog.finish(i, res, scored)
            finished(tasks[i], res)

        try:
            names = set(fs.listdir(folder))
        except FileNotFoundError:
            names = set()
        reused = 0
        for i in sorted(range(len(tasks)), key=lambda i: -_task_size(tasks[i])):   # largest first: balance
            t = tasks[i]
            path = fs.join(folder, pool_file_key(t) + ".arrow")
            earlier = _reuse_reading(t, path, names) if t.records is None else None
            if earlier is not None:
                try:
                    table = map_spilled(path, copies)
                except (OSError, pa.ArrowInvalid) as e:   # a damaged or vanished file: read it again
                    progress.debug(f"read: not reusing {path}: {e}")
                    table = None
                if table is not None and table.num_rows == earlier.pop("rows"):
                    earlier.update(table=table, pool_file=earlier.pop("table_path"))
                    got(i, earlier)
                    reused += 1
                    continue
            if t.records is not None:            # an in-memory input: only this process has it
                got(i, _read_task(t, path, root, sigs))
            else:
                pending[remote.remote(t, path, root, sig_ref, prog.start(i))] = i
        if reused:
            progress.debug(f"read: {reused:,} of {len(tasks):,} file task(s) reused from {folder} (same file "
                           f"versions and read options as an earlier run)", stage="read", reused=reused)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            prog.poll()
            for ref in ready:
                i = pending.pop(ref)
                got(i, _task_result(ray, ref, f"reading {tasks[i].path} on ray"))
        return done


def ray_task_reader(cache_dir: str, settings: RaySettings | None = None,
                    signals: Sequence[Signal] = ()) -> RayTaskReader:
    """The Ray engine's file-task runner for ``read_pool`` (``RayTaskReader``)."""
    return RayTaskReader(cache_dir, settings, signals)
