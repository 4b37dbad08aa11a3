"""The offline kustomize renderer behaves like kustomize for what it supports, refuses the rest."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.deploy.kustomize import KustomizeError, render

BASE_RESOURCES = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: config
data:
  A: "1"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  labels: {app: demo}
spec:
  selector:
    matchLabels: {app: demo}
  template:
    metadata:
      labels: {app: demo}
    spec:
      serviceAccountName: app
      containers:
        - name: api
          image: demo:1.0
          envFrom:
            - configMapRef: {name: config}
          env:
            - name: URL
              valueFrom:
                secretKeyRef: {name: external-secret, key: url}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: app
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: api
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: api}
  minReplicas: 1
  maxReplicas: 2
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: np
spec:
  podSelector: {}
  egress:
    - to:
        - podSelector:
            matchLabels: {k8s-app: kube-dns}
        - namespaceSelector:
            matchLabels: {team: x}
"""


PATCH = (
    "resources: [../base]\n"
    "patches:\n  - target: {{kind: Deployment, name: {name}}}\n    patch: {patch}\n"
)


def _tree(tmp_path: Path, overlay: str) -> Path:
    base = tmp_path / "base"
    base.mkdir()
    (base / "all.yaml").write_text(BASE_RESOURCES)
    (base / "kustomization.yaml").write_text("resources:\n  - all.yaml\n")
    folder = tmp_path / "overlay"
    folder.mkdir()
    (folder / "kustomization.yaml").write_text(textwrap.dedent(overlay))
    return folder


def _by_kind(docs: list[dict], kind: str) -> dict:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def test_prefix_renames_resources_and_the_references_to_them(tmp_path: Path) -> None:
    docs = render(_tree(tmp_path, "resources: [../base]\nnamePrefix: p-\n"))
    assert {d["metadata"]["name"] for d in docs} == {"p-config", "p-api", "p-app", "p-np"}
    pod = _by_kind(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "p-app"
    assert pod["containers"][0]["envFrom"][0]["configMapRef"]["name"] == "p-config"
    # a Secret that is not part of the build keeps its name
    assert pod["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "external-secret"
    assert _by_kind(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == "p-api"


def test_common_labels_reach_selectors_templates_and_peer_pod_selectors(tmp_path: Path) -> None:
    docs = render(_tree(tmp_path, "resources: [../base]\ncommonLabels: {tier: x}\n"))
    deployment = _by_kind(docs, "Deployment")
    assert deployment["metadata"]["labels"] == {"app": "demo", "tier": "x"}
    assert deployment["spec"]["selector"]["matchLabels"] == {"app": "demo", "tier": "x"}
    assert deployment["spec"]["template"]["metadata"]["labels"] == {"app": "demo", "tier": "x"}
    policy = _by_kind(docs, "NetworkPolicy")["spec"]
    assert policy["podSelector"] == {}, "an empty selector stays empty (create: false)"
    peers = policy["egress"][0]["to"]
    assert peers[0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns", "tier": "x"}
    assert peers[1]["namespaceSelector"]["matchLabels"] == {"team": "x"}


def test_images_namespace_and_json6902_patches(tmp_path: Path) -> None:
    overlay = """\
    resources: [../base]
    namespace: ns
    images:
      - {name: demo, newName: registry.example/demo, newTag: "2.0"}
    patches:
      - target: {kind: HorizontalPodAutoscaler, name: api}
        patch: |-
          - {op: replace, path: /spec/maxReplicas, value: 5}
    """
    docs = render(_tree(tmp_path, overlay))
    assert {d["metadata"]["namespace"] for d in docs} == {"ns"}
    container = _by_kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/demo:2.0"
    assert _by_kind(docs, "HorizontalPodAutoscaler")["spec"]["maxReplicas"] == 5


def test_digest_replaces_the_tag(tmp_path: Path) -> None:
    overlay = "resources: [../base]\nimages:\n  - {name: demo, digest: 'sha256:abc'}\n"
    docs = render(_tree(tmp_path, overlay))
    container = _by_kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "demo@sha256:abc"


@pytest.mark.parametrize(
    ("overlay", "message"),
    [
        ("resources: [../base]\nconfigMapGenerator: []\n", "not supported"),
        ("resources: [../base]\nlabels: []\n", "not supported"),
        (PATCH.format(name="nope", patch="'[]'"), "matches no"),
        (PATCH.format(name="api", patch="'spec: {}'"), "JSON 6902"),
        ("resources: [../base, ../base]\n", "appears twice"),
        ("resources: [https://example.com/x]\n", "remote"),
    ],
)  # fmt: skip
def test_unsupported_or_wrong_kustomizations_are_refused(
    tmp_path: Path, overlay: str, message: str
) -> None:
    with pytest.raises(KustomizeError, match=message):
        render(_tree(tmp_path, overlay))


def test_kinds_it_does_not_model_are_refused(tmp_path: Path) -> None:
    (tmp_path / "ingress.yaml").write_text(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\n"
    )
    (tmp_path / "kustomization.yaml").write_text("resources: [ingress.yaml]\n")
    with pytest.raises(KustomizeError, match="Ingress is not modelled"):
        render(tmp_path)
