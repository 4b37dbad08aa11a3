"""k8s/: the rendered overlay against the Kubernetes and Strimzi schemas, then its semantics."""

from __future__ import annotations

import json
import re
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from bus import topics
from bus.transport import DEFAULT_PARTITIONS
from connectors.config import ConnectorsFile
from service.cli import _parser
from service.worker import INGEST_GROUP, ROUTER_GROUP
from tests.deploy.conftest import (
    DOCKERFILE,
    OVERLAY,
    ROOT,
    SCHEMAS,
    container_env,
    is_stafett_variable,
    named,
    of_kind,
    pod_spec,
    settings_from,
    workloads,
)

# kubernetes-validate ships schemas up to its own version; check the oldest Kubernetes a
# municipality is likely to run as well as the newest.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
STRIMZI_SCHEMAS = {
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): "strimzi-kafkatopic-v1beta2.schema.json",
    ("kafka.strimzi.io/v1beta2", "KafkaUser"): "strimzi-kafkauser-v1beta2.schema.json",
}
OVERLAY_KUSTOMIZATION = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
PREFIX = OVERLAY_KUSTOMIZATION["namePrefix"]
IMAGE = "{newName}:{newTag}".format(**OVERLAY_KUSTOMIZATION["images"][0])
# The worker serves nothing and writes no heartbeat: there is nothing for a probe to ask.
NO_PROBES = {f"{PREFIX}worker"}


def _uid_from_dockerfile() -> int:
    user = re.findall(r"^USER\s+(\d+)", DOCKERFILE.read_text(), flags=re.MULTILINE)[-1]
    return int(user)


def _ident(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


# --- schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["overlay", "base"])
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_resources_pass_kubernetes_validate_strict(
    which: str,
    version: str,
    rendered_overlay: list[dict[str, Any]],
    rendered_base: list[dict[str, Any]],
) -> None:
    docs = rendered_overlay if which == "overlay" else rendered_base
    core = [d for d in docs if (d["apiVersion"], d["kind"]) not in STRIMZI_SCHEMAS]
    assert len(core) >= 15
    for doc in core:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{_ident(doc)} on Kubernetes {version}: {exc.message} at {list(exc.path)}")


def test_strict_validation_catches_a_misspelt_field(rendered_overlay: list[dict[str, Any]]) -> None:
    doc = json.loads(json.dumps(named(rendered_overlay, "Deployment", f"{PREFIX}api")))
    pod_spec(doc)["containers"][0]["readinesProbe"] = pod_spec(doc)["containers"][0][
        "readinessProbe"
    ]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)


def test_strimzi_resources_match_the_crd_schemas(rendered_overlay: list[dict[str, Any]]) -> None:
    checked = 0
    for doc in rendered_overlay:
        key = (doc["apiVersion"], doc["kind"])
        if key in STRIMZI_SCHEMAS:
            schema = json.loads((SCHEMAS / STRIMZI_SCHEMAS[key]).read_text())
            jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
            checked += 1
    assert checked == len(of_kind(rendered_overlay, "KafkaTopic")) + len(
        of_kind(rendered_overlay, "KafkaUser")
    )
    assert checked >= 10


