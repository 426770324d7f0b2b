"""Offline checks of deploy/k8s: every overlay renders, every object validates, and the manifests agree with
the code they run (job argument parsers, the trainer's parser, the image) and with the issue's rules."""

from __future__ import annotations

import argparse
import copy
import json
import re

import pytest

from jobs.common import job_parser
from jobs.registry import JOB_ORDER
from tests.deploy.conftest import BUILD_ORDER, DEPLOY, OVERLAYS, ROOT, of_kind

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed (pip install kubernetes-validate)")
jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed")

K8S_VERSION = "1.32"
"""The Kubernetes version the manifests are validated against (GKE's regular channel or newer)."""
CRDS = {"SparkApplication": "sparkapplication", "JobSet": "jobset"}
"""Kinds kubernetes-validate has no schema for -> our schema in deploy/schemas/."""


def schema(name: str) -> dict:
    return json.loads((DEPLOY / "schemas" / f"{name}.schema.json").read_text())


def apps(objects: list[dict]) -> dict[str, dict]:
    """Job name -> its SparkApplication."""
    return {a["metadata"]["labels"]["rnj.dev/job"]: a for a in of_kind(objects, "SparkApplication")}


def job_template(jobset: dict) -> dict:
    """The JobSet's Job template as a batch/v1 Job, so kubernetes-validate can check it strictly."""
    template = jobset["spec"]["replicatedJobs"][0]["template"]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "t", **template.get("metadata", {})},
            "spec": template["spec"]}


def trainer_container(jobset: dict) -> dict:
    return jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0]


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


# --- rendering and validation -------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_builtin_objects_validate_strictly(rendered, overlay):
    kinds = set()
    for obj in rendered[overlay]:
        if obj["kind"] in CRDS:
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        kinds.add(obj["kind"])
    assert {"ServiceAccount", "Role", "RoleBinding", "NetworkPolicy"} <= kinds
    for jobset in of_kind(rendered[overlay], "JobSet"):
        kubernetes_validate.validate(job_template(jobset), K8S_VERSION, strict=True)


