"""``ex4d prepare`` on Ray: one actor per worker, each video a task; a crashed actor is restarted and its video retried.

The driver (:func:`ex4d.train.prepare.prepare_dataset`) hands in the worker
class and its constructor arguments and receives each video's records through
``consume`` as soon as they are ready, so the manifest is written while the
batch runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .manifest import video_record

__all__ = ["run_on_ray"]


def run_on_ray(jobs: list[dict], worker_cls: type, payload: tuple, address: str | None, num_workers: int | None,
               gpus_per_worker: float, retries: int, consume: Callable[[list[dict]], None]) -> None:
    """Run ``worker_cls(*payload).process(job)`` for every job on Ray actors, calling ``consume(records)`` per job.

    Args:
        jobs: ``{"video", "video_id", ...}`` per video.
        address: Ray cluster (``auto``: the running one); None starts a local instance (and stops it after).
        num_workers: actors (default: GPUs / ``gpus_per_worker``, or CPUs // 2).
        retries: actor restarts and task retries before a video counts as failed.
    """
    try:
        import ray
    except ImportError as e:
        raise ImportError("ex4d prepare runs on Ray by default and Ray is not installed: pip install 'ray' "
                          "(or pass --executor local to run in this process)") from e
    started = False
    if not ray.is_initialized():
        kwargs = dict(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        if address is None:
            repo = str(Path(__file__).resolve().parents[2])
            kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}}
        ray.init(**kwargs)
        started = True
    try:
        if num_workers is None:
            res = ray.cluster_resources()
            if gpus_per_worker > 0:
                num_workers = max(1, int(res.get("GPU", 0) // gpus_per_worker))
            else:
                num_workers = max(1, int(res.get("CPU", 2) // 2))
        actor_cls = ray.remote(worker_cls).options(num_cpus=1, num_gpus=gpus_per_worker, max_restarts=retries,
                                                   max_task_retries=retries)
        actors = [actor_cls.remote(*payload) for _ in range(min(num_workers, len(jobs)))]
        queue = list(jobs)
        running = {}
        for actor in actors:
            if queue:
                job = queue.pop(0)
                running[actor.process.remote(job)] = (actor, job)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            ref = ready[0]
            actor, job = running.pop(ref)
            try:
                records = ray.get(ref)
            except ray.exceptions.RayError as e:
                records = [video_record(Path(job["video"]), job["video_id"], "failed",
                                        f"worker failed after {retries} retries: {type(e).__name__}: "
                                        f"{str(e).splitlines()[0][:500]}")]
                actor = actor_cls.remote(*payload)  # the old one may be gone for good
            consume(records)
            if queue:
                job = queue.pop(0)
                running[actor.process.remote(job)] = (actor, job)
    finally:
        if started:
            ray.shutdown()