def test_the_strimzi_schemas_reject_mistakes(rendered_overlay: list[dict[str, Any]]) -> None:
    schema = json.loads(
        (SCHEMAS / STRIMZI_SCHEMAS[("kafka.strimzi.io/v1beta2", "KafkaUser")]).read_text()
    )
    user = json.loads(json.dumps(of_kind(rendered_overlay, "KafkaUser")[0]))
    user["spec"]["authorization"]["acls"][0]["operations"] = ["Reed"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(user, schema)
    user["spec"]["authorization"]["acls"][0] = {"resource": {"type": "topic"}, "operation": "Read"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(user, schema)


# --- the overlay's kustomize features ------------------------------------------------------


def test_the_overlay_is_applied(rendered_overlay: list[dict[str, Any]]) -> None:
    labels = OVERLAY_KUSTOMIZATION["commonLabels"]
    for doc in rendered_overlay:
        assert doc["metadata"]["name"].startswith(PREFIX), _ident(doc)
        assert doc["metadata"]["namespace"] == OVERLAY_KUSTOMIZATION["namespace"]
        assert labels.items() <= doc["metadata"]["labels"].items(), _ident(doc)
    for doc in workloads(rendered_overlay):
        for container in pod_spec(doc)["containers"]:
            assert container["image"] == IMAGE, _ident(doc)
    config = named(rendered_overlay, "ConfigMap", f"{PREFIX}config")
    assert config["data"]["STAFETT_BASE_URL"] == "https://stafett.kommune.example.no"


# --- workloads -----------------------------------------------------------------------------


def test_every_container_is_locked_down(rendered_overlay: list[dict[str, Any]]) -> None:
    uid = _uid_from_dockerfile()
    assert workloads(rendered_overlay)
    for doc in workloads(rendered_overlay):
        pod = pod_spec(doc)
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, _ident(doc)
        assert security["runAsUser"] == uid, _ident(doc)
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, _ident(doc)
        assert pod["automountServiceAccountToken"] is False, _ident(doc)
        # no docker-link variables: a Service named stafett-* would add STAFETT_*_PORT etc.
        assert pod["enableServiceLinks"] is False, _ident(doc)
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, _ident(doc)
            assert context["allowPrivilegeEscalation"] is False, _ident(doc)
            assert context["capabilities"] == {"drop": ["ALL"]}, _ident(doc)
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp, f"{_ident(doc)}: /tmp"
            assert "emptyDir" in volumes[tmp[0]["name"]], f"{_ident(doc)}: /tmp"


def test_every_container_has_requests_and_limits(rendered_overlay: list[dict[str, Any]]) -> None:
    for doc in workloads(rendered_overlay):
        for container in pod_spec(doc)["containers"]:
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[kind]), f"{_ident(doc)} {kind}"


def test_every_serving_deployment_has_probes(rendered_overlay: list[dict[str, Any]]) -> None:
    for doc in of_kind(rendered_overlay, "Deployment"):
        for container in pod_spec(doc)["containers"]:
            if doc["metadata"]["name"] in NO_PROBES:
                assert "ports" not in container, f"{_ident(doc)} serves a port: give it probes"
                continue
            for probe in ("readinessProbe", "livenessProbe"):
                assert probe in container, f"{_ident(doc)}: {probe}"


def test_api_probes_ask_the_health_endpoints(rendered_overlay: list[dict[str, Any]]) -> None:
    (api,) = pod_spec(named(rendered_overlay, "Deployment", f"{PREFIX}api"))["containers"]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    routes = (ROOT / "service" / "api" / "app.py").read_text()
    assert '@app.get("/readyz"' in routes
    assert '@app.get("/healthz"' in routes


def test_every_command_is_one_stafett_understands(rendered_overlay: list[dict[str, Any]]) -> None:
    commands = {}
    for doc in workloads(rendered_overlay):
        for container in pod_spec(doc)["containers"]:
            assert container["command"] == ["stafett"], _ident(doc)
            _parser().parse_args(container["args"])  # exits on an unknown option
            commands[doc["metadata"]["name"]] = container["args"]
    assert commands[f"{PREFIX}api"][0] == "serve"
    assert commands[f"{PREFIX}worker"] == ["worker"]
    assert commands[f"{PREFIX}migrate"] == ["db", "upgrade"]
    assert commands[f"{PREFIX}connectors"][:2] == ["connectors", "run"]


def test_api_port_matches_the_container_and_the_service(
    rendered_overlay: list[dict[str, Any]],
) -> None:
    (api,) = pod_spec(named(rendered_overlay, "Deployment", f"{PREFIX}api"))["containers"]
    port = int(api["args"][api["args"].index("--port") + 1])
    assert api["args"][api["args"].index("--host") + 1] == "0.0.0.0"
    assert {p["name"]: p["containerPort"] for p in api["ports"]} == {"http": port}


def test_services_select_their_deployment(rendered_overlay: list[dict[str, Any]]) -> None:
    deployments = of_kind(rendered_overlay, "Deployment")
    served = set()
    for service in of_kind(rendered_overlay, "Service"):
        selector = service["spec"]["selector"]
        matched = [
            d
            for d in deployments
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matched) == 1, _ident(service)
        ports = {p["name"] for c in pod_spec(matched[0])["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, _ident(service)
        served.add(matched[0]["metadata"]["name"])
    assert served == {f"{PREFIX}api", f"{PREFIX}connectors"}


def test_the_api_scales_on_cpu(rendered_overlay: list[dict[str, Any]]) -> None:
    (hpa,) = of_kind(rendered_overlay, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    deployment = named(rendered_overlay, target["kind"], target["name"])
    assert deployment["metadata"]["name"] == f"{PREFIX}api"
    assert "replicas" not in deployment["spec"], "the HPA owns replicas; apply would reset them"
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_every_deployment_has_a_disruption_budget(rendered_overlay: list[dict[str, Any]]) -> None:
    budgets = of_kind(rendered_overlay, "PodDisruptionBudget")
    for doc in of_kind(rendered_overlay, "Deployment"):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        mine = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(mine) == 1, _ident(doc)
        replicas = doc["spec"].get("replicas")
        if replicas == 1:  # minAvailable 1 on one pod would block every node drain
            assert mine[0]["spec"].get("maxUnavailable") == 1, _ident(doc)


def test_connectors_keep_checkpoints_on_a_claim_with_one_writer(
    rendered_overlay: list[dict[str, Any]],
) -> None:
    doc = named(rendered_overlay, "Deployment", f"{PREFIX}connectors")
    assert doc["spec"]["replicas"] == 1
    assert doc["spec"]["strategy"] == {"type": "Recreate"}
    pod = pod_spec(doc)
    (container,) = pod["containers"]
    state_dir = container["args"][container["args"].index("--state-dir") + 1]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume = next(v for v in pod["volumes"] if v["name"] == mounts["/var/lib/stafett"])
    assert state_dir.startswith("/var/lib/stafett/")
    named(rendered_overlay, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert pod["securityContext"]["fsGroup"] == _uid_from_dockerfile()


# --- settings ------------------------------------------------------------------------------


def test_every_stafett_variable_is_a_real_setting(rendered_overlay: list[dict[str, Any]]) -> None:
    for config in of_kind(rendered_overlay, "ConfigMap"):
        if config["metadata"]["name"] == f"{PREFIX}config":
            for key in config["data"]:
                assert is_stafett_variable(key), f"{key} is no Stafett setting"
    for doc in workloads(rendered_overlay):
        for container in pod_spec(doc)["containers"]:
            for item in container.get("env", []):
                if item["name"].startswith("STAFETT_"):
                    assert is_stafett_variable(item["name"]), f"{_ident(doc)}: {item['name']}"


@pytest.mark.parametrize("component", ["api", "worker", "migrate", "connectors"])
def test_stafett_accepts_each_containers_settings(
    rendered_overlay: list[dict[str, Any]], component: str
) -> None:
    doc = next(
        d for d in workloads(rendered_overlay) if d["metadata"]["name"] == PREFIX + component
    )
    (container,) = pod_spec(doc)["containers"]
    env = container_env(rendered_overlay, container)
    settings = settings_from({k: v for k, v in env.items() if k.startswith("STAFETT_")})
    if component != "connectors":
        assert settings.environment == "production"
        assert settings.effective_database_url.startswith("postgresql+psycopg://")
        assert settings.trusted_issuers
        assert settings.access_policy == "consent"
        assert not settings.dev_auth
    if component in ("worker", "connectors"):
        assert settings.kafka_bootstrap
    if component == "connectors":
        # the connectors never use the database; production settings would demand one
        assert "STAFETT_DATABASE_URL" not in env


def test_secrets_come_only_from_secret_references(rendered_overlay: list[dict[str, Any]]) -> None:
    assert not of_kind(rendered_overlay, "Secret"), "no secret values in the manifests"
    secret = {
        "STAFETT_DATABASE_URL",
        "STAFETT_KAFKA_CLIENT_CONFIG",
        "STAFETT_CONNECTORS_ADMIN_TOKEN",
        "STAFETT_ENCRYPTION_KEYS",
    }
    for config in of_kind(rendered_overlay, "ConfigMap"):
        assert not secret & set(config.get("data", {})), _ident(config)
    seen = set()
    for doc in workloads(rendered_overlay):
        for container in pod_spec(doc)["containers"]:
            for item in container.get("env", []):
                if item["name"] in secret:
                    assert "secretKeyRef" in item.get("valueFrom", {}), (
                        f"{_ident(doc)}: {item['name']}"
                    )
                    seen.add(item["name"])
    assert seen == secret


def test_the_worker_and_api_share_one_consent_policy(
    rendered_overlay: list[dict[str, Any]],
) -> None:
    # the API decides reads, the worker's router decides deliveries: same settings for both
    def env_sources(name: str) -> list[Any]:
        (container,) = pod_spec(named(rendered_overlay, "Deployment", PREFIX + name))["containers"]
        return container["envFrom"]

    assert env_sources("api") == env_sources("worker")


# --- network policies ----------------------------------------------------------------------


def _selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    selector = policy["spec"]["podSelector"]
    return selector.get("matchLabels", {}).items() <= labels.items() and not selector.get(
        "matchExpressions"
    )


def _ports(rules: list[dict[str, Any]]) -> set[int]:
    return {int(p["port"]) for rule in rules for p in rule.get("ports", [])}


def test_default_deny_for_every_pod(rendered_overlay: list[dict[str, Any]]) -> None:
    policies = of_kind(rendered_overlay, "NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert len(deny) == 1
    assert set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny[0]["spec"]
    assert "egress" not in deny[0]["spec"]


def test_every_workload_has_its_own_policy(rendered_overlay: list[dict[str, Any]]) -> None:
    policies = [p for p in of_kind(rendered_overlay, "NetworkPolicy") if p["spec"]["podSelector"]]
    for doc in workloads(rendered_overlay):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        mine = [p for p in policies if _selects(p, labels)]
        assert len(mine) == 1, f"{_ident(doc)}: {len(mine)} policies"
        assert set(mine[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        egress = mine[0]["spec"]["egress"]
        dns = [r for r in egress if _ports([r]) == {53}]
        assert dns, _ident(doc)
        assert {p["protocol"] for p in dns[0]["ports"]} == {"UDP", "TCP"}, _ident(doc)


def _policy(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    return named(docs, "NetworkPolicy", PREFIX + component)["spec"]


def test_network_paths_per_component(rendered_overlay: list[dict[str, Any]]) -> None:
    api = _policy(rendered_overlay, "api")
    assert _ports(api["ingress"]) == {8080}
    assert _ports(api["egress"]) == {53, 5432, 443}
    worker = _policy(rendered_overlay, "worker")
    assert "ingress" not in worker
    assert _ports(worker["egress"]) == {53, 5432, 9092, 9093}
    migrate = _policy(rendered_overlay, "migrate")
    assert "ingress" not in migrate
    assert _ports(migrate["egress"]) == {53, 5432}
    connectors = _policy(rendered_overlay, "connectors")
    assert _ports(connectors["ingress"]) == {8083}
    assert _ports(connectors["egress"]) == {53, 9092, 9093, 8080, 443}


def test_https_egress_leaves_the_cluster_only(rendered_overlay: list[dict[str, Any]]) -> None:
    private = [ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
    for component in ("api", "connectors"):
        (rule,) = [
            r for r in _policy(rendered_overlay, component)["egress"] if _ports([r]) == {443}
        ]
        (peer,) = rule["to"]
        assert [ip_network(n) for n in peer["ipBlock"]["except"]] == private


def test_pod_selectors_of_peers_still_find_their_pods(
    rendered_overlay: list[dict[str, Any]],
) -> None:
    # kustomize's commonLabels go into every non-empty podSelector of a from/to peer: a rule
    # aimed at pods outside the build (kube-dns, say) would then match nothing. Such peers
    # must select namespaces or IP blocks; pod selectors must find pods of this build.
    templates = [d["spec"]["template"]["metadata"]["labels"] for d in workloads(rendered_overlay)]
    for policy in of_kind(rendered_overlay, "NetworkPolicy"):
        rules = [*policy["spec"].get("ingress", []), *policy["spec"].get("egress", [])]
        for rule in rules:
            for peer in [*rule.get("from", []), *rule.get("to", [])]:
                wanted = peer.get("podSelector", {}).get("matchLabels", {})
                if wanted:
                    assert "namespaceSelector" not in peer, _ident(policy)
                    assert any(wanted.items() <= labels.items() for labels in templates), _ident(
                        policy
                    )


def test_sinks_reach_the_api_they_are_configured_with(
    rendered_overlay: list[dict[str, Any]],
) -> None:
    service = named(rendered_overlay, "Service", f"{PREFIX}api")
    port = service["spec"]["ports"][0]["port"]
    for connector in _connectors_file(rendered_overlay).connectors:
        if connector.kind == "sink":
            url = connector.settings["stafett_url"]
            assert url == f"http://{service['metadata']['name']}:{port}/fhir", connector.name
    api_ingress = _policy(rendered_overlay, "api")["ingress"]
    assert all("from" not in rule for rule in api_ingress), "the connectors reach the api"


# --- Kafka: topics and ACLs ----------------------------------------------------------------


def _topics(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["spec"]["topicName"]: t for t in of_kind(docs, "KafkaTopic")}


def _acls(user: dict[str, Any]) -> list[dict[str, Any]]:
    return user["spec"]["authorization"]["acls"]


def _grants(acl: dict[str, Any], kind: str, name: str) -> bool:
    resource = acl["resource"]
    if resource["type"] != kind or acl.get("type", "allow") != "allow":
        return False
    if resource.get("patternType", "literal") == "prefix":
        return name.startswith(resource["name"])
    return resource["name"] in (name, "*")


def _allowed(user: dict[str, Any], kind: str, name: str, operation: str) -> bool:
    return any(
        _grants(acl, kind, name) and ({operation, "All"} & set(acl["operations"]))
        for acl in _acls(user)
    )


def _connectors_file(docs: list[dict[str, Any]]) -> ConnectorsFile:
    data = named(docs, "ConfigMap", f"{PREFIX}connectors-config")["data"]["connectors.yaml"]
    return ConnectorsFile.model_validate(yaml.safe_load(data))


def test_topics_for_every_fixed_and_outbound_topic(rendered_overlay: list[dict[str, Any]]) -> None:
    declared = _topics(rendered_overlay)
    assert set(topics.ALL_FIXED) <= set(declared)
    outbound = {topics.is_outbound(t) for t in declared} - {None}
    assert {"912837467", "927364514"} <= outbound
    sinks = {
        c.organization for c in _connectors_file(rendered_overlay).connectors if c.kind == "sink"
    }
    assert sinks <= outbound, "every sink's outbound topic is declared"
    for name, topic in declared.items():
        assert name in topics.ALL_FIXED or topics.is_outbound(name), f"unknown topic {name}"
        assert topic["spec"]["partitions"] == DEFAULT_PARTITIONS, name
        assert topic["spec"]["replicas"] >= 3 > topic["spec"]["config"]["min.insync.replicas"], name


def test_one_kafka_cluster_for_all(rendered_overlay: list[dict[str, Any]]) -> None:
    clusters = {
        d["metadata"]["labels"].get("strimzi.io/cluster")
        for d in [*of_kind(rendered_overlay, "KafkaTopic"), *of_kind(rendered_overlay, "KafkaUser")]
    }
    assert len(clusters) == 1
    assert None not in clusters
    bootstrap = named(rendered_overlay, "ConfigMap", f"{PREFIX}config")["data"][
        "STAFETT_KAFKA_BOOTSTRAP"
    ]
    assert bootstrap.startswith(f"{clusters.pop()}-kafka-bootstrap.")


def test_every_user_authenticates(rendered_overlay: list[dict[str, Any]]) -> None:
    for user in of_kind(rendered_overlay, "KafkaUser"):
        assert user["spec"]["authentication"]["type"] == "scram-sha-512", _ident(user)
        assert user["spec"]["authorization"]["type"] == "simple", _ident(user)
        for acl in _acls(user):
            assert acl["resource"]["type"] != "cluster", _ident(user)
            assert "All" not in acl["operations"], _ident(user)


def test_the_worker_reads_and_writes_every_stafett_topic(
    rendered_overlay: list[dict[str, Any]],
) -> None:
    worker = named(rendered_overlay, "KafkaUser", f"{PREFIX}worker")
    for name in [*_topics(rendered_overlay), topics.outbound("974760673"), "stafett.out.889640782"]:
        for operation in ("Read", "Write", "Create", "Describe"):
            assert _allowed(worker, "topic", name, operation), f"{operation} {name}"
    for group in (ROUTER_GROUP, INGEST_GROUP, "stafett-replay"):
        assert _allowed(worker, "group", group, "Read"), group
    assert not _allowed(worker, "topic", "nav.bti.v1", "Read")


def test_each_vendor_reads_only_its_own_outbound_topic(
    rendered_overlay: list[dict[str, Any]],
) -> None:
    vendors = [
        u for u in of_kind(rendered_overlay, "KafkaUser") if "vendor-" in u["metadata"]["name"]
    ]
    assert len(vendors) == 2
    every_topic = [*_topics(rendered_overlay), "stafett.out.945182733", "stafett.out.889640782"]
    for user in vendors:
        orgnr = user["metadata"]["name"].rsplit("-", 1)[1]
        own = topics.outbound(orgnr)
        readable = {t for t in every_topic if _allowed(user, "topic", t, "Read")}
        assert readable == {own}, f"{_ident(user)} reads {sorted(readable)}"
        writable = {t for t in every_topic if _allowed(user, "topic", t, "Write")}
        assert writable == {topics.INBOUND}, _ident(user)
        for acl in _acls(user):
            resource = acl["resource"]
            if resource["type"] == "topic" and "Read" in acl["operations"]:
                assert resource.get("patternType", "literal") == "literal", _ident(user)
                assert resource["name"] == own, _ident(user)
            if resource["type"] == "group":
                assert orgnr in resource["name"], f"{_ident(user)}: groups named after the vendor"
                assert set(acl["operations"]) <= {"Read", "Describe"}
        other = next(u for u in vendors if u is not user)
        other_groups = [
            a["resource"]["name"] for a in _acls(other) if a["resource"]["type"] == "group"
        ]
        for group in other_groups:
            assert not _allowed(user, "group", group, "Read"), f"{_ident(user)} joins {group}"


def test_the_connectors_read_only_their_sinks_topics(
    rendered_overlay: list[dict[str, Any]],
) -> None:
    user = named(rendered_overlay, "KafkaUser", f"{PREFIX}connectors")
    connectors = _connectors_file(rendered_overlay).connectors
    sinks = {topics.outbound(c.organization) for c in connectors if c.kind == "sink"}
    candidates = [*_topics(rendered_overlay), "stafett.out.889640782"]
    assert {t for t in candidates if _allowed(user, "topic", t, "Read")} == sinks
    assert {t for t in candidates if _allowed(user, "topic", t, "Write")} == {
        topics.INBOUND,
        topics.DEAD_LETTER,
    }
    for connector in connectors:  # connectors/runtime.py: group stafett-connect-<name>
        assert _allowed(user, "group", f"stafett-connect-{connector.name}", "Read"), connector.name
    for name in (topics.INBOUND, topics.DEAD_LETTER, *sinks):  # the runtime's ensure_topics
        assert _allowed(user, "topic", name, "Create"), name


def test_the_connectors_group_names_are_the_runtimes() -> None:
    runtime = (ROOT / "connectors" / "runtime.py").read_text()
    assert 'return f"stafett-connect-{config.name}"' in runtime


# --- the connectors' configuration ---------------------------------------------------------


def test_the_connectors_config_provides_every_variable(
    rendered_overlay: list[dict[str, Any]],
) -> None:
    data = named(rendered_overlay, "ConfigMap", f"{PREFIX}connectors-config")["data"][
        "connectors.yaml"
    ]
    wanted = set(re.findall(r"\$\{([A-Z0-9_]+)\}", data))
    (container,) = pod_spec(named(rendered_overlay, "Deployment", f"{PREFIX}connectors"))[
        "containers"
    ]
    given = {e["name"] for e in container["env"]}
    assert wanted
    assert wanted <= given
    config_dir = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "config")
    assert (
        container["args"][container["args"].index("--config") + 1]
        == f"{config_dir}/connectors.yaml"
    )


def test_the_documented_kafka_client_config_is_valid(
    rendered_overlay: list[dict[str, Any]],
) -> None:
    """The client config docs/DEPLOYMENT.md tells operators to store in the stafett-kafka Secret."""
    docs = (ROOT / "docs" / "DEPLOYMENT.md").read_text(encoding="utf-8")
    templates = re.findall(r"printf '(\{.*?\})'", docs)
    assert templates, "docs/DEPLOYMENT.md shows how to write the client config"
    (worker,) = pod_spec(named(rendered_overlay, "Deployment", f"{PREFIX}worker"))["containers"]
    ca_dir = next(m["mountPath"] for m in worker["volumeMounts"] if m["name"] == "kafka-ca")
    for template in templates:
        config = json.loads(template.replace("%s", "x"))
        for client in (KafkaProducer, KafkaConsumer, KafkaAdminClient):
            assert set(config) <= set(client.DEFAULT_CONFIG), f"{client.__name__}: {config}"
        assert Path(config["ssl_cafile"]).parent == Path(ca_dir)