def test_crds_are_unknown_to_kubernetes_validate(rendered):
    """Why the CRDs get our own schemas: kubernetes-validate cannot check them (and only says so from Python)."""
    for kind in CRDS:
        obj = of_kind(rendered["sample"], kind)[0]
        with pytest.raises(kubernetes_validate.SchemaNotFoundError):
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_strict_validation_rejects_an_unknown_field(rendered):
    policy = copy.deepcopy(of_kind(rendered["sample"], "NetworkPolicy")[0])
    policy["spec"]["egres"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(policy, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_crds_validate_against_our_schemas(rendered, overlay):
    counts = {kind: 0 for kind in CRDS}
    for obj in rendered[overlay]:
        if obj["kind"] in CRDS:
            jsonschema.validate(obj, schema(CRDS[obj["kind"]]))
            counts[obj["kind"]] += 1
    assert counts == {"SparkApplication": len(BUILD_ORDER), "JobSet": 1}


@pytest.mark.parametrize("mutate", [
    lambda a: a["spec"].__setitem__("type", "Pythn"),
    lambda a: a["spec"].__setitem__("mode", "client"),
    lambda a: a["spec"].__setitem__("sparkConfs", {}),
    lambda a: a["spec"]["executor"].__setitem__("instance", 3),
    lambda a: a["spec"]["executor"].__setitem__("cores", "4"),
    lambda a: a["spec"]["driver"].pop("memoryOverhead"),
    lambda a: a["spec"]["executor"].pop("tolerations"),
    lambda a: a["spec"]["sparkConf"].__setitem__("spark.executor.instances", 4),
], ids=["type-typo", "client-mode", "unknown-key", "unknown-executor-key", "cores-as-string",
        "no-overhead", "no-toleration", "non-string-conf"])
def test_sparkapplication_schema_rejects(rendered, mutate):
    app = copy.deepcopy(apps(rendered["sample"])["ingest"])
    mutate(app)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(app, schema("sparkapplication"))


# --- the jobs: order, entry files, arguments ----------------------------------------------------------


def test_registry_runs_the_build_order():
    assert tuple(JOB_ORDER) == BUILD_ORDER[: len(JOB_ORDER)], \
        f"jobs.registry.JOB_ORDER {JOB_ORDER} must follow the build order {BUILD_ORDER} (update deploy/ too)"
    for name in JOB_ORDER:
        assert (ROOT / "jobs" / f"{name}.py").is_file()


def test_run_build_script_runs_the_build_order():
    script = (DEPLOY / "run-build.sh").read_text()
    listed = re.search(r"^JOBS=\((.*)\)$", script, re.MULTILINE).group(1).split()
    assert tuple(listed) == BUILD_ORDER


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_job_has_an_application_whose_arguments_its_parser_accepts(rendered, overlay):
    by_job = apps(rendered[overlay])
    assert tuple(sorted(by_job)) == tuple(sorted(BUILD_ORDER))
    for name, app in by_job.items():
        spec = app["spec"]
        assert spec["mainApplicationFile"] == f"local:///opt/rnj/jobs/{name}.py"
        args = job_parser(name, "").parse_args(spec["arguments"])
        assert args.config.startswith("gs://") and args.config.endswith(".toml")
        assert args.master is None, "under spark-submit the master comes from the operator, not --master"
        for role in ("driver", "executor"):
            assert spec[role]["labels"]["rnj.dev/job"] == name


def test_a_renamed_flag_breaks_the_cross_check(rendered):
    app = apps(rendered["sample"])["ingest"]
    with pytest.raises(SystemExit):
        job_parser("ingest", "").parse_args([a.replace("--config", "--build") for a in app["spec"]["arguments"]])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_application_reads_the_same_build_file(rendered, overlay):
    configs = {a["spec"]["arguments"][1] for a in of_kind(rendered[overlay], "SparkApplication")}
    assert len(configs) == 1


# --- names, identity, secrets -------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_account_references_survive_name_prefixes(rendered, overlay):
    objects = rendered[overlay]
    accounts = {o["metadata"]["name"] for o in of_kind(objects, "ServiceAccount")}
    for app in of_kind(objects, "SparkApplication"):
        assert app["spec"]["driver"]["serviceAccount"] in accounts
        assert app["spec"]["executor"]["serviceAccount"] in accounts
    for jobset in of_kind(objects, "JobSet"):
        pod = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] in accounts


def test_the_sample_overlay_uses_a_prefix(rendered):
    """The nameReference fix is only exercised when a prefix renames the ServiceAccounts."""
    assert all(a["spec"]["driver"]["serviceAccount"].startswith("sample-")
               for a in of_kind(rendered["sample"], "SparkApplication"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_keys_anywhere(rendered, overlay):
    text = json.dumps(rendered[overlay])
    assert not of_kind(rendered[overlay], "Secret")
    for needle in ("GOOGLE_APPLICATION_CREDENTIALS", "keyfile", "SERVICE_ACCOUNT_JSON_KEYFILE", "private_key"):
        assert needle not in text
    for app in of_kind(rendered[overlay], "SparkApplication"):
        assert app["spec"]["hadoopConf"]["fs.gs.auth.type"] == "APPLICATION_DEFAULT"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_is_minimal(rendered, overlay):
    objects = rendered[overlay]
    roles = of_kind(objects, "Role")
    assert len(roles) == 1 and not of_kind(objects, "ClusterRole") and not of_kind(objects, "ClusterRoleBinding")
    resources = set()
    for rule in roles[0]["rules"]:
        assert rule["apiGroups"] == [""]
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        resources |= set(rule["resources"])
    assert resources == {"pods", "services", "configmaps"}
    (binding,) = of_kind(objects, "RoleBinding")
    driver_accounts = {a["spec"]["driver"]["serviceAccount"] for a in of_kind(objects, "SparkApplication")}
    assert [s["name"] for s in binding["subjects"]] == sorted(driver_accounts)
    bound = {s["name"] for s in binding["subjects"]}
    for account in of_kind(objects, "ServiceAccount"):
        if account["metadata"]["name"] not in bound:
            assert account["automountServiceAccountToken"] is False, "an account without RBAC needs no token"


# --- scheduling, preemption, resources ----------------------------------------------------------------


def duration_seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|min|h)", text)
    assert match, f"{text!r} is not a finite Spark duration"
    return int(match.group(1)) * {"ms": 0.001, "s": 1, "min": 60, "h": 3600}[match.group(2)]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_executors_on_spot_drivers_on_demand(rendered, overlay):
    for app in of_kind(rendered[overlay], "SparkApplication"):
        executor, driver = app["spec"]["executor"], app["spec"]["driver"]
        assert executor["nodeSelector"]["cloud.google.com/gke-spot"] == "true"
        assert {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true",
                "effect": "NoSchedule"} in executor["tolerations"]
        assert "cloud.google.com/gke-spot" not in driver.get("nodeSelector", {})
        assert not driver.get("tolerations")
        terms = driver["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert {"key": "cloud.google.com/gke-spot", "operator": "DoesNotExist"} in \
            terms["nodeSelectorTerms"][0]["matchExpressions"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_preemption_loses_no_work(rendered, overlay):
    for app in of_kind(rendered[overlay], "SparkApplication"):
        conf = app["spec"]["sparkConf"]
        for key in ("spark.decommission.enabled", "spark.storage.decommission.enabled",
                    "spark.storage.decommission.shuffleBlocks.enabled", "spark.storage.decommission.rddBlocks.enabled",
                    "spark.dynamicAllocation.enabled", "spark.dynamicAllocation.shuffleTracking.enabled"):
            assert conf[key] == "true", key
        assert re.fullmatch(r"gs://[a-z0-9][-_.a-z0-9]*[a-z0-9]/.+/", conf["spark.storage.decommission.fallbackStorage.path"])
        assert 0 < duration_seconds(conf["spark.dynamicAllocation.shuffleTracking.timeout"]) <= 6 * 3600
        grace = app["spec"]["executor"]["terminationGracePeriodSeconds"]
        assert duration_seconds(conf["spark.executor.decommission.forceKillTimeout"]) < grace <= 30, \
            "an executor must finish migrating inside Spot's notice"
        assert int(conf["spark.dynamicAllocation.maxExecutors"]) >= 1


def gib(quantity: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)([kmgt]?)", quantity.lower()).groups()
    return float(number) * {"": 2**-30 * 2**20, "k": 2**-20, "m": 2**-10, "g": 1, "t": 1024}[unit]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_requests_limits_and_python_overhead(rendered, overlay):
    for app in of_kind(rendered[overlay], "SparkApplication"):
        for role in ("driver", "executor"):
            pod = app["spec"][role]
            # Spark sets memory request = limit = memory + memoryOverhead; cpu from coreRequest/coreLimit.
            assert float(pod["coreRequest"]) <= float(pod["coreLimit"])
            assert float(pod["coreRequest"]) >= pod["cores"] or role == "driver"
        executor = app["spec"]["executor"]
        assert gib(executor["memoryOverhead"]) >= 1.0 * executor["cores"], \
            "each core runs a Python worker outside the JVM heap: at least 1 GiB of overhead per core"
    for jobset in of_kind(rendered[overlay], "JobSet"):
        for container in jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"]:
            resources = container["resources"]
            assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory", "nvidia.com/gpu"}


def test_image_and_python_agree_with_the_dockerfile(rendered):
    dockerfile = (ROOT / "Dockerfile").read_text()
    spark_version = re.search(r"^ARG SPARK_IMAGE=apache/spark:(\d+\.\d+\.\d+)-", dockerfile, re.MULTILINE).group(1)
    python = re.search(r"PYSPARK_PYTHON=(\S+)", dockerfile).group(1)
    assert "COPY jobs /opt/rnj/jobs" in dockerfile
    for overlay in OVERLAYS:
        for app in of_kind(rendered[overlay], "SparkApplication"):
            assert app["spec"]["sparkVersion"] == spark_version
            assert app["spec"]["sparkConf"]["spark.pyspark.python"] == python
            assert app["spec"]["image"].rsplit(":", 1)[0].endswith("/rnj-spark")
            for key in ("fs.gs.impl", "fs.AbstractFileSystem.gs.impl"):
                assert app["spec"]["hadoopConf"][key].startswith("com.google.cloud.hadoop.fs.gcs.")


# --- the traces job's egress ----------------------------------------------------------------------------


def selects(policy: dict, labels: dict) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(k) == v for k, v in wanted.items())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_traces_executors_have_no_egress_but_spark_and_gcs(rendered, overlay):
    objects = rendered[overlay]
    traces = apps(objects)["traces"]
    executor_labels = {**traces["spec"]["executor"]["labels"], "spark-role": "executor"}
    policies = [p for p in of_kind(objects, "NetworkPolicy") if selects(p, executor_labels)]
    assert all(p["spec"]["policyTypes"] == ["Egress"] for p in policies)
    deny = [p for p in policies if p["spec"]["egress"] == []]
    assert len(deny) == 1, "one deny-all egress policy selects the traces executors"
    allowed = [peer for p in policies for rule in p["spec"]["egress"] for peer in rule.get("to", [])]
    assert all(rule.get("to") for p in policies for rule in p["spec"]["egress"]), "a rule without `to` allows all"
    cidrs = {peer["ipBlock"]["cidr"] for peer in allowed if "ipBlock" in peer}
    assert cidrs == {"169.254.169.252/32", "169.254.169.254/32", "199.36.153.8/30"}
    pods = [peer for peer in allowed if "podSelector" in peer and "namespaceSelector" not in peer]
    assert pods == [{"podSelector": {"matchLabels": {"rnj.dev/job": "traces"}}}]
    # Other jobs' executors are not locked down (they run no untrusted code).
    ingest_labels = {**apps(objects)["ingest"]["spec"]["executor"]["labels"], "spark-role": "executor"}
    assert not any(selects(p, ingest_labels) for p in of_kind(objects, "NetworkPolicy"))


# --- the trainer --------------------------------------------------------------------------------------


def trainer_parser() -> argparse.ArgumentParser:
    """model.train's own argument parser, captured from its main() without running it."""
    from model import train

    captured = {}

    class Captured(Exception):
        pass

    original = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        captured["parser"] = self
        raise Captured

    argparse.ArgumentParser.parse_args = capture
    try:
        with pytest.raises(Captured):
            train.main([])
    finally:
        argparse.ArgumentParser.parse_args = original
    return captured["parser"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_trainer_is_a_resuming_multinode_torchrun(rendered, overlay):
    (jobset,) = of_kind(rendered[overlay], "JobSet")
    job = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]
    container = trainer_container(jobset)
    env = env_of(container)
    assert container["command"] == ["torchrun"]
    args = container["args"]
    module_at = args.index("-m")
    assert args[module_at + 1] == "model.train"
    torchrun = dict(a.lstrip("-").split("=", 1) for a in args[:module_at])
    assert torchrun["nnodes"] == "$(NNODES)" and torchrun["node-rank"] == "$(NODE_RANK)"
    assert int(env["NNODES"]) == job["parallelism"] == job["completions"] >= 2
    assert env["GPUS_PER_NODE"] == container["resources"]["limits"]["nvidia.com/gpu"]
    assert jobset["spec"]["failurePolicy"]["maxRestarts"] >= 1 and job["backoffLimit"] == 0
    parsed = trainer_parser().parse_args(args[module_at + 2:])
    assert parsed.all, "--all resumes every stage from its latest checkpoint after a restart"
    assert parsed.config.startswith("/mnt/rnj/"), "the build file is read from the mounted bucket"
    volume = next(v for v in job["template"]["spec"]["volumes"] if "csi" in v)
    assert volume["csi"]["driver"] == "gcsfuse.csi.storage.gke.io"
    assert job["template"]["metadata"]["annotations"]["gke-gcsfuse/volumes"] == "true"
