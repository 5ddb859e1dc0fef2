"""Measure the sandbox API server: start-up, request latency, watch delivery.

Run: ``python tests/benchmarks/sandbox_apiserver.py``. Prints medians; the baseline in the
same run is ``GET /version`` through the same client (HTTP + client overhead, no store).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable

from kubernetes import client, watch

from vsphere_kale.sandbox.testing import start_sandbox
from vsphere_kale.sandbox.types import ResourceRef


def median_ms(fn: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    starts = []
    for _ in range(20):
        started = time.perf_counter()
        running = start_sandbox()
        starts.append((time.perf_counter() - started) * 1000)
        running.stop()
    print(f"start_sandbox(): median {statistics.median(starts):.1f} ms (20 runs)")

    with start_sandbox() as running:
        api = running.api_client()
        core = client.CoreV1Api(api)
        version = client.VersionApi(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="bench")))
        baseline = median_ms(version.get_code, 200)
        print(f"baseline GET /version: {baseline:.2f} ms")
        counter = iter(range(10**6))

        def create() -> None:
            core.create_namespaced_config_map(
                "bench",
                client.V1ConfigMap(
                    metadata=client.V1ObjectMeta(name=f"c{next(counter)}"), data={"k": "v"}
                ),
            )

        results = {
            "POST configmap": median_ms(create, 200),
            "GET configmap": median_ms(lambda: core.read_namespaced_config_map("c1", "bench"), 200),
            "PATCH configmap (strategic)": median_ms(
                lambda: core.patch_namespaced_config_map("c1", "bench", {"data": {"x": "y"}}), 200
            ),
            "LIST 200 configmaps": median_ms(lambda: core.list_namespaced_config_map("bench"), 50),
        }
        for name, value in results.items():
            print(f"{name}: {value:.2f} ms ({value / baseline:.1f}x baseline)")

        n = 500
        rv = core.list_namespaced_config_map("bench").metadata.resource_version
        received: list[float] = []
        done = threading.Event()

        def watcher() -> None:
            w = watch.Watch()
            for _ in w.stream(
                core.list_namespaced_config_map, "bench", resource_version=rv, timeout_seconds=60
            ):
                received.append(time.perf_counter())
                if len(received) >= n:
                    w.stop()
            done.set()

        thread = threading.Thread(target=watcher)
        thread.start()
        time.sleep(0.2)
        store = running.sandbox.store
        cm_type = store.storage_type(ResourceRef("", "configmaps"))
        started = time.perf_counter()
        for i in range(n):
            store.create(cm_type, "bench", {"metadata": {"name": f"w{i}"}})
        done.wait(60)
        elapsed = received[-1] - started if received else float("nan")
        print(
            f"watch: {len(received)}/{n} events from in-process writes delivered in "
            f"{elapsed * 1000:.0f} ms ({len(received) / elapsed:.0f} events/s)"
        )
        thread.join(5)


if __name__ == "__main__":
    main()
