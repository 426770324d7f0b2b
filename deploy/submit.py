"""The plain `spark-submit --master k8s://...` equivalent of one rendered SparkApplication, with the same confs.

    python deploy/submit.py deploy/k8s/overlays/production ingest --master k8s://https://API_SERVER

prints the command (and writes the driver and executor pod templates it names into --templates, default
./pod-templates): what the Spark Operator would run, for a cluster without the operator. Only the fields our
manifests use are translated; anything else is an error, so the two paths cannot drift apart silently.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
from pathlib import Path

import yaml

POD_FIELDS = {
    "cores": "spark.{role}.cores",
    "coreRequest": "spark.kubernetes.{role}.request.cores",
    "coreLimit": "spark.kubernetes.{role}.limit.cores",
    "memory": "spark.{role}.memory",
    "memoryOverhead": "spark.{role}.memoryOverhead",
}
"""SparkApplication driver/executor fields that are plain Spark confs."""

TEMPLATE_FIELDS = ("affinity", "tolerations", "terminationGracePeriodSeconds")
"""Fields spark-submit has no conf for: they go into a pod template file."""

TOP_FIELDS = {"type", "pythonVersion", "mode", "sparkVersion", "image", "imagePullPolicy", "restartPolicy",
              "timeToLiveSeconds", "hadoopConf", "sparkConf", "mainApplicationFile", "arguments", "driver",
              "executor"}
OPERATOR_ONLY = {"restartPolicy", "timeToLiveSeconds", "sparkVersion", "pythonVersion", "type"}
"""Handled by the operator (retries, garbage collection) or implied by a Python main file."""


def render(overlay: str | Path) -> list[dict]:
    """The objects of a kustomize overlay, rendered offline by `kubectl kustomize`."""
    out = subprocess.run(["kubectl", "kustomize", str(overlay)], check=True, capture_output=True, text=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def find_app(objects: list[dict], job: str) -> dict:
    for obj in objects:
        if obj["kind"] == "SparkApplication" and obj["metadata"].get("labels", {}).get("rnj.dev/job") == job:
            return obj
    raise ValueError(f"no SparkApplication labelled rnj.dev/job={job} in the overlay")


def pod_template(spec: dict) -> dict | None:
    """A pod template carrying the fields spark-submit cannot set through confs, or None when none is set."""
    pod = {key: spec[key] for key in TEMPLATE_FIELDS if key in spec}
    return {"apiVersion": "v1", "kind": "Pod", "spec": pod} if pod else None


def spark_submit(app: dict, master: str, templates: Path) -> tuple[list[str], dict[str, dict]]:
    """The spark-submit argv for `app`, and the pod templates (file name -> object) it refers to."""
    spec = app["spec"]
    unknown = set(spec) - TOP_FIELDS
    if unknown:
        raise ValueError(f"{app['metadata']['name']}: no spark-submit translation for {sorted(unknown)}")
    if spec["mode"] != "cluster":
        raise ValueError(f"{app['metadata']['name']}: mode {spec['mode']!r}; only cluster mode is translated")
    confs: dict[str, str] = {
        "spark.kubernetes.namespace": app["metadata"].get("namespace", "default"),
        "spark.kubernetes.container.image": spec["image"],
        "spark.kubernetes.container.image.pullPolicy": spec.get("imagePullPolicy", "IfNotPresent"),
    }
    written: dict[str, dict] = {}
    for role in ("driver", "executor"):
        pod = spec[role]
        for field, key in POD_FIELDS.items():
            if field in pod:
                confs[key.format(role=role)] = str(pod[field])
        confs[f"spark.kubernetes.authenticate.{role}.serviceAccountName"] = pod["serviceAccount"]
        for label, value in pod.get("labels", {}).items():
            confs[f"spark.kubernetes.{role}.label.{label}"] = value
        for label, value in pod.get("nodeSelector", {}).items():
            confs[f"spark.kubernetes.{role}.node.selector.{label}"] = value
        if "deleteOnTermination" in pod:
            confs["spark.kubernetes.executor.deleteOnTermination"] = str(pod["deleteOnTermination"]).lower()
        template = pod_template(pod)
        if template is not None:
            name = f"{app['metadata']['name']}-{role}.yaml"
            written[name] = template
            confs[f"spark.kubernetes.{role}.podTemplateFile"] = str(templates / name)
    for key, value in spec.get("hadoopConf", {}).items():
        confs[f"spark.hadoop.{key}"] = value
    confs.update(spec.get("sparkConf", {}))
    argv = ["spark-submit", "--master", master, "--deploy-mode", "cluster", "--name", app["metadata"]["name"]]
    for key, value in confs.items():
        argv += ["--conf", f"{key}={value}"]
    argv.append(spec["mainApplicationFile"])
    argv += spec.get("arguments", [])
    return argv, written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overlay", help="kustomize overlay folder (deploy/k8s/overlays/NAME)")
    parser.add_argument("job", help="job name (ingest, traces, dedup, grade, tokenize, build)")
    parser.add_argument("--master", required=True, help="k8s://https://API_SERVER")
    parser.add_argument("--templates", default="pod-templates", help="folder for the pod template files")
    args = parser.parse_args(argv)
    templates = Path(args.templates).resolve()
    command, written = spark_submit(find_app(render(args.overlay), args.job), args.master, templates)
    templates.mkdir(parents=True, exist_ok=True)
    for name, template in written.items():
        (templates / name).write_text(yaml.safe_dump(template, sort_keys=False))
    print(shlex.join(command))


if __name__ == "__main__":
    main()
