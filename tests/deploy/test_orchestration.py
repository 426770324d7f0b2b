"""deploy/run-build.sh (the whole build, one job after another) against a fake kubectl, and deploy/submit.py
(the plain spark-submit alternative) against the rendered overlays."""

from __future__ import annotations

import itertools
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.common import job_parser
from tests.deploy.conftest import BUILD_ORDER, DEPLOY, OVERLAYS, load_deploy_module, of_kind

FAKE_KUBECTL = r'''#!{python}
"""Records each call; a SparkApplication reports RUNNING once, then COMPLETED (or $FAIL_STATE for $FAIL_JOB)."""
import json, os, sys
from pathlib import Path
log = Path(os.environ["FAKE_LOG"]); state = Path(os.environ["FAKE_STATE"])
args = sys.argv[1:]
with log.open("a") as f:
    f.write(json.dumps(args) + "\n")
seen = json.loads(state.read_text()) if state.exists() else {{}}
selector = args[args.index("-l") + 1] if "-l" in args else ""
job = selector.split("=", 1)[1] if selector.startswith("rnj.dev/job=") else None
if args[0] == "get" and job:
    polls = seen.get(job, 0)
    seen[job] = polls + 1
    state.write_text(json.dumps(seen))
    final = os.environ.get("FAIL_STATE", "FAILED") if job == os.environ.get("FAIL_JOB") else "COMPLETED"
    print("RUNNING" if polls == 0 else final)
'''

FAKE_GCLOUD = r'''#!/bin/sh
echo "$@" >> "$FAKE_GCLOUD_LOG"
case "$3" in *"$MISSING_SUCCESS"/_SUCCESS) [ -n "$MISSING_SUCCESS" ] && exit 1 ;; esac
exit 0
'''


def run_build(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    import json

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(FAKE_KUBECTL.format(python=sys.executable))
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(FAKE_GCLOUD)
    for tool in (kubectl, gcloud):
        tool.chmod(0o755)
    log = tmp_path / "kubectl.log"
    full_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(log),
                "FAKE_STATE": str(tmp_path / "state.json"), "FAKE_GCLOUD_LOG": str(tmp_path / "gcloud.log"),
                "RNJ_POLL_SECONDS": "0", **env}
    result = subprocess.run(["bash", str(DEPLOY / "run-build.sh"), *args], env=full_env, check=False,
                            capture_output=True, text=True, timeout=60)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def applied_jobs(calls: list[list[str]]) -> list[str]:
    return [c[c.index("-l") + 1].split("=", 1)[1] for c in calls if c[0] == "apply" and "rnj.dev/job=" in c[-1]]


def test_runs_every_job_in_order_each_after_the_previous_completed(tmp_path):
    result, calls = run_build(tmp_path, "deploy/k8s/overlays/sample")
    assert result.returncode == 0, result.stderr
    assert calls[0] == ["apply", "-k", "deploy/k8s/overlays/sample", "-l", "rnj.dev/component=infra"]
    assert applied_jobs(calls) == list(BUILD_ORDER)
    for earlier, later in itertools.pairwise(BUILD_ORDER):
        completed_at = max(i for i, c in enumerate(calls) if c[0] == "get" and c[c.index("-l") + 1].endswith(f"={earlier}"))
        applied_at = next(i for i, c in enumerate(calls) if c[0] == "apply" and c[-1] == f"rnj.dev/job={later}")
        assert completed_at < applied_at, f"{later} was applied before {earlier} completed"
    for job in BUILD_ORDER:
        delete_at = calls.index(["delete", "-k", "deploy/k8s/overlays/sample", "-l", f"rnj.dev/job={job}",
                                 "--ignore-not-found", "--wait=true"])
        assert calls[delete_at + 1][0] == "apply", "the previous run's object is replaced, not re-applied"
    assert "build complete" in result.stdout


@pytest.mark.parametrize("state", ["FAILED", "SUBMISSION_FAILED"])
def test_stops_at_the_first_failed_job(tmp_path, state):
    result, calls = run_build(tmp_path, "deploy/k8s/overlays/sample", FAIL_JOB="dedup", FAIL_STATE=state)
    assert result.returncode == 1
    assert applied_jobs(calls) == ["ingest", "traces", "dedup"]
    assert f"dedup: {state}" in result.stderr


