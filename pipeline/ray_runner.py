"""The Ray distributor: local Ray by default, a cluster by address; actors hold the pipeline.

Each actor holds one pipelined worker (:mod:`pipeline.stages`, annotators loaded once)
and builds whole shards (the unit of work and of retry). A shard whose actor dies
(crash, OOM kill, node removed) is queued again, up to ``max_retries`` times, on a
surviving or replacement actor. Actors ask Ray for ``cpus_per_worker`` CPUs (the
pipeline's CPU threads) and ``gpus_per_worker`` GPUs (fractions share a GPU).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.engine import WorkerSetup
from pipeline.units import Unit

#: environment variables forwarded to workers on every node
FORWARDED_ENV = ("HINTSET_WEIGHTS_DIR", "HINTSET_OFFLINE", "HF_HUB_OFFLINE", "HF_HOME",
                 "HINTSET_STORAGE_OPTIONS", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                 "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE",
                 "GOOGLE_APPLICATION_CREDENTIALS")  # fmt: skip


@dataclass
class RunOptions:
    """Everything an actor needs to build shards; plain data sent to every worker."""

    root: str
    setup: WorkerSetup
    keep_original: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0


class ShardActorImpl:
    """Holds one pipelined worker (annotators loaded once) and builds shards with it."""

    def __init__(self, options: RunOptions, progress: Any) -> None:
        # nothing slow here: an actor that answers __ray_ready__ has been placed (see start_actors)
        self.options, self.progress, self.error = options, progress, ""
        self.pipeline: Any = None

    def ready(self) -> dict[str, Any]:
        """Load the pipeline (annotators, models) once; setup error (empty if fine), annotator
        identities and the node this actor runs on."""
        import ray

        if self.pipeline is None and not self.error:
            try:
                from pipeline.engine import make_pipeline

                self.pipeline = make_pipeline(self.options.setup)
            except Exception as err:  # noqa: BLE001 - reported as one line
                self.error = " ".join(str(err).split()) or type(err).__name__
        infos = [] if self.error else [a.info() for a in self.pipeline.worker.annotators]
        captions = None if self.error else self.pipeline.worker.captions
        return {"error": self.error, "annotators": infos,
                "captioner": captions.info() if captions else None,
                "node": ray.get_runtime_context().get_node_id()}  # fmt: skip

    def build(self, unit: Unit) -> dict[str, Any]:
        """Build one shard (a planned unit) through the pipeline; its stats plus node, pid and peak memory."""
        import resource

        import ray

        from pipeline.engine import ShardJob, run_job

        report = ThrottledProgress(self.progress)
        job = ShardJob(unit, self.options.root, keep_original=self.options.keep_original)
        stats = run_job(self.pipeline, job, on_sample=lambda _: report.add(1))
        report.flush()
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {**stats, "node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "peak_rss_mb": round(peak_mb, 1)}  # fmt: skip


class ThrottledProgress:
    """Batches a worker's progress into at most one actor call per ``interval`` seconds.

    One call per batch of 8 samples kept the progress actor at about 2% of a core.
    """

    def __init__(self, progress: Any, interval: float = 0.5) -> None:
        self.progress, self.interval = progress, interval
        self.unsent, self.last = 0, time.monotonic()

    def add(self, n: int) -> None:
        self.unsent += n
        if time.monotonic() - self.last >= self.interval:
            self.flush()

    def flush(self) -> None:
        if self.unsent:
            self.progress.add.remote(self.unsent)
        self.unsent, self.last = 0, time.monotonic()


class ProgressImpl:
    """A counter the actors bump per batch, so the driver's bar moves within shards."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, n: int) -> None:
        self.count += n

    def get(self) -> int:
        return self.count


