"""A small offline kustomize renderer: the subset of `kustomize build` that k8s/ uses.

There is no kustomize binary on the machines this project is built on, so the deployment
tests render the overlays with this module. It follows kustomize's semantics for what it
supports and refuses everything else, so an overlay cannot quietly use a feature whose
effect the tests would not see:

- `resources`: YAML files (several documents each) and folders holding a kustomization.yaml
- `namespace`: set on every resource
- `namePrefix`: prepended to every resource's name, then references to renamed resources
  are updated (ConfigMap, Secret, PersistentVolumeClaim and ServiceAccount references in pod
  specs, the HorizontalPodAutoscaler's scaleTargetRef), as kustomize's nameReference does;
  references to objects that are not part of the build keep their names
- `commonLabels`: added to metadata.labels and to selectors and pod templates with the field
  specs of kustomize (api/internal/konfig/builtinpluginconsts/commonlabels.go), including its
  NetworkPolicy behaviour: the labels also go into non-empty podSelectors of from/to peers
- `images`: newName / newTag / digest for containers and initContainers
- `patches`: JSON 6902 patches (inline `patch` or `path`) with a `target` of kind, name and
  optionally group / version

Order within one kustomization, as kustomize: resources, patches, namespace, namePrefix,
commonLabels, images; name references are resolved last.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonpatch
import yaml

__all__ = ["KustomizeError", "render"]

SUPPORTED_FIELDS = frozenset(
    {
        "apiVersion",
        "kind",
        "resources",
        "namespace",
        "namePrefix",
        "commonLabels",
        "images",
        "patches",
    }
)

# Kinds whose selectors, pod templates and name references this renderer models; any other
# kind with such fields would be rendered wrongly, so it is refused. Custom resources without
# references (Strimzi's) only get their metadata changed, as in kustomize.
MODELLED_KINDS = frozenset(
    {
        "ConfigMap",
        "Secret",
        "ServiceAccount",
        "Service",
        "PersistentVolumeClaim",
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "Job",
        "CronJob",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "KafkaTopic",
        "KafkaUser",
    }
)

_WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")

# (kind or None for every kind, path, create) — kustomize's commonLabels field specs
_LABEL_FIELDS: tuple[tuple[str | None, str, bool], ...] = (
    (None, "metadata/labels", True),
    ("Service", "spec/selector", True),
    *((k, "spec/selector/matchLabels", True) for k in _WORKLOADS),
    *((k, "spec/template/metadata/labels", True) for k in _WORKLOADS),
    *(
        (k, f"spec/template/spec/affinity/{aff}/{term}", False)
        for k in ("Deployment", "StatefulSet")
        for aff in ("podAffinity", "podAntiAffinity")
        for term in (
            "preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels",
            "requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels",
        )
    ),
    *(
        (k, "spec/template/spec/topologySpreadConstraints/labelSelector/matchLabels", False)
        for k in ("Deployment", "StatefulSet")
    ),
    ("StatefulSet", "spec/volumeClaimTemplates/metadata/labels", True),
    ("Job", "spec/selector/matchLabels", False),
    ("Job", "spec/template/metadata/labels", True),
    ("CronJob", "spec/jobTemplate/metadata/labels", True),
    ("CronJob", "spec/jobTemplate/spec/template/metadata/labels", True),
    ("CronJob", "spec/jobTemplate/spec/selector/matchLabels", False),
    ("PodDisruptionBudget", "spec/selector/matchLabels", False),
    ("NetworkPolicy", "spec/podSelector/matchLabels", False),
    ("NetworkPolicy", "spec/ingress/from/podSelector/matchLabels", False),
    ("NetworkPolicy", "spec/egress/to/podSelector/matchLabels", False),
)

_CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PersistentVolume",
    }
)


class KustomizeError(ValueError):
    """The kustomization uses something this renderer does not support, or is wrong."""


@dataclass
class _Resource:
    doc: dict[str, Any]
    original_name: str

    @property
    def kind(self) -> str:
        return str(self.doc["kind"])

    @property
    def name(self) -> str:
        return str(self.doc["metadata"]["name"])


def render(path: Path) -> list[dict[str, Any]]:
    """Return the resources `kustomize build path` would print (for the supported subset)."""
    resources = _build(path.resolve(), seen=())
    _resolve_name_references(resources)
    return [r.doc for r in resources]


def _build(folder: Path, *, seen: tuple[Path, ...]) -> list[_Resource]:
    if folder in seen:
        raise KustomizeError(f"{folder}: kustomizations include each other")
    file = folder / "kustomization.yaml"
    if not file.is_file():
        raise KustomizeError(f"{folder}: no kustomization.yaml")
    kustomization = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    unknown = sorted(set(kustomization) - SUPPORTED_FIELDS)
    if unknown:
        raise KustomizeError(f"{file}: not supported by this renderer: {', '.join(unknown)}")
    if kustomization.get("kind", "Kustomization") != "Kustomization":
        raise KustomizeError(f"{file}: kind must be Kustomization")

    resources: list[_Resource] = []
    for entry in kustomization.get("resources", []):
        if "://" in entry or entry.startswith("github.com/"):
            raise KustomizeError(f"{file}: remote resources are not supported: {entry}")
        target = (folder / entry).resolve()
        if target.is_dir():
            resources.extend(_build(target, seen=(*seen, folder)))
        elif target.is_file():
            resources.extend(_load(target))
        else:
            raise KustomizeError(f"{file}: resource {entry} does not exist")
    _check_unique(resources, file)

    for patch in kustomization.get("patches", []):
        _apply_patch(resources, patch, folder)
    if "namespace" in kustomization:
        for res in resources:
            if res.kind not in _CLUSTER_SCOPED:
                res.doc["metadata"]["namespace"] = kustomization["namespace"]
    prefix = kustomization.get("namePrefix", "")
    for res in resources:
        res.doc["metadata"]["name"] = prefix + res.name
    labels = kustomization.get("commonLabels", {})
    if labels:
        for res in resources:
            _add_labels(res.doc, {str(k): str(v) for k, v in labels.items()})
    for image in kustomization.get("images", []):
        _set_image(resources, image, file)
    return resources


def _load(file: Path) -> Iterator[_Resource]:
    for doc in yaml.safe_load_all(file.read_text(encoding="utf-8")):
        if doc is None:
            continue
        if not isinstance(doc, dict) or "kind" not in doc or "metadata" not in doc:
            raise KustomizeError(f"{file}: every document must be a Kubernetes object")
        if doc["kind"] not in MODELLED_KINDS:
            raise KustomizeError(f"{file}: kind {doc['kind']} is not modelled by this renderer")
        yield _Resource(doc, str(doc["metadata"]["name"]))


def _check_unique(resources: list[_Resource], file: Path) -> None:
    seen: set[tuple[str, str]] = set()
    for res in resources:
        key = (res.kind, res.name)
        if key in seen:
            raise KustomizeError(f"{file}: {res.kind}/{res.name} appears twice")
        seen.add(key)


def _apply_patch(resources: list[_Resource], entry: dict[str, Any], folder: Path) -> None:
    unknown = sorted(set(entry) - {"target", "patch", "path"})
    if unknown:
        raise KustomizeError(f"patch fields not supported: {', '.join(unknown)}")
    target = entry.get("target") or {}
    bad = sorted(set(target) - {"kind", "name", "group", "version"})
    if bad or "kind" not in target or "name" not in target:
        raise KustomizeError(f"a patch target needs kind and name only, got {target}")
    text = entry["patch"] if "patch" in entry else (folder / entry["path"]).read_text()
    operations = yaml.safe_load(text)
    if not isinstance(operations, list):
        raise KustomizeError(
            f"only JSON 6902 patches (a list of operations) are supported, got: {text[:60]!r}"
        )
    matched = [r for r in resources if _matches(r, target)]
    if not matched:
        raise KustomizeError(f"the patch target {target} matches no resource")
    for res in matched:
        res.doc = jsonpatch.apply_patch(res.doc, operations)


def _matches(res: _Resource, target: dict[str, str]) -> bool:
    api_version = str(res.doc.get("apiVersion", ""))
    group, _, version = api_version.rpartition("/")
    return (
        res.kind == target["kind"]
        and res.name == target["name"]
        and target.get("group", group) == group
        and target.get("version", version) == version
    )


def _add_labels(doc: dict[str, Any], labels: dict[str, str]) -> None:
    for kind, path, create in _LABEL_FIELDS:
        if kind is None or kind == doc["kind"]:
            _merge_at(doc, path.split("/"), labels, create=create)


def _merge_at(node: Any, parts: list[str], labels: dict[str, str], *, create: bool) -> None:
    if isinstance(node, list):
        for item in node:
            _merge_at(item, parts, labels, create=create)
        return
    if not isinstance(node, dict):
        return
    head, rest = parts[0], parts[1:]
    if head not in node or node[head] is None:
        if not create:
            return
        node[head] = {}
    if rest:
        _merge_at(node[head], rest, labels, create=create)
    else:
        node[head].update(labels)


def _pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec") or {}
    if doc["kind"] in (*_WORKLOADS, "Job"):
        return [spec["template"]["spec"]]
    if doc["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    return []


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _split_image(image: str) -> tuple[str, str | None, str | None]:
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest or None


def _set_image(resources: list[_Resource], entry: dict[str, Any], file: Path) -> None:
    unknown = sorted(set(entry) - {"name", "newName", "newTag", "digest"})
    if unknown:
        raise KustomizeError(f"{file}: image fields not supported: {', '.join(unknown)}")
    for res in resources:
        for pod in _pod_specs(res.doc):
            for container in _containers(pod):
                name, tag, digest = _split_image(container["image"])
                if name != entry["name"]:
                    continue
                name = entry.get("newName", name)
                if "newTag" in entry:
                    tag, digest = str(entry["newTag"]), None
                if "digest" in entry:
                    tag, digest = None, str(entry["digest"])
                container["image"] = (
                    name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
                )


def _resolve_name_references(resources: list[_Resource]) -> None:
    renamed: dict[tuple[str, str], str] = {(r.kind, r.original_name): r.name for r in resources}

    def rename(kind: str) -> Callable[[str], str]:
        return lambda old: renamed.get((kind, old), old)

    for res in resources:
        if res.kind == "HorizontalPodAutoscaler":
            ref = res.doc["spec"]["scaleTargetRef"]
            ref["name"] = rename(ref["kind"])(ref["name"])
        for pod in _pod_specs(res.doc):
            _rename_in_pod(pod, rename)


def _rename_in_pod(pod: dict[str, Any], rename: Callable[[str], Callable[[str], str]]) -> None:
    configmap, secret = rename("ConfigMap"), rename("Secret")
    if "serviceAccountName" in pod:
        pod["serviceAccountName"] = rename("ServiceAccount")(pod["serviceAccountName"])
    for ref in pod.get("imagePullSecrets", []):
        ref["name"] = secret(ref["name"])
    for volume in pod.get("volumes", []):
        if "configMap" in volume:
            volume["configMap"]["name"] = configmap(volume["configMap"]["name"])
        if "secret" in volume:
            volume["secret"]["secretName"] = secret(volume["secret"]["secretName"])
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]
            claim["claimName"] = rename("PersistentVolumeClaim")(claim["claimName"])
        for source in (volume.get("projected") or {}).get("sources", []):
            if "configMap" in source:
                source["configMap"]["name"] = configmap(source["configMap"]["name"])
            if "secret" in source:
                source["secret"]["name"] = secret(source["secret"]["name"])
    for container in _containers(pod):
        for env in container.get("env", []):
            value_from = env.get("valueFrom") or {}
            if "configMapKeyRef" in value_from:
                ref = value_from["configMapKeyRef"]
                ref["name"] = configmap(ref["name"])
            if "secretKeyRef" in value_from:
                ref = value_from["secretKeyRef"]
                ref["name"] = secret(ref["name"])
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                source["configMapRef"]["name"] = configmap(source["configMapRef"]["name"])
            if "secretRef" in source:
                source["secretRef"]["name"] = secret(source["secretRef"]["name"])