def test_starts_from_a_given_job(tmp_path):
    result, calls = run_build(tmp_path, "deploy/k8s/overlays/sample", "grade")
    assert result.returncode == 0, result.stderr
    assert applied_jobs(calls) == ["grade", "tokenize", "build"]


def test_rejects_an_unknown_job(tmp_path):
    result, calls = run_build(tmp_path, "deploy/k8s/overlays/sample", "dedupe")
    assert result.returncode == 2 and "unknown job 'dedupe'" in result.stderr and calls == []


def test_checks_the_commit_marker_when_given_the_output(tmp_path):
    result, calls = run_build(tmp_path, "deploy/k8s/overlays/sample", RNJ_OUTPUT="gs://b/build/",
                              MISSING_SUCCESS="traces")
    assert result.returncode == 1 and "gs://b/build/traces/_SUCCESS is missing" in result.stderr
    assert applied_jobs(calls) == ["ingest", "traces"]
    assert (tmp_path / "gcloud.log").read_text().splitlines()[0] == "storage cat gs://b/build/ingest/_SUCCESS"


# --- the plain spark-submit alternative ----------------------------------------------------------------


def confs_of(argv: list[str]) -> dict[str, str]:
    return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--conf")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_spark_submit_carries_the_same_confs(rendered, overlay, tmp_path):
    submit = load_deploy_module("submit")
    for app in of_kind(rendered[overlay], "SparkApplication"):
        job = app["metadata"]["labels"]["rnj.dev/job"]
        argv, templates = submit.spark_submit(app, "k8s://https://10.0.0.1", tmp_path)
        assert argv[:5] == ["spark-submit", "--master", "k8s://https://10.0.0.1", "--deploy-mode", "cluster"]
        confs = confs_of(argv)
        for key, value in app["spec"]["sparkConf"].items():
            assert confs[key] == value
        for key, value in app["spec"]["hadoopConf"].items():
            assert confs[f"spark.hadoop.{key}"] == value
        spec = app["spec"]
        assert confs["spark.kubernetes.container.image"] == spec["image"]
        assert confs["spark.kubernetes.authenticate.driver.serviceAccountName"] == spec["driver"]["serviceAccount"]
        assert confs["spark.kubernetes.authenticate.executor.serviceAccountName"] == spec["executor"]["serviceAccount"]
        assert confs["spark.executor.memoryOverhead"] == spec["executor"]["memoryOverhead"]
        assert confs["spark.kubernetes.executor.node.selector.cloud.google.com/gke-spot"] == "true"
        executor_template = templates[f"{app['metadata']['name']}-executor.yaml"]
        assert executor_template["spec"]["tolerations"] == spec["executor"]["tolerations"]
        main_at = argv.index(spec["mainApplicationFile"])
        job_parser(job, "").parse_args(argv[main_at + 1:])


def test_spark_submit_refuses_fields_it_cannot_translate(rendered, tmp_path):
    submit = load_deploy_module("submit")
    app = of_kind(rendered["sample"], "SparkApplication")[0]
    app = {**app, "spec": {**app["spec"], "volumes": []}}
    with pytest.raises(ValueError, match="volumes"):
        submit.spark_submit(app, "k8s://https://10.0.0.1", tmp_path)


def test_submit_command_line(tmp_path):
    from tests.deploy.conftest import kubectl

    kubectl()
    result = subprocess.run([sys.executable, str(DEPLOY / "submit.py"), str(DEPLOY / "k8s/overlays/production"),
                             "traces", "--master", "k8s://https://10.0.0.1", "--templates", str(tmp_path)],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    argv = shlex.split(result.stdout)
    assert argv[-3:] == ["local:///opt/rnj/jobs/traces.py", "--config", "gs://rnj-data/configs/rnj1.toml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rnj-traces-driver.yaml", "rnj-traces-executor.yaml"]
