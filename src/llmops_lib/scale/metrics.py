"""A Ray cluster's engine metrics under the common names: every node's endpoint scraped and summed.

On a Ray cluster each node exports the metrics of the processes it runs on its own endpoint
(`LocalRayCluster.metrics_urls()`), so a replica's counters are on the node that runs it: a cluster's
figure is the sum over nodes, as Prometheus `sum()` over the scrape targets would give. vLLM under
Ray Serve LLM reports there as `ray_vllm_*` (not as `vllm:*` on the app's `/metrics`), Serve itself as
`ray_serve_*`; `engines.metrics.COMMON_NAMES` maps both. A ratio (`kv_cache_usage_ratio`) is summed
like the rest: divide it by the replicas for their mean.

Explained in: book/chapters/10_scale/beyond_one_machine
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from llmops_lib.engines.metrics import common_samples
from llmops_lib.errors import EngineError


def scrape(urls: Iterable[str], *, timeout_s: float = 10.0) -> dict[str, str]:
    """The exposition text of each metrics URL, by URL.

    Raises:
        EngineError: a node's endpoint did not answer 200 (a node down undercounts the cluster: say so).
    """
    texts = {}
    for url in urls:
        try:
            response = httpx.get(url, timeout=timeout_s)
        except httpx.HTTPError as exc:
            raise EngineError(f"Ray's metrics endpoint {url} did not answer ({exc}): is that node up?") from None
        if response.status_code != 200:
            raise EngineError(f"Ray's metrics endpoint {url} answered {response.status_code}: is that node up?")
        texts[url] = response.text
    return texts


def cluster_samples(texts: Iterable[str]) -> dict[str, float]:
    """The nodes' expositions under the common names, summed over nodes (a name no node reports is absent).

    Raises:
        EngineError: a text is not a Prometheus exposition.
    """
    total: Counter[str] = Counter()
    for text in texts:
        total.update(common_samples(text))
    return dict(total)


def by_label(texts: Iterable[str], name: str, label: str, **match: str) -> dict[str, float]:
    """The samples of series `name` summed by the value of `label`, over all nodes, keeping only samples
    whose labels include `match`: e.g. requests per replica (`ray_serve_deployment_request_counter_total`
    by `replica`, `deployment="LLMServer:default"`). Samples without `label` are left out.

    Raises:
        EngineError: a text is not a Prometheus exposition.
    """
    total: Counter[str] = Counter()
    for text in texts:
        try:
            samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
        except ValueError as exc:
            raise EngineError(f"not a Prometheus text exposition ({exc}): read a Ray node's metrics endpoint") from None
        for sample in samples:
            if sample.name == name and label in sample.labels and match.items() <= sample.labels.items():
                total[sample.labels[label]] += sample.value
    return dict(total)


def cluster_metrics(urls: Iterable[str], *, timeout_s: float = 10.0) -> dict[str, float]:
    """Scrape every node (`cluster.metrics_urls()`) and return the cluster's common-name figures."""
    return cluster_samples(scrape(urls, timeout_s=timeout_s).values())
