#!/usr/bin/env python3
"""CI check: the wheel, installed alone in a fresh venv, runs ingest -> simulate -> collect -> pull from an empty dir.

Run by tests/integration/test_installed_wheel.py (so `make test` runs it), or by hand with the local stack running:

    LABELFLOW_HOME=$PWD/.labelflow uv run python .ci/check_installed_wheel.py

LABELFLOW_HOME names the running stack's home (its stack.json holds the connection values). This interpreter only
builds, installs, seeds the source bucket (boto3) and cleans up; every `labelflow` command under test is the fresh
venv's, run from an empty directory outside the checkout with no connection variables but LABELFLOW_HOME.
LABELFLOW_WHEEL_PYTHON picks the venv's Python (default: this interpreter's X.Y); LABELFLOW_WHEEL_CHECK_KEEP=1 keeps
the temporary folders and everything created in the stack.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# Top-level names the repository keeps but an installed labelflow must not add to site-packages.
FORBIDDEN_TOP_LEVEL = ("flows", "tasks", "integrations", "infra", "expectations")
LABELS = ["positive", "negative", "neutral"]
OBJECTS = 9
# Where labelflow keeps a project's state and versions (as in tasks/spec.py and tasks/ingest.py): cleanup needs them,
# and this script imports no labelflow code, so that only the installed wheel's code is under test.
STATE_BUCKET = "labelflow-state"
STATE_INDEX_PREFIX = "index/state-locations/"
DATASETS_BUCKET = "labelflow-datasets"
MLFLOW_ARTIFACTS = ("labelflow-mlflow", "artifacts/")  # the stack's --artifacts-destination
# Variables that would point the commands anywhere but the stack file (kept in step with integrations/settings.py).
CONNECTION_PREFIXES = (
    "LABELFLOW_S3_",
    "LABEL_STUDIO_",
    "MLFLOW_TRACKING_URI",
    "PREFECT_API_URL",
    "LABELFLOW_LISTENER_",
)
# Variables that could make the fresh venv see the checkout's code or environment.
LEAKY_VARIABLES = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "LABELFLOW_PROJECT_DIR")


class CheckFailed(Exception):
    """One check failed; the message is the one line CI shows."""


def say(message: str) -> None:
    """Progress on stdout, flushed so CI logs interleave correctly."""
    print(message, flush=True)


def find_uv() -> str:
    """uv as `uv run` exports it, else on PATH, else the checkout's own copy (what `make setup` installs)."""
    for candidate in (os.environ.get("UV"), shutil.which("uv"), str(REPO / ".tools" / "bin" / "uv")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise CheckFailed("uv not found: set UV, put uv on PATH or run `make setup`")


def run(
    argv: list[str], what: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run a command; a non-zero exit is a failed check whose output goes to stderr."""
    try:
        result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise CheckFailed(f"{what}: timed out after {timeout:.0f} s") from exc
    if result.returncode != 0:
        sys.stderr.write(f"--- {' '.join(argv)} (cwd {cwd})\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}\n")
        # The last unindented line: an exception's message or labelflow's own error line, not a traceback's caret.
        lines = [line for line in result.stderr.splitlines() if line.strip() and not line[0].isspace()]
        last = lines[-1].strip() if lines else ""
        raise CheckFailed(f"{what}: exit {result.returncode}: {last[:300]} (its output is above)")
    return result


def json_output(result: subprocess.CompletedProcess[str], what: str) -> Any:
    """The JSON document a `--json` command printed on stdout (lines printed before it are shown as a warning)."""
    lines = result.stdout.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith(("{", "["))), 0)
    if start:
        # Not this check's concern, but worth seeing: --json output should be the document alone.
        noise = " | ".join(line.strip() for line in lines[:start])
        say(f"warning: {what} --json printed {start} line(s) before its JSON document: {noise}")
    try:
        return json.loads("".join(lines[start:]))
    except json.JSONDecodeError as exc:
        sys.stderr.write(f"--- stdout of {what}:\n{result.stdout[:3000]}\n")
        raise CheckFailed(f"{what}: stdout is not one JSON document ({exc})") from None


# Run by the fresh venv's python: the exported requirements that apply to it, as {normalized name: version}.
LOCKED_PINS = """
import json, sys
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
pins = {}
for line in open(sys.argv[1], encoding="utf-8"):
    if line.strip() and not line.lstrip().startswith(("#", "-")):
        req = Requirement(line.strip())
        if req.marker is None or req.marker.evaluate():
            pins[canonicalize_name(req.name)] = str(req.specifier).removeprefix("==")
print(json.dumps(pins))
"""


def pins(freeze: str) -> dict[str, str]:
    """`uv pip freeze` output as {normalized name: version}."""
    found: dict[str, str] = {}
    for line in freeze.splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = (part.strip() for part in line.split("==", 1))
            found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return found


def expect(condition: bool, message: str) -> None:
    """Fail the check with this message unless the condition holds."""
    if not condition:
        raise CheckFailed(message)


class Stack:
    """The running stack's connection values and the few raw calls setup and cleanup need (boto3 and REST)."""

    def __init__(self, home: Path) -> None:
        path = home / "stack.json"
        expect(path.is_file(), f"{path} not found: LABELFLOW_HOME must name a running stack's home")
        self.env: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))["env"]
        import boto3  # a labelflow dependency, so present in the dev venv running this script

        self.s3 = boto3.client(
            "s3",
            endpoint_url=self.env["LABELFLOW_S3_ENDPOINT_URL"],
            aws_access_key_id=self.env["LABELFLOW_S3_ACCESS_KEY"],
            aws_secret_access_key=self.env["LABELFLOW_S3_SECRET_KEY"],
            region_name="us-east-1",
        )

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        """Delete every object under a prefix (a missing bucket counts as empty)."""
        deleted = 0
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if keys:
                    self.s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
                    deleted += len(keys)
        except self.s3.exceptions.NoSuchBucket:
            return 0
        return deleted

    def http(self, method: str, url: str, headers: dict[str, str], body: Any = None) -> Any:
        """One JSON request with the standard library (no labelflow code is needed for cleanup)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            url, data=data, method=method, headers={**headers, "Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = response.read()
        return json.loads(payload) if payload else None

    def label_studio(self, method: str, path: str) -> Any:
        """A Label Studio API call with the stack's token."""
        headers = {"Authorization": f"Token {self.env['LABEL_STUDIO_API_KEY']}"}
        return self.http(method, self.env["LABEL_STUDIO_URL"].rstrip("/") + path, headers)

    def mlflow(self, method: str, path: str, body: Any = None) -> Any:
        """An MLflow REST call."""
        return self.http(method, self.env["MLFLOW_TRACKING_URI"].rstrip("/") + "/api/2.0/mlflow/" + path, {}, body)


