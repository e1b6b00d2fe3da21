"""Pod simulation: a tiny Deployment/LeaderWorkerSet controller, a GPU scheduler and a kubelet.

Pods are created by the workload controllers, placed on nodes with enough free GPUs that match their nodeSelector
and tolerations, and start their containers and turn Ready after `start_after`/`ready_after` seconds or when a test
marks them. `_tick()` advances the whole simulated cluster; it runs before and after every request, so the state is
a function of the clock and the test's marks, never of a background thread. A pod is re-rendered only when what it
depends on changed (`_world` is bumped whenever nodes, failures or marks change).
"""

from __future__ import annotations

import copy
import itertools
import time
import uuid
from dataclasses import dataclass, field

from .resources import (
    GPU,
    LWS_GROUP,
    LWS_GROUP_INDEX,
    LWS_NAME,
    LWS_WORKER_INDEX,
    now,
    pod_gpus,
    quantity,
    template_hash,
)
from .store import ObjectStore


@dataclass
class PodSim:
    namespace: str
    name: str
    owner_kind: str | None
    owner_name: str | None
    created: float
    template_hash: str | None = None
    group: int | None = None
    forced: str | None = None  # "running" | "ready" from mark_running/mark_ready
    terminating_since: float | None = None
    external: bool = False  # added with add_pod: status is set by the test, not simulated
    unschedulable: str | None = None
    rendered: tuple | None = None  # what the last rendering was based on; unchanged inputs skip re-rendering
    events_sent: set = field(default_factory=set)


