"""An in-memory Kubernetes API server that speaks real HTTP, for tests.

The official `kubernetes` client talks to it through an ordinary kubeconfig. It keeps objects in memory, runs a
tiny Deployment/LeaderWorkerSet "controller" and "scheduler" so pods appear, get GPUs on nodes and become Ready,
and forwards the pod proxy to upstream HTTP servers a test chooses. Tests steer it with Python methods:
`fail_next`, `delay`, `set_pod_failure`, `mark_running`, `mark_ready`, `set_rbac`, `set_tokens`, ...

The server is built in layers, each a class in its own module and each adding to the one below:
`store.ObjectStore` (objects and resource versions) → `pods.PodSimulation` (controllers, scheduler, kubelet) →
`rest.RestApi` (the REST verbs, merge patch, server-side apply) → `server.KubeApiServer` (options, test controls,
the request gate). `handler` is the HTTP request handler and pod proxy; `runner.run_kube_api` serves it all on an
ephemeral port. One lock guards the whole state: requests are answered one at a time, as they are small.
"""

from .certificates import make_certificate
from .resources import (
    DEFAULT_TOKEN,
    FAILURE_REASONS,
    GPU,
    LWS_CRD,
    LWS_GROUP,
    LWS_GROUP_INDEX,
    LWS_NAME,
    LWS_WORKER_INDEX,
    RESOURCES,
    ApiError,
    pod_gpus,
    status_body,
)
from .runner import run_kube_api
from .selectors import field_match, label_match
from .server import Attributes, KubeApiServer, LoggedRequest, request_attributes

__all__ = [
    "DEFAULT_TOKEN",
    "FAILURE_REASONS",
    "GPU",
    "LWS_CRD",
    "LWS_GROUP",
    "LWS_GROUP_INDEX",
    "LWS_NAME",
    "LWS_WORKER_INDEX",
    "RESOURCES",
    "ApiError",
    "Attributes",
    "KubeApiServer",
    "LoggedRequest",
    "field_match",
    "label_match",
    "make_certificate",
    "pod_gpus",
    "request_attributes",
    "run_kube_api",
    "status_body",
]
