"""A local two-node Ray cluster for the benchmarks, with a tasks module importable on both nodes."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def two_nodes(module: str = "", code: str = "") -> Iterator[str]:
    """Start the cluster (``module``.py holding ``code`` on the nodes' path), connect, yield its address."""
    if module:
        folder = Path(tempfile.mkdtemp())
        (folder / f"{module}.py").write_text(code)
        sys.path.insert(0, str(folder))
        os.environ["PYTHONPATH"] = str(folder)
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, include_dashboard=False, configure_logging=False)
    try:
        yield cluster.address
    finally:
        ray.shutdown()
        cluster.shutdown()