class PodSimulation(ObjectStore):
    """The store plus the simulated controllers, scheduler and kubelet."""

    def __init__(self, *, start_after: float | None, ready_after: float | None, terminate_after: float) -> None:
        super().__init__()
        self.start_after = start_after
        self.ready_after = ready_after
        self.terminate_after = terminate_after
        self._pods: dict[tuple[str, str], PodSim] = {}
        # (namespace, kind, workload) -> pod keys, and the workloads whose status needs recomputing.
        self._by_owner: dict[tuple[str, str, str], set[tuple[str, str]]] = {}
        self._dirty: set[tuple[str, str, str]] = set()
        self._world = 0  # bumped whenever something a pod's rendering depends on changes (nodes, failures, marks)
        self._failures: dict[tuple[str, str], tuple[str, str | None]] = {}
        self._ips = itertools.count(2)
        self.lws_controller_running = True  # without the controller, a LeaderWorkerSet never gets a pod

    def _owner_of(self, pod: dict) -> str | None:
        sim = self._pods.get((pod["metadata"].get("namespace", ""), pod["metadata"]["name"]))
        return sim.owner_name if sim else None

    def _force(self, namespace: str, name: str, state: str, n: int | None) -> int:
        with self.lock:
            self._tick()
            sims = sorted(
                (
                    s
                    for kind in ("Deployment", "LeaderWorkerSet")
                    for s in self._owned(namespace, kind, name)
                    if s.terminating_since is None
                ),
                key=lambda s: (s.created, s.name),
            )
            rank = {"running": 1, "ready": 2}
            changed = 0
            if any(s.group is not None for s in sims):
                groups: dict[int, list[PodSim]] = {}
                for sim in sims:
                    groups.setdefault(sim.group, []).append(sim)
                units = [groups[g] for g in sorted(groups)]
            else:
                units = [[s] for s in sims]
            for unit in units:
                if n is not None and changed >= n:
                    break
                if all(rank.get(s.forced or "", 0) >= rank[state] for s in unit):
                    continue
                for sim in unit:
                    sim.forced = state
                changed += 1
            self._world += 1
            self._tick()
            return changed

    # ----------------------------------------------------------------------------------- controller/scheduler

    def _node_free(self) -> dict[str, int]:
        free = {}
        for (_, name), node in self._store[("", "v1", "nodes")].items():
            free[name] = quantity(node["status"]["allocatable"].get(GPU))
        for pod in self._store[("", "v1", "pods")].values():
            node_name = pod["spec"].get("nodeName")
            if node_name in free and pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
                free[node_name] -= pod_gpus(pod["spec"])
        return free

    def _schedule(self, sim: PodSim, pod: dict, free: dict[str, int]) -> str | None:
        """Place a pod on a node with enough free GPUs that matches its nodeSelector; None with the reason recorded."""
        nodes = self._store[("", "v1", "nodes")]
        wanted = pod_gpus(pod["spec"])
        selector = pod["spec"].get("nodeSelector") or {}
        tolerated = {t.get("key") for t in pod["spec"].get("tolerations") or []}
        insufficient = mismatch = tainted = not_ready = 0
        for (_, name), node in sorted(nodes.items()):
            labels = node["metadata"].get("labels") or {}
            if node["spec"].get("unschedulable") or not any(
                c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"]
            ):
                not_ready += 1
            elif any(labels.get(k) != v for k, v in selector.items()):
                mismatch += 1
            elif any(
                t.get("effect") in ("NoSchedule", "NoExecute") and t.get("key") not in tolerated
                for t in node["spec"].get("taints") or []
            ):
                tainted += 1
            elif free[name] < wanted:
                insufficient += 1
            else:
                free[name] -= wanted
                return name
        parts = []
        if insufficient:
            parts.append(f"{insufficient} Insufficient {GPU}")
        if mismatch:
            parts.append(f"{mismatch} node(s) didn't match Pod's node affinity/selector")
        if tainted:
            parts.append(f"{tainted} node(s) had untolerated taint")
        if not_ready:
            parts.append(f"{not_ready} node(s) were unschedulable or not ready")
        sim.unschedulable = (
            f"0/{len(nodes)} nodes are available: {', '.join(parts) or 'no nodes'}. "
            "preemption: 0/{0} nodes are available: {0} No preemption victims found for incoming pod.".format(
                len(nodes)
            )
        )
        return None

    def _new_pod(
        self,
        namespace: str,
        name: str,
        owner_kind: str,
        owner_name: str,
        template: dict,
        thash: str,
        extra_labels: dict,
        group: int | None,
    ) -> None:
        meta = template.get("metadata") or {}
        labels = {**(meta.get("labels") or {}), **extra_labels}
        owner = (
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": f"{owner_name}-{thash}",
                "controller": True,
                "uid": str(uuid.uuid4()),
            }
            if owner_kind == "Deployment"
            else {
                "apiVersion": f"{LWS_GROUP}/v1",
                "kind": "LeaderWorkerSet",
                "name": owner_name,
                "controller": True,
                "uid": str(uuid.uuid4()),
            }
        )
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": labels,
                "annotations": dict(meta.get("annotations") or {}),
                "ownerReferences": [owner],
            },
            "spec": copy.deepcopy(template.get("spec") or {}),
            "status": {"phase": "Pending"},
        }
        self._pods[(namespace, name)] = PodSim(namespace, name, owner_kind, owner_name, time.monotonic(), thash, group)
        self._by_owner.setdefault((namespace, owner_kind, owner_name), set()).add((namespace, name))
        self._dirty.add((namespace, owner_kind, owner_name))
        self._put(("", "v1", "pods"), pod)

    def _terminate(self, sim: PodSim) -> None:
        if sim.terminating_since is None:
            sim.terminating_since = time.monotonic()
            pod = self._store[("", "v1", "pods")].get((sim.namespace, sim.name))
            if pod:
                pod["metadata"]["deletionTimestamp"] = now()
        self._world += 1
        if sim.owner_name:
            self._dirty.add((sim.namespace, sim.owner_kind, sim.owner_name))
        if self.terminate_after <= 0:
            self._drop_pod((sim.namespace, sim.name))

    def _drop_pod(self, key: tuple[str, str]) -> None:
        self._store[("", "v1", "pods")].pop(key, None)
        sim = self._pods.pop(key, None)
        if sim and sim.owner_name:
            owner = (sim.namespace, sim.owner_kind, sim.owner_name)
            self._by_owner.get(owner, set()).discard(key)
            self._dirty.add(owner)
        self._world += 1

    def _owned(self, namespace: str, kind: str, name: str) -> list[PodSim]:
        keys = self._by_owner.get((namespace, kind, name), set())
        return [self._pods[k] for k in keys if k in self._pods]

    def _reconcile_deployment(self, dep: dict) -> None:
        namespace, name = dep["metadata"]["namespace"], dep["metadata"]["name"]
        thash = template_hash(dep["spec"].get("template"))
        mine = [s for s in self._owned(namespace, "Deployment", name) if s.terminating_since is None]
        for sim in mine:
            if sim.template_hash != thash:
                self._terminate(sim)
        current = sorted((s for s in mine if s.template_hash == thash), key=lambda s: (s.created, s.name))
        want = dep["spec"].get("replicas", 1)
        for sim in current[want:]:
            self._terminate(sim)
        for _ in range(want - len(current)):
            suffix = uuid.uuid4().hex[:5]
            self._new_pod(
                namespace,
                f"{name}-{thash[:9]}-{suffix}",
                "Deployment",
                name,
                dep["spec"]["template"],
                thash,
                {"pod-template-hash": thash[:9]},
                None,
            )

    def _reconcile_lws(self, lws: dict) -> None:
        if not self.lws_controller_running:
            return
        namespace, name = lws["metadata"]["namespace"], lws["metadata"]["name"]
        lwt = lws["spec"]["leaderWorkerTemplate"]
        thash = template_hash(lwt)
        size = lwt.get("size", 1)
        want = lws["spec"].get("replicas", 1)
        mine = [s for s in self._owned(namespace, "LeaderWorkerSet", name) if s.terminating_since is None]
        for sim in mine:
            if sim.template_hash != thash or sim.group >= want:
                self._terminate(sim)
        existing = {s.group for s in mine if s.template_hash == thash and s.group < want}
        for group in range(want):
            if group in existing:
                continue
            for index in range(size):
                template = (
                    lwt.get("leaderTemplate") if index == 0 and lwt.get("leaderTemplate") else lwt["workerTemplate"]
                )
                pod_name = f"{name}-{group}" if index == 0 else f"{name}-{group}-{index}"
                labels = {LWS_NAME: name, LWS_GROUP_INDEX: str(group), LWS_WORKER_INDEX: str(index)}
                self._new_pod(namespace, pod_name, "LeaderWorkerSet", name, template, thash, labels, group)

    def _event(self, sim: PodSim, pod: dict, reason: str, message: str, component: str) -> None:
        if reason in sim.events_sent:
            return
        sim.events_sent.add(reason)
        self._put(
            ("", "v1", "events"),
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": f"{sim.name}.{uuid.uuid4().hex[:16]}", "namespace": sim.namespace},
                "involvedObject": {
                    "kind": "Pod",
                    "name": sim.name,
                    "namespace": sim.namespace,
                    "uid": pod["metadata"]["uid"],
                },
                "reason": reason,
                "message": message,
                "type": "Warning",
                "count": 1,
                "firstTimestamp": now(),
                "lastTimestamp": now(),
                "source": {"component": component},
            },
        )

    def _failure_of(self, sim: PodSim) -> tuple[str, str | None] | None:
        return self._failures.get((sim.namespace, sim.owner_name or "")) or self._failures.get(
            (sim.namespace, sim.name)
        )

    def _state_of(self, sim: PodSim, now: float) -> str:
        age = now - sim.created
        state = sim.forced or ""
        if not state or state == "running":
            if self.ready_after is not None and age >= self.ready_after:
                state = "ready"
            elif not state and self.start_after is not None and age >= self.start_after:
                state = "running"
        return state

    def _render_pod(self, sim: PodSim, pod: dict, state: str, free: list) -> None:
        spec = pod["spec"]
        containers = spec.get("containers") or [{"name": "main", "image": ""}]
        first = containers[0]
        failure = self._failure_of(sim)
        status = {"phase": "Pending", "qosClass": "Guaranteed"}
        if failure and failure[0] == "Unschedulable":
            spec.pop("nodeName", None)
        elif not spec.get("nodeName"):
            if free[0] is None:
                free[0] = self._node_free()
            node = self._schedule(sim, pod, free[0])
            if node:
                spec["nodeName"] = node
                sim.unschedulable = None
        if not spec.get("nodeName"):
            message = (failure[1] if failure and failure[1] else None) or sim.unschedulable or "0/0 nodes are available"
            status["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                    "lastTransitionTime": now(),
                }
            ]
            self._event(sim, pod, "FailedScheduling", message, "default-scheduler")
            pod["status"] = status
            return
        if "podIP" not in (pod.get("status") or {}):
            serial = next(self._ips)
            ip = f"10.244.{serial // 250}.{serial % 250 + 2}"
        else:
            ip = pod["status"]["podIP"]
        status.update(
            {
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "hostIP": "192.168.0.10",
                "startTime": pod["metadata"]["creationTimestamp"],
            }
        )
        ready = False
        restarts = 0
        container_state: dict = {"waiting": {"reason": "ContainerCreating"}}
        last_state: dict = {}
        if failure:
            reason, message = failure
            if reason in ("ImagePullBackOff", "ErrImagePull"):
                text = message or f'Back-off pulling image "{first.get("image")}"'
                container_state = {"waiting": {"reason": reason, "message": text}}
                self._event(
                    sim, pod, "Failed", message or f'Failed to pull image "{first.get("image")}": not found', "kubelet"
                )
            else:
                restarts = 3
                status["phase"] = "Running"
                exit_code, term_reason = (137, "OOMKilled") if reason == "OOMKilled" else (1, "Error")
                terminated = {"exitCode": exit_code, "reason": term_reason, "startedAt": now(), "finishedAt": now()}
                if message:
                    terminated["message"] = message
                last_state = {"terminated": terminated}
                container_state = {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off 40s restarting failed container={first['name']} pod={sim.name}_{sim.namespace}",  # noqa: E501
                    }
                }
                self._event(
                    sim,
                    pod,
                    "BackOff",
                    f"Back-off restarting failed container {first['name']} in pod {sim.name}_{sim.namespace}",
                    "kubelet",
                )
        elif state in ("running", "ready"):
            status["phase"] = "Running"
            container_state = {"running": {"startedAt": now()}}
            ready = state == "ready"
        condition = "True" if ready else "False"
        status["conditions"] = [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": condition, **({} if ready else {"reason": "ContainersNotReady"})},
            {"type": "Ready", "status": condition, **({} if ready else {"reason": "ContainersNotReady"})},
        ]
        status["containerStatuses"] = [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "ready": ready,
                "started": "running" in container_state,
                "restartCount": restarts,
                "state": container_state,
                "lastState": last_state,
            }
            for c in containers
        ]
        pod["status"] = status

    def _tick(self) -> None:
        """Advance the simulated cluster: terminate, schedule, start and ready pods, refresh workload status."""
        now = time.monotonic()
        pods = self._store[("", "v1", "pods")]
        free: list = [None]  # GPU headroom per node, computed only if some pod needs scheduling
        for key, sim in sorted(self._pods.items(), key=lambda item: (item[1].created, item[0])):
            pod = pods.get(key)
            if pod is None:
                self._drop_pod(key)
                continue
            if sim.terminating_since is not None:
                if now - sim.terminating_since >= self.terminate_after:
                    self._drop_pod(key)
                continue
            if sim.external:
                continue
            state = self._state_of(sim, now)
            inputs = (
                self._world if not pod["spec"].get("nodeName") or self._failure_of(sim) else None,
                state,
                self._failure_of(sim),
            )
            if sim.rendered == inputs:
                continue
            self._render_pod(sim, pod, state, free)
            sim.rendered = inputs
            if sim.owner_name:
                self._dirty.add((sim.namespace, sim.owner_kind, sim.owner_name))
        dirty, self._dirty = self._dirty, set()
        for namespace, kind, name in dirty:
            owned = [
                (s, pods[(s.namespace, s.name)])
                for s in self._owned(namespace, kind, name)
                if s.terminating_since is None and (s.namespace, s.name) in pods
            ]
            if kind == "Deployment":
                dep = self._store[("apps", "v1", "deployments")].get((namespace, name))
                if dep:
                    self._deployment_status(dep, owned)
            else:
                lws = self._store[(LWS_GROUP, "v1", "leaderworkersets")].get((namespace, name))
                if lws:
                    self._lws_status(lws, owned)

    def _is_ready(self, pod: dict) -> bool:
        return any(
            c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions") or []
        )

    def _deployment_status(self, dep: dict, pods: list[tuple[PodSim, dict]]) -> None:
        thash = template_hash(dep["spec"].get("template"))
        ready = sum(1 for _, p in pods if self._is_ready(p))
        updated = sum(1 for s, _ in pods if s.template_hash == thash)
        want = dep["spec"].get("replicas", 1)
        status = {
            "observedGeneration": dep["metadata"].get("generation", 1),
            "replicas": len(pods),
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "availableReplicas": ready,
            "unavailableReplicas": max(want - ready, 0),
        }
        status = {k: v for k, v in status.items() if v}
        status["conditions"] = [
            {
                "type": "Available",
                "status": "True" if ready >= want else "False",
                "reason": "MinimumReplicasAvailable" if ready >= want else "MinimumReplicasUnavailable",
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable" if ready >= want else "ReplicaSetUpdated",
            },
        ]
        if status != dep.get("status"):
            dep["status"] = status

    def _lws_status(self, lws: dict, pods: list[tuple[PodSim, dict]]) -> None:
        name = lws["metadata"]["name"]
        thash = template_hash(lws["spec"]["leaderWorkerTemplate"])
        groups: dict[int, list] = {}
        for sim, pod in pods:
            groups.setdefault(sim.group, []).append((sim, pod))
        size = lws["spec"]["leaderWorkerTemplate"].get("size", 1)
        ready = sum(
            1 for members in groups.values() if len(members) == size and all(self._is_ready(p) for _, p in members)
        )
        updated = sum(1 for members in groups.values() if all(s.template_hash == thash for s, _ in members))
        want = lws["spec"].get("replicas", 1)
        status = {
            "replicas": len(groups),
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "hpaPodSelector": f"{LWS_NAME}={name},{LWS_WORKER_INDEX}=0",
        }
        status = {k: v for k, v in status.items() if v}
        status["conditions"] = [{"type": "Available", "status": "True" if ready >= want else "False"}]
        lws["status"] = status
