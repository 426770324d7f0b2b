# syntax=docker/dockerfile:1.7
# The image of every Spark job, driver and executors alike: the official Spark image (non-root, UID 185),
# CPython 3.11 with pinned packages, this package, the job entry files under /opt/rnj/jobs and the GCS
# connector. Build and push from the repository root (deploy/README.md):
#   docker build --platform linux/amd64 -t "$REGISTRY/rnj-spark:$TAG" .
# The trainer has its own image: Dockerfile.train.

# The Spark here is the Spark that runs the jobs: keep it equal to the pyspark the tests run
# (tests/deploy/test_images.py checks the two agree).
ARG SPARK_IMAGE=apache/spark:4.3.0-scala2.13-java21-python3-ubuntu
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.9.26

FROM ${UV_IMAGE} AS uv

# Neither pip's pyspark nor the official images ship the GCS connector; fetch it and check it against the
# checksum Maven Central publishes beside it.
FROM ${SPARK_IMAGE} AS gcs-connector
ARG GCS_CONNECTOR_VERSION=3.1.15
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Still the image's UID 185: /tmp is the one place it can write.
WORKDIR /tmp
RUN url="https://repo1.maven.org/maven2/com/google/cloud/bigdataoss/gcs-connector/${GCS_CONNECTOR_VERSION}/gcs-connector-${GCS_CONNECTOR_VERSION}-shaded.jar" \
    && wget --progress=dot:giga -O gcs-connector.jar "$url" \
    && echo "$(wget -q -O - "$url.sha1")  gcs-connector.jar" | sha1sum --check --strict -

FROM ${SPARK_IMAGE}
# Root only to install; the last USER is the image's own UID 185.
USER 0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# bubblewrap: the traces job's sandbox (pipeline/traces/sandbox.py) runs each unit in new namespaces with it
# when the pod may create them, and falls back to its other layers when not (deploy/README.md).
# Unpinned: Ubuntu removes superseded package versions from its archive; the pinned base image fixes them.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/*

# The base image's python3 is Ubuntu's (3.10 on jammy); the package needs 3.11 (tomllib). uv installs a
# standalone CPython 3.11 whatever the base's Ubuntu release; the pinned uv fixes its patch version.
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_NO_CACHE=1
COPY deploy/docker/requirements-spark.txt /opt/rnj/requirements.txt
RUN uv python install 3.11 \
    && uv venv --python 3.11 /opt/rnj/venv \
    && uv pip install --python /opt/rnj/venv/bin/python --require-hashes -r /opt/rnj/requirements.txt

# The package itself, without dependencies: pyspark and py4j come from /opt/spark/python (spark-submit puts
# them on PYTHONPATH), so the Python side always matches the JVM side of this image.
COPY pyproject.toml README.md /opt/rnj/src/
COPY pipeline /opt/rnj/src/pipeline
COPY jobs /opt/rnj/src/jobs
COPY tokenizer /opt/rnj/src/tokenizer
COPY model /opt/rnj/src/model
COPY rnj /opt/rnj/src/rnj
RUN uv pip install --python /opt/rnj/venv/bin/python --no-deps /opt/rnj/src \
    && rm -rf /opt/rnj/src

# Entry files where the manifests point spark-submit: local:///opt/rnj/jobs/NAME.py
COPY jobs /opt/rnj/jobs

# gs:// for Spark's readers and writers. On Kubernetes Spark mounts its own /opt/spark/conf over the
# image's, so the two filesystem classes are also set in core-site.xml (HADOOP_CONF_DIR is on the classpath
# of drivers and executors) and in every SparkApplication's hadoopConf.
COPY --from=gcs-connector /tmp/gcs-connector.jar /opt/spark/jars/gcs-connector-shaded.jar
COPY deploy/docker/core-site.xml /opt/rnj/hadoop-conf/core-site.xml
COPY deploy/docker/spark-defaults.conf /opt/spark/conf/spark-defaults.conf

# PYTHONSAFEPATH: spark-submit runs /opt/rnj/jobs/NAME.py as a script, which puts /opt/rnj/jobs first on
# sys.path, where jobs/tokenize.py shadows the standard library's tokenize (imported by traceback and
# linecache) and every job dies at start-up. The jobs import the installed package instead.
# NUMBA_CACHE_DIR: the dedup kernels (pipeline/dedup/kernels.py) cache their machine code; site-packages is
# read-only for uid 185, so each pod compiles them once (a few seconds) into a folder it may write.
ENV HADOOP_CONF_DIR=/opt/rnj/hadoop-conf \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    PYTHONSAFEPATH=1 \
    PYSPARK_PYTHON=/opt/rnj/venv/bin/python \
    PYSPARK_DRIVER_PYTHON=/opt/rnj/venv/bin/python \
    PATH=/opt/rnj/venv/bin:${PATH}

USER 185
WORKDIR /opt/spark/work-dir