def connect(address: str | None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address`` (``auto``, ``host:6379``, ``ray://host:10001``) or start
    a local Ray. An address nothing answers at fails within seconds (BuildFailed, one line)."""
    import ray

    if ray.is_initialized():
        return
    check_address(address)
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    if os.environ.get("PYTHONPATH") and not address:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    runtime_env = {"env_vars": env} if env else None
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "ERROR",
                              "log_to_driver": False, "runtime_env": runtime_env}  # fmt: skip
    try:
        if address:
            use_token_if_required(address)
            if address.startswith("ray://"):
                kwargs.pop("include_dashboard")  # not a Ray Client option
                init_client(address, kwargs)
            else:
                ray.init(address=address, **kwargs)
        else:
            ray.init(address="local", num_cpus=num_cpus, **kwargs)  # never join a stray cluster
    except Exception as err:  # noqa: BLE001 - Ray's errors are long; the user gets one line
        raise BuildFailed(
            f"cannot start or join Ray at {address or 'local'}: {_one_line(err)}"
        ) from None


def init_client(address: str, kwargs: dict[str, Any], attempts: int = 3) -> None:
    """``ray.init("ray://...")``, retried when the server aborts the connection: its proxier
    starts a server process per client and aborts if that process is not up in time
    (seen as ``ConnectionAbortedError: psutil.ZombieProcess`` on a loaded head)."""
    import ray

    for attempt in range(attempts):
        try:
            ray.init(address=address, **kwargs)
            return
        except ConnectionAbortedError:
            if attempt == attempts - 1:
                raise
            ray.shutdown()  # drop any half-made client context before trying again
            time.sleep(2.0 * (attempt + 1))


def use_token_if_required(address: str) -> None:
    """Turn on Ray token authentication for this driver when the cluster asks for it.

    Ray 2.5x heads started with ``ray start`` require the token (``~/.ray/auth_token``),
    but a driver joining by address sends it only with RAY_AUTH_MODE=token; a driver in
    token mode, in turn, cannot run actors on a cluster without authentication. So ask
    the cluster's GCS first (an unauthenticated call fails at once when a token is needed).
    Ray Client (``ray://``) works with the token in both cases.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    if not address.startswith("ray://"):
        try:
            from ray._private.services import canonicalize_bootstrap_address_or_die
            from ray._raylet import GcsClient

            gcs = GcsClient(address=canonicalize_bootstrap_address_or_die(address))
            gcs.internal_kv_keys(b"", namespace=None, timeout=3)
            return
        except Exception as err:  # noqa: BLE001 - only an authentication refusal matters
            if "auth" not in type(err).__name__.lower():
                return
    use_saved_token()


def use_saved_token() -> None:
    """Send the saved Ray auth token (``~/.ray/auth_token``) from this driver."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # Ray without token authentication
        return
    logging.getLogger(maybe_enable_token_auth_if_token_available.__module__).setLevel("ERROR")
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


#: how long to wait for a TCP answer from a cluster address before giving up
CONNECT_TIMEOUT = 5.0


def check_address(address: str | None, timeout: float = CONNECT_TIMEOUT) -> None:
    """Raise BuildFailed unless ``address`` is empty, ``auto``/``local`` or a host:port that answers.

    Ray itself retries an unreachable address for minutes; a TCP probe answers in seconds.
    """
    import socket

    if not address or address in ("auto", "local"):
        return
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BuildFailed(f"bad --address {address!r}: expected auto, HOST:PORT (the head's GCS, "
                          "e.g. 10.0.0.5:6379) or ray://HOST:PORT (Ray Client, port 10001)")  # fmt: skip
    if address.startswith("ray://"):
        try:
            import grpc  # noqa: F401 - what Ray Client needs beyond plain ray
        except ImportError:
            raise BuildFailed("ray:// addresses need the Ray Client: pip install 'ray[client]'") from None  # fmt: skip
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise BuildFailed(f"cannot reach Ray at {address}: {reason} (is a Ray head running "
                          "there? start one with `ray start --head`)") from None  # fmt: skip


def local_gpus() -> int | None:
    """GPUs Ray would find on this machine (CUDA_VISIBLE_DEVICES and the NVIDIA driver);
    None when this Ray cannot tell (then nothing is refused)."""
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource

        manager = get_accelerator_manager_for_resource("GPU")
        visible = manager.get_current_process_visible_accelerator_ids()
        count = manager.get_current_node_num_accelerators()
        return min(count, len(visible)) if visible is not None else count
    except Exception:  # noqa: BLE001 - a Ray without this helper: no GPU check
        return None


def check_resources(
    address: str | None, gpus_per_worker: float, cpus_per_worker: float = 1
) -> None:
    """Raise BuildFailed when no node can give one worker what it asks for (else Ray waits forever).

    For a local Ray this runs before Ray starts; for a cluster it joins it first (a cluster
    that autoscales may add CPUs later: there only the start timeout of run_shards applies).
    """
    if not address:
        from ray._private.utils import get_num_cpus

        if cpus_per_worker > get_num_cpus():
            raise BuildFailed(f"--cpus-per-worker {cpus_per_worker:g} asks for more CPUs than this "
                              f"machine has ({get_num_cpus()})")  # fmt: skip
    if gpus_per_worker < 0:
        raise BuildFailed(f"--gpus-per-worker must be >= 0 (got {gpus_per_worker:g})")
    if gpus_per_worker > 1 and gpus_per_worker != int(gpus_per_worker):
        raise BuildFailed(f"--gpus-per-worker above 1 must be a whole number (got {gpus_per_worker:g})")  # fmt: skip
    if not gpus_per_worker:
        return
    if not address:
        found = local_gpus()
        if found is None:
            return
        most = float(found)
    else:
        import ray

        connect(address)
        most = max((n["Resources"].get("GPU", 0.0) for n in ray.nodes() if n["Alive"]), default=0.0)
    if most < gpus_per_worker:
        where = "this machine" if not address else f"the largest node of {address}"
        raise BuildFailed(f"--gpus-per-worker {gpus_per_worker:g} asks for more GPUs than "
                          f"{where} has ({most:g}); use 0 to run on CPUs")  # fmt: skip


class BuildFailed(RuntimeError):
    """Workers could not start, or shards failed after all retries (one-line message)."""


#: seconds to wait for Ray to place the workers asked for (a cluster may autoscale meanwhile)
START_TIMEOUT = 60.0


def resources_text(options: RunOptions) -> str:
    """What one worker asks for and what the cluster has, e.g. ``3 CPU each; the cluster has
    2 CPU (2 free)``."""
    import ray

    total, free = ray.cluster_resources(), ray.available_resources()
    asked = [("CPU", options.cpus_per_worker), ("GPU", options.gpus_per_worker)]
    each = ", ".join(f"{n:g} {key}" for key, n in asked if n)
    has = ", ".join(f"{total.get(key, 0):g} {key} ({free.get(key, 0):g} free)"
                    for key, n in asked if n)  # fmt: skip
    return f"{each} each; the cluster has {has}"


def capacity(options: RunOptions) -> int:
    """How many workers the alive nodes could hold at once, by their total CPUs and GPUs."""
    import ray

    count = 0
    for node in ray.nodes():
        if node["Alive"]:
            have = node["Resources"]
            fits = (
                [have.get("CPU", 0) // options.cpus_per_worker] if options.cpus_per_worker else []
            )
            if options.gpus_per_worker:
                fits.append(have.get("GPU", 0) // options.gpus_per_worker)
            count += int(min(fits)) if fits else 1
    return count


#: workers that fit the cluster get this many times --start-timeout to come up (a loaded
#: machine can take that long to start Python worker processes)
START_GRACE = 5


def start_actors(actor_cls: Any, count: int, args: tuple, timeout: float, fit: int) -> list[Any]:
    """Start ``count`` actors; return those up within ``timeout`` seconds (the first ``fit``,
    which the cluster's resources can hold, get START_GRACE times longer). The others are
    cancelled: Ray would otherwise wait for resources forever."""
    import ray

    actors = [actor_cls.remote(*args) for _ in range(count)]
    waiting = {actor.__ray_ready__.remote(): actor for actor in actors}
    need = min(count, fit)
    deadline = time.monotonic() + timeout
    ready: list[Any] = []
    while len(ready) < count:
        limit = deadline if len(ready) >= need else deadline + (START_GRACE - 1) * timeout
        left = limit - time.monotonic()
        if left <= 0:
            break
        done, _ = ray.wait([r for r in waiting if r not in ready], num_returns=1, timeout=left)
        ready += done
    started = [waiting[ref] for ref in ready]
    for actor in actors:
        if all(actor is not s for s in started):
            ray.kill(actor)
    return started


def run_shards(
    shards: list[Unit],
    options: RunOptions,
    *,
    workers: int = 0,
    max_retries: int = 3,
    start_timeout: float = START_TIMEOUT,
    on_shard: Callable[[dict[str, Any]], None] | None = None,
    on_samples: Callable[[int], None] | None = None,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
    on_message: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Build ``shards`` on a pool of actors; return their stats (raise BuildFailed otherwise).

    Workers Ray cannot place within ``start_timeout`` seconds are dropped (said once through
    ``on_message``); when none can start, BuildFailed names what they ask for and what is free.
    """
    import ray

    actor_cls = ray.remote(ShardActorImpl).options(
        num_cpus=options.cpus_per_worker, num_gpus=options.gpus_per_worker,
        max_restarts=0, scheduling_strategy="SPREAD",
    )  # fmt: skip
    progress = ray.remote(ProgressImpl).options(num_cpus=0).remote()
    if not workers:
        key, per = ("GPU", options.gpus_per_worker) if options.gpus_per_worker else ("CPU", options.cpus_per_worker)  # fmt: skip
        workers = max(1, int(ray.cluster_resources().get(key, 1) // per))
    workers = max(1, min(workers, len(shards)))

    def new_actors(count: int, required: bool = True) -> list[Any]:
        """Start up to ``count`` actors in parallel; raise BuildFailed with their setup error,
        or when none could start and ``required``."""
        actors = start_actors(actor_cls, count, (options, progress), start_timeout,
                              capacity(options))  # fmt: skip
        if not actors and not required:
            return []
        if not actors:
            raise BuildFailed(f"no worker could start within {start_timeout:g} s "
                              f"(--start-timeout): {resources_text(options)}")  # fmt: skip
        if len(actors) < count and on_message:
            on_message(f"{len(actors)} of {count} workers started ({resources_text(options)}; "
                       f"--start-timeout {start_timeout:g} s); building on {len(actors)}")  # fmt: skip
        for info in ray.get([actor.ready.remote() for actor in actors]):
            if info["error"]:
                raise BuildFailed(info["error"])
            if on_ready:
                on_ready(info)
        return actors

    pool = new_actors(workers)
    pending = list(shards)
    attempts: dict[int, int] = {}
    running: dict[Any, tuple[Unit, Any]] = {}
    results: list[dict[str, Any]] = []
    seen = 0
    while pending or running:
        idle = [a for a in pool if all(a is not b for _, b in running.values())]
        while idle and pending:
            shard, actor = pending.pop(0), idle.pop(0)
            running[actor.build.remote(shard)] = (shard, actor)
        done, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
        if on_samples:
            count = ray.get(progress.get.remote())
            on_samples(count - seen)
            seen = count
        for ref in done:
            shard, actor = running.pop(ref)
            try:
                stats = ray.get(ref)
            except Exception as err:  # noqa: BLE001 - actor died or the shard raised
                attempts[shard.id] = attempts.get(shard.id, 0) + 1
                if attempts[shard.id] > max_retries:
                    raise BuildFailed(f"shard {shard.name} failed {attempts[shard.id]} times: "
                                      f"{_one_line(err)}") from None  # fmt: skip
                pending.insert(0, shard)
                if isinstance(err, ray.exceptions.RayActorError):
                    pool.remove(actor)
                    if not pool or ray.available_resources().get("CPU", 0) >= options.cpus_per_worker:  # fmt: skip
                        pool += new_actors(1, required=not pool)
                continue
            results.append(stats)
            if on_shard:
                on_shard(stats)
    for actor in pool:
        ray.kill(actor)
    return results


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}"[:300]
