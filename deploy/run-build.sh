#!/usr/bin/env bash
# Run the whole build on GKE, one SparkApplication after another, each only once the previous committed.
#
#   deploy/run-build.sh OVERLAY [FIRST_JOB]      e.g. deploy/run-build.sh deploy/k8s/overlays/production
#
# The rendered overlay is the one source of truth: the same objects `kubectl apply -k` creates by hand,
# picked one job at a time with the rnj.dev/job label. For each job it replaces the previous run's
# SparkApplication (one object runs once), waits for COMPLETED (the driver exits 0 only after its commit,
# jobs/common.py) and stops at the first FAILED job. With RNJ_OUTPUT=gs://BUCKET/PATH (the build's
# [build] output) it also checks the job's _SUCCESS marker before going on.
# Safe to interrupt and rerun: jobs whose output is committed with the same inputs skip themselves.
# Needs kubectl with access to the cluster (and gcloud for RNJ_OUTPUT); see deploy/README.md.
set -euo pipefail

JOBS=(ingest traces dedup grade tokenize build)
POLL_SECONDS=${RNJ_POLL_SECONDS:-30}

if [[ $# -lt 1 || $# -gt 2 ]]; then
  echo "usage: $0 OVERLAY_DIR [FIRST_JOB]   (jobs: ${JOBS[*]})" >&2
  exit 2
fi
overlay=$1
first=${2:-${JOBS[0]}}
if [[ " ${JOBS[*]} " != *" $first "* ]]; then
  echo "unknown job '$first'; the jobs are, in order: ${JOBS[*]}" >&2
  exit 2
fi

state_of() {
  kubectl get -k "$overlay" -l "rnj.dev/job=$1" --no-headers \
    -o custom-columns=STATE:.status.applicationState.state 2>/dev/null | head -n 1
}

kubectl apply -k "$overlay" -l rnj.dev/component=infra

started=false
for job in "${JOBS[@]}"; do
  [[ $job == "$first" ]] && started=true
  $started || continue
  echo "== $job"
  kubectl delete -k "$overlay" -l "rnj.dev/job=$job" --ignore-not-found --wait=true
  kubectl apply -k "$overlay" -l "rnj.dev/job=$job"
  while true; do
    state=$(state_of "$job")
    case $state in
      COMPLETED) break ;;
      FAILED|SUBMISSION_FAILED)
        echo "$job: $state; see: kubectl describe -k $overlay -l rnj.dev/job=$job, and the driver log" >&2
        exit 1 ;;
    esac
    echo "$job: ${state:-NEW} ($(date -u +%H:%M:%S))"
    sleep "$POLL_SECONDS"
  done
  if [[ -n ${RNJ_OUTPUT:-} ]]; then
    if ! gcloud storage cat "${RNJ_OUTPUT%/}/$job/_SUCCESS" >/dev/null; then
      echo "$job: COMPLETED but ${RNJ_OUTPUT%/}/$job/_SUCCESS is missing: not committed" >&2
      exit 1
    fi
  fi
  echo "$job: committed"
done
echo "build complete"
