"""Teammates share results through a DVC remote on S3, tested against a real S3 server (moto) on 127.0.0.1.

What README's "Working as a team" says, step by step: A pushes, B clones and pulls byte-identical outputs,
B's `dvc repro` recomputes nothing, a changed train.lr reruns only train and after, wrong credentials fail
clearly without touching B's workspace, and an interrupted push completes on the next one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from a2i_core.offline.workspace import tool_env
from tests.helpers import dvc, free_port, lighten, run

pytestmark = pytest.mark.e2e
BUCKET = "a2i-team"


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server with IAM authentication on, a user with full access, and an empty bucket."""
    boto3 = pytest.importorskip("boto3")
    port = free_port()
    # The first 3 requests (creating the user, its policy and key) are allowed unsigned; every later one is checked.
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="bootstrap",
                           aws_secret_access_key="bootstrap")
        iam.create_user(UserName="a2i")
        iam.put_user_policy(UserName="a2i", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="a2i")["AccessKey"]
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key["AccessKeyId"],
                              aws_secret_access_key=key["SecretAccessKey"])
        client.create_bucket(Bucket=BUCKET)  # DVC does not create buckets
        yield {"url": url, "key": key["AccessKeyId"], "secret": key["SecretAccessKey"], "client": client}
    finally:
        server.terminate()
        server.wait(timeout=10)


def _env() -> dict[str, str]:
    # Recent botocore checksums are more than S3 emulators accept; no ambient AWS credentials may leak in.
    env = {k: v for k, v in tool_env().items() if not k.startswith("AWS_")}
    return {**env, "AWS_REQUEST_CHECKSUM_CALCULATION": "WHEN_REQUIRED",
            "AWS_RESPONSE_CHECKSUM_VALIDATION": "WHEN_REQUIRED", "AWS_EC2_METADATA_DISABLED": "true"}


def _run(cwd: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    return run(cwd, *args, env=_env(), ok=ok)


def _dvc(cwd: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    return dvc(cwd, *args, env=_env(), ok=ok)


def _connect(repo: Path, s3: dict, secret: str | None = None) -> None:
    """Endpoint and credentials go to .dvc/config.local: never into git."""
    _dvc(repo, "remote", "modify", "--local", "team", "endpointurl", s3["url"])
    _dvc(repo, "remote", "modify", "--local", "team", "access_key_id", s3["key"])
    _dvc(repo, "remote", "modify", "--local", "team", "secret_access_key", secret or s3["secret"])


def _tracked_files(repo: Path) -> dict[str, str]:
    """sha256 of every file under the outputs dvc.lock records."""
    lock = YAML(typ="safe", pure=True).load((repo / "dvc.lock").read_text())
    outs = {out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])}
    digests = {}
    for out in sorted(outs):
        path = repo / out
        for f in sorted([path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]):
            digests[str(f.relative_to(repo))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return digests


def _ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w@.-]+)'", output)


def test_team_workflow_through_s3(demo_workspace, s3, tmp_path):
    # Repo A: the team member who ran the offline pipeline (a clone of the demo run, its outputs from cache).
    a = tmp_path / "a"
    _run(tmp_path, "git", "clone", "-q", str(demo_workspace[0]), str(a))
    _dvc(a, "cache", "dir", "--local", str(demo_workspace[0] / ".dvc" / "cache"))
    _dvc(a, "checkout")
    assert _ran(_dvc(a, "repro").stdout) == ["sources"]  # always run: only it can tell if local files changed
    _dvc(a, "remote", "add", "-d", "team", f"s3://{BUCKET}/a2i")
    _connect(a, s3)
    _run(a, "git", "commit", "-qam", "Add the team's DVC remote")
    assert s3["secret"] not in (a / ".dvc" / "config").read_text()  # credentials stay out of git

    # 6. A push killed midway leaves only whole objects; the next push completes it.
    push = subprocess.Popen([sys.executable, "-m", "dvc", "push", "-j", "1"], cwd=a, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and push.poll() is None:
        if s3["client"].list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) >= 5:
            break
        time.sleep(0.05)
    assert push.poll() is None, "dvc push finished before it could be interrupted"
    os.kill(push.pid, signal.SIGKILL)
    push.wait()
    partial = s3["client"].list_objects_v2(Bucket=BUCKET, MaxKeys=1000)["KeyCount"]
    assert "new:" in _dvc(a, "status", "--cloud").stdout  # DVC sees what the remote still lacks
    _dvc(a, "push")
    complete = s3["client"].list_objects_v2(Bucket=BUCKET, MaxKeys=1000)["KeyCount"]
    assert 5 <= partial < complete
    assert "in sync" in _dvc(a, "status", "--cloud").stdout

    # 2. B clones A and pulls: byte-identical outputs, clean status.
    b = tmp_path / "b"
    _run(tmp_path, "git", "clone", "-q", str(a), str(b))
    _connect(b, s3)
    assert not (b / ".dvc" / "cache").exists()  # B starts with nothing but git
    _dvc(b, "pull")
    assert _tracked_files(b) == _tracked_files(a)
    assert _dvc(b, "status").stdout.split() == ["sources:", "always", "changed"]

    # 3. Nothing to recompute.
    assert _ran(_dvc(b, "repro").stdout) == ["sources"]

    # 5. Wrong credentials: one clear error, B's workspace untouched.
    before = _tracked_files(b)
    _connect(b, s3, secret="not-the-secret")
    missing = next(p for p in (b / ".dvc" / "cache" / "files" / "md5").rglob("*") if p.is_file())
    missing.unlink()  # so the pull must ask the server
    failed = _dvc(b, "pull", "--force", ok=False)
    assert failed.returncode != 0
    message = failed.stdout + failed.stderr
    assert "ERROR" in message and re.search(r"SignatureDoesNotMatch|403|Forbidden|credentials", message)
    assert _tracked_files(b) == before
    _connect(b, s3)
    _dvc(b, "pull")  # with the right key the cache is whole again
    assert _dvc(b, "status").stdout.split() == ["sources:", "always", "changed"]

    # 4. A changed train.lr reruns train and the stages after it, nothing before.
    params = YAML(typ="safe", pure=True).load((b / "params.yaml").read_text())
    params["train"]["lr"] = params["train"]["lr"] / 2
    lighten(params)  # those stages rerun either way; what they measure is not this test's
    with open(b / "params.yaml", "w") as f:
        YAML().dump(params, f)
    assert _ran(_dvc(b, "repro").stdout) == ["check_params", "sources", "train", "evaluate", "label_head", "render",
                                             "image_eval", "timeline", "mixtures"]