class WheelCheck:
    """Builds, installs and exercises the wheel; records what it created in the stack so cleanup removes it."""

    wheel: Path  # set by build()
    installed_version: str  # set by inspect()

    def __init__(self, home: Path, tmp: Path) -> None:
        self.home = home
        self.tmp = tmp
        self.uv = find_uv()
        self.stack = Stack(home)
        token = uuid.uuid4().hex[:10]
        self.bucket = f"lf-wheel-{token}-src"
        self.project = f"installed wheel check {token}"
        self.dataset = f"wheel-check-{token}"
        self.token = token
        self.venv = tmp / "venv"
        self.cwd = tmp / "empty-cwd"
        self.spec = tmp / "spec" / "wheel-check.yaml"
        self.version = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
        self.started = time.monotonic()

    def step(self, name: str, action: Callable[[], str]) -> None:
        """Run one check and print `ok: <name>: <detail> (<seconds>)`."""
        begin = time.monotonic()
        try:
            detail = action()
        except CheckFailed as exc:
            raise CheckFailed(f"{name}: {exc}") from None
        say(f"ok: {name}: {detail} ({time.monotonic() - begin:.1f} s)")

    def tool_env(self) -> dict[str, str]:
        """Environment for uv: this process's, without the dev venv's VIRTUAL_ENV."""
        return {k: v for k, v in os.environ.items() if k not in LEAKY_VARIABLES}

    def cli_env(self) -> dict[str, str]:
        """Environment for the installed commands: the stack home and the fresh venv first on PATH, nothing else."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in LEAKY_VARIABLES and not k.startswith(CONNECTION_PREFIXES) and not k.startswith("UV_")
        }
        env["LABELFLOW_HOME"] = str(self.home)
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.venv)
        return env

    def labelflow(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """The installed venv's `labelflow`, run from the empty directory."""
        argv = [str(self.venv / "bin" / "labelflow"), *args]
        return run(argv, f"`labelflow {' '.join(args)}`", self.cwd, self.cli_env(), timeout)

    def installed_python(self, code: str, *args: str, cwd: Path | None = None) -> Any:
        """Run code in the installed venv's python (from the empty directory); it prints one JSON document."""
        argv = [str(self.venv / "bin" / "python"), "-c", code, *args]
        return json_output(run(argv, "installed python", cwd or self.cwd, self.cli_env()), "installed python")

    # --- build and install ---------------------------------------------------------------------------------
    def build(self) -> str:
        """`uv build --wheel` of the checkout into a temporary folder."""
        dist = self.tmp / "dist"
        run([self.uv, "build", "--wheel", "-o", str(dist)], "uv build", REPO, self.tool_env(), 600)
        wheels = list(dist.glob("labelflow-*.whl"))
        expect(len(wheels) == 1, f"expected one wheel in {dist}, found {[w.name for w in wheels]}")
        self.wheel = wheels[0]
        return self.wheel.name

    def install(self) -> str:
        """A venv outside the checkout with the locked dependency versions and the wheel, checked by `uv pip check`."""
        requirements = self.tmp / "requirements.txt"
        exported = run(
            [self.uv, "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes", "--quiet"],
            "uv export",
            REPO,
            self.tool_env(),
            300,
        )
        requirements.write_text(exported.stdout, encoding="utf-8")
        python = os.environ.get("LABELFLOW_WHEEL_PYTHON") or f"{sys.version_info.major}.{sys.version_info.minor}"
        env = self.tool_env()
        run([self.uv, "venv", str(self.venv), "--python", python, "--quiet"], "uv venv", self.tmp, env, 300)
        target = ["--python", str(self.venv / "bin" / "python")]
        install = [self.uv, "pip", "install", *target, "--quiet", "-r", str(requirements), str(self.wheel)]
        run(install, "uv pip install", self.tmp, env, 1200)
        run([self.uv, "pip", "check", *target], "uv pip check", self.tmp, env, 300)
        # Exactly the lock's versions: anything else would mean the wheel's metadata asks for what the lock lacks.
        # The lock's markers are evaluated by the venv's own interpreter (`packaging` is a locked dependency).
        locked = self.installed_python(LOCKED_PINS, str(requirements), cwd=self.tmp)
        frozen = pins(run([self.uv, "pip", "freeze", *target], "uv pip freeze", self.tmp, env, 300).stdout)
        frozen.pop("labelflow", None)
        differ = sorted(f"{n} {frozen[n]} (lock: {locked.get(n)})" for n in frozen if frozen[n] != locked.get(n))
        expect(not differ, f"installed versions differ from uv.lock: {', '.join(differ)}")
        return f"{self.venv}: the wheel + {len(frozen)} packages at their uv.lock versions, python {python}"

    def inspect(self) -> str:
        """site-packages holds labelflow with its package data and no generic top-level module."""
        self.cwd.mkdir()
        facts = self.installed_python(
            "import importlib.metadata, json, sys, sysconfig\n"
            "import labelflow, labelflow.tasks.validate as v\n"
            "from labelflow.layout import PROJECT_DIR\n"
            "print(json.dumps({'purelib': sysconfig.get_paths()['purelib'], 'file': labelflow.__file__,\n"
            "  'tasks': v.__file__, 'expectations': str(getattr(v, 'DEFAULT_EXPECTATIONS_DIR', '')),\n"
            "  'project_dir': str(PROJECT_DIR), 'version': importlib.metadata.version('labelflow'),\n"
            "  'path': sys.path}))"
        )
        site = Path(facts["purelib"])
        package = site / "labelflow"
        clashes = [name for name in FORBIDDEN_TOP_LEVEL if (site / name).exists() or (site / f"{name}.py").exists()]
        expect(not clashes, f"top-level {clashes} in {site}: the wheel must keep them inside labelflow/")
        for key in ("file", "tasks"):
            expect(Path(facts[key]).is_relative_to(package), f"labelflow imported from {facts[key]}, not {package}")
        expect(Path(facts["project_dir"]) == package, f"PROJECT_DIR is {facts['project_dir']}, expected {package}")
        # Where validation reads its built-in suites (the collect step below proves it finds them there too).
        if facts["expectations"]:
            expected = package / "expectations"
            expect(Path(facts["expectations"]) == expected, f"suites read from {facts['expectations']}, not {expected}")
        expect(not any(str(REPO) in entry for entry in facts["path"]), f"sys.path reaches the checkout {REPO}")
        # A .pth file naming the checkout would be an editable install in disguise.
        pth = [p.name for p in site.glob("*.pth") if str(REPO) in p.read_text(encoding="utf-8", errors="replace")]
        expect(not pth, f"{pth} in {site} point into the checkout")
        expect((package / "prefect.yaml").is_file(), f"{package / 'prefect.yaml'} is missing")
        wanted = sorted(p.name for p in (REPO / "expectations").glob("*.json"))
        found = sorted(p.name for p in (package / "expectations").glob("*.json"))
        expect(found == wanted, f"labelflow/expectations/*.json: {found}, expected {wanted}")
        expect(facts["version"] == self.version, f"installed version {facts['version']}, expected {self.version}")
        self.installed_version = facts["version"]
        return (
            f"no top-level {'/'.join(FORBIDDEN_TOP_LEVEL)}; labelflow/prefect.yaml and {len(found)} "
            f"labelflow/expectations/*.json present; version {facts['version']}"
        )

    # --- the pipeline against the running stack ------------------------------------------------------------
    def seed(self) -> str:
        """A fresh bucket of reviews under folders named after their labels (the simulated annotators' truth)."""
        self.stack.s3.create_bucket(Bucket=self.bucket)
        for i in range(OBJECTS):
            label = LABELS[i % len(LABELS)]
            body = f"review {i} of the installed-wheel check: a {label} one".encode()
            self.stack.s3.put_object(Bucket=self.bucket, Key=f"reviews/{label}/{i:03d}.txt", Body=body)
        self.spec.parent.mkdir()
        # Defaults for state and dataset locations: the installed code resolves them exactly as a user's would.
        self.spec.write_text(
            f"name: {self.project}\n"
            f"source: s3://{self.bucket}/reviews/\n"
            "task: text-classification\n"
            f"labels: [{', '.join(LABELS)}]\n"
            "overlap: 3\n"
            "quality: {route_low_agreement: false}\n"
            f"dataset: {{name: {self.dataset}}}\n",
            encoding="utf-8",
        )
        return f"{OBJECTS} objects in s3://{self.bucket}/reviews/<label>/, spec {self.spec}"

    def help(self) -> str:
        """`labelflow --help` lists the pipeline's commands."""
        output = self.labelflow("--help", timeout=120).stdout
        missing = [name for name in ("ingest", "simulate", "collect", "pull") if name not in output]
        expect(not missing, f"commands {missing} missing from --help")
        return "exit 0, lists ingest/simulate/collect/pull"

    def ingest(self) -> str:
        """Every source object becomes a task."""
        summary = json_output(self.labelflow("ingest", str(self.spec), "--json"), "ingest")
        expect(summary["tasks_created"] == OBJECTS, f"tasks_created {summary['tasks_created']}, expected {OBJECTS}")
        return f"{summary['tasks_created']} tasks created ({summary['label_studio_url']})"

    def simulate(self) -> str:
        """Three perfect simulated annotators label every task."""
        result = json_output(
            self.labelflow("simulate", str(self.spec), "--accuracy", "1,1,1", "--seed", "1", "--json"), "simulate"
        )
        created = result["annotations_created"]
        expect(created == 3 * OBJECTS, f"{created} annotations, expected {3 * OBJECTS}")
        return f"{created} annotations on {result['tasks_with_truth']} tasks with a known truth"

    def collect(self) -> str:
        """Collect, validate and publish version 1."""
        summary = json_output(self.labelflow("collect", str(self.spec), "--json"), "collect")
        dataset, validation = summary["dataset"], summary["validation"]
        expect(validation.get("success") is True, f"validation did not pass: {validation}")
        expect(dataset.get("published") and dataset.get("version") == 1, f"not published as version 1: {dataset}")
        expect(dataset["rows"] == OBJECTS, f"{dataset['rows']} rows published, expected {OBJECTS}")
        # The built-in suites come from the package data (a wheel without them would validate with the spec's only).
        if "suites" in validation:
            suites = [name for names in validation["suites"].values() for name in names]
            expect("consensus.json" in suites, f"built-in suites not used: {suites}")
        return (
            f"validation passed ({validation['evaluated']} expectations), {self.dataset} v1 with {dataset['rows']} rows"
        )

    def pull(self) -> str:
        """Pull into a relative folder; every file is present and matches its manifest entry."""
        pulled = json_output(self.labelflow("pull", f"{self.dataset}:latest", "--out", "pulled", "--json"), "pull")
        expect(pulled["version"] == 1, f"pulled version {pulled['version']}, expected 1")
        manifest = pulled["manifest"]
        for entry in manifest["files"]:
            path = self.cwd / "pulled" / entry["path"]
            expect(path.is_file(), f"{path} missing after pull")
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            expect(digest == entry["sha256"], f"{path}: SHA-256 {digest} differs from the manifest's")
        revision = manifest.get("lineage", {}).get("pipeline_revision")
        expect(revision == self.installed_version, f"manifest pipeline_revision {revision!r}")
        return f"{len(manifest['files'])} files under ./pulled match the manifest; pipeline_revision {revision}"

    def revision_tags(self) -> str:
        """The version's MLflow tags name labelflow's own version, not any git HEAD (the cwd is no repository)."""
        listed = json_output(self.labelflow("datasets", self.dataset, "--json", timeout=300), "datasets")
        expect([row["version"] for row in listed] == [1], f"`labelflow datasets` lists {listed}")
        tags = self.installed_python(
            "import json, sys\nfrom labelflow.datasets import dataset_registry\n"
            "print(json.dumps(dataset_registry().resolve(sys.argv[1]).tags))",
            self.dataset,
        )
        expect(
            tags.get("labelflow.version") == self.installed_version,
            f"labelflow.version {tags.get('labelflow.version')!r}",
        )
        expect(
            tags.get("labelflow.git.revision") == "unknown",
            f"labelflow.git.revision {tags.get('labelflow.git.revision')!r}",
        )
        expect("mlflow.source.git.commit" not in tags, "mlflow.source.git.commit is set for an installed labelflow")
        return f"labelflow.version={self.installed_version}, labelflow.git.revision=unknown"

    def cwd_untouched(self) -> str:
        """The commands wrote nothing into the working directory but what was asked (--out pulled)."""
        extra = sorted(p.name for p in self.cwd.iterdir() if p.name != "pulled")
        expect(not extra, f"the commands wrote {extra} into the working directory {self.cwd}")
        return "only ./pulled"

    # --- cleanup -------------------------------------------------------------------------------------------
    def cleanup(self) -> None:
        """Remove the Label Studio project, the MLflow experiment and every object this run created (best effort)."""
        stack = self.stack
        actions: list[tuple[str, Callable[[], Any]]] = [
            ("Label Studio project", self._delete_project),
            ("MLflow experiment", self._delete_experiment),
            ("state", self._delete_state),
            ("dataset", lambda: stack.delete_prefix(DATASETS_BUCKET, f"{self.dataset}/")),
            ("source bucket", self._delete_bucket),
        ]
        for what, action in actions:
            try:
                action()
            except Exception as exc:  # cleanup must not hide the check's own result
                say(f"warning: cleanup of the {what} failed: {exc}")

    def _delete_project(self) -> None:
        query = urllib.parse.urlencode({"title": self.project, "page_size": 100})
        payload = self.stack.label_studio("GET", f"/api/projects?{query}")
        projects = payload.get("results", payload) if isinstance(payload, dict) else payload
        for project in projects:
            if project.get("title") == self.project:
                self.stack.label_studio("DELETE", f"/api/projects/{project['id']}")

    def _delete_experiment(self) -> None:
        query = urllib.parse.urlencode({"experiment_name": f"datasets/{self.dataset}"})
        try:
            experiment = self.stack.mlflow("GET", f"experiments/get-by-name?{query}")["experiment"]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return
            raise
        self.stack.mlflow("POST", "experiments/delete", {"experiment_id": experiment["experiment_id"]})
        if experiment.get("artifact_location", "").startswith("mlflow-artifacts:/"):
            bucket, root = MLFLOW_ARTIFACTS
            self.stack.delete_prefix(bucket, f"{root}{experiment['experiment_id']}/")

    def _delete_state(self) -> None:
        """The project's default state folder and its entry in the state-location index."""
        s3 = self.stack.s3
        try:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=STATE_BUCKET, Prefix=STATE_INDEX_PREFIX)
            keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
        except s3.exceptions.NoSuchBucket:
            return
        for key in keys:
            entry = json.loads(s3.get_object(Bucket=STATE_BUCKET, Key=key)["Body"].read())
            if entry.get("project") != self.project:
                continue
            bucket, _, prefix = str(entry["state"]).removeprefix("s3://").partition("/")
            if bucket == STATE_BUCKET and self.token in prefix:  # never a folder this run did not name
                self.stack.delete_prefix(bucket, prefix)
            s3.delete_object(Bucket=STATE_BUCKET, Key=key)

    def _delete_bucket(self) -> None:
        self.stack.delete_prefix(self.bucket, "")
        self.stack.s3.delete_bucket(Bucket=self.bucket)

    def main(self) -> None:
        """Every check in order; the stack is cleaned up whatever happened."""
        say(f"checking the installed wheel of {REPO} against the stack at {self.home}")
        self.step("wheel built", self.build)
        self.step("fresh venv", self.install)
        self.step("site-packages", self.inspect)
        self.step("labelflow --help", self.help)
        try:
            self.step("source bucket", self.seed)
            self.step("labelflow ingest", self.ingest)
            self.step("labelflow simulate", self.simulate)
            self.step("labelflow collect", self.collect)
            self.step("labelflow pull", self.pull)
            self.step("revision tags", self.revision_tags)
            self.step("working directory", self.cwd_untouched)
        finally:
            if os.environ.get("LABELFLOW_WHEEL_CHECK_KEEP") != "1":
                self.cleanup()
        say(f"installed wheel OK ({time.monotonic() - self.started:.0f} s)")


def main() -> int:
    """Exit 0 when every check passed, 1 with a one-line `FAILED:` message otherwise."""
    home = os.environ.get("LABELFLOW_HOME")
    if not home:
        say("FAILED: LABELFLOW_HOME is not set (the running local stack's home, e.g. $PWD/.labelflow)")
        return 1
    # Outside the checkout, so nothing in it (a .env, a .labelflow, the sources) can be picked up by accident.
    tmp = Path(tempfile.mkdtemp(prefix="labelflow-wheel-check-")).resolve()
    if tmp.is_relative_to(REPO):
        say(f"FAILED: the temporary directory {tmp} is inside the checkout (set TMPDIR elsewhere)")
        shutil.rmtree(tmp, ignore_errors=True)
        return 1
    try:
        WheelCheck(Path(home).resolve(), tmp).main()
    except CheckFailed as exc:
        say(f"FAILED: {exc}")
        return 1
    finally:
        if os.environ.get("LABELFLOW_WHEEL_CHECK_KEEP") == "1":
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
