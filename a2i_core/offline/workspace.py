"""A self-contained DVC workspace for a profile (the demo, the end-to-end test).

It holds a copy of the pipeline's code; as its ``params.yaml``, the project's ``params.yaml`` with the profile (an
overlay: only the keys that differ) merged in; and as its ``dvc.yaml``, the project's with the offline demo's own
audio_encoder and encoders stages (``stages/offline.dvc.yaml``: they build tiny models) in place of the real ones; all
in its own git repository, so running it never edits the project's ``params.yaml``, ``dvc.yaml`` or ``dvc.lock``.
Stages run as ``python -m stages.NAME`` from the workspace root, so the code DVC hashes is the code that runs.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from ruamel.yaml import YAML

from a2i_core.core.errors import A2IError
from a2i_core.core.files import project_root
from a2i_core.core.params import merge_overlay, params_from_dict, read_yaml

PIPELINE_FILES = ("dvc.yaml", "stages", "a2i_core")
OFFLINE_STAGES = Path("stages") / "offline.dvc.yaml"  # replaces stages of dvc.yaml by name
log = logging.getLogger(__name__)
EDITED_PARAMS = "params.yaml.edited"  # a workspace's params.yaml as it was before a new `a2i demo` rewrote it


def _copy(src: Path, dest: Path) -> None:
    if src.is_dir():
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        shutil.copy2(src, dest)


def tool_env() -> dict[str, str]:
    """The environment for dvc and git: this interpreter's bin first, so stages run with our packages."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("GIT_AUTHOR_NAME", "a2i")
    env.setdefault("GIT_AUTHOR_EMAIL", "a2i@localhost")
    env.setdefault("GIT_COMMITTER_NAME", env["GIT_AUTHOR_NAME"])
    env.setdefault("GIT_COMMITTER_EMAIL", env["GIT_AUTHOR_EMAIL"])
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def run(args: list[str], cwd: Path, capture: bool = False) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=tool_env(), text=True,
                            stdout=subprocess.PIPE if capture else None,
                            stderr=subprocess.STDOUT if capture else None)
    if result.returncode != 0:
        tail = (result.stdout or "").strip().splitlines()[-20:] if capture else []
        raise A2IError(f"`{' '.join(args)}` failed in {cwd} (exit {result.returncode})" +
                       ("\n" + "\n".join(tail) if tail else ""))
    return result


PUSH_HINT = "Use `dvc push`"  # DVC's closing line after a repro that ran something


def repro(workspace: Path) -> None:
    """`dvc repro` in ``workspace``, its output shown as it comes, less DVC's closing "Use `dvc push` to send your
    updates to remote storage" where the workspace has no remote to push to (a new demo has none)."""
    remotes = run(dvc("remote", "list"), workspace, capture=True).stdout.strip()
    # Unbuffered: DVC's and the stages' lines reach the terminal as they are written, not when a buffer fills.
    with subprocess.Popen(dvc("repro"), cwd=workspace, env={**tool_env(), "PYTHONUNBUFFERED": "1"}, text=True,
                          stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if remotes or not line.startswith(PUSH_HINT):
                sys.stdout.write(line)
                sys.stdout.flush()
    if process.returncode != 0:
        raise A2IError(f"`dvc repro` failed in {workspace} (exit {process.returncode})")


def dvc(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def write_profile(base: Path, profiles: Sequence[Path], out: Path) -> None:
    """``base`` (params.yaml) with each overlay of ``profiles`` merged in, in order, validated, then written to
    ``out``."""
    merged = read_yaml(base)
    for profile in profiles:
        merged = merge_overlay(merged, read_yaml(profile))
    names = " + ".join(str(p) for p in profiles)
    params_from_dict(merged, source=f"{base} + {names}")
    yaml = YAML()
    yaml.width = 4096  # no folded URLs
    with open(out, "w") as f:
        f.write(f"# {base.name} with the overlays {', '.join(p.name for p in profiles)} merged in; a new `a2i demo` "
                "writes it anew.\n")
        yaml.dump(merged, f)


def write_pipeline(base: Path, offline: Path, out: Path) -> None:
    """``base`` (dvc.yaml) with each stage that ``offline`` defines replaced by its offline version, written to
    ``out`` with dvc.yaml's own comments."""
    yaml = YAML()  # round trip: the story's comments stay
    yaml.width = 4096
    pipeline = yaml.load(base.read_text())
    replacements = YAML(typ="safe", pure=True).load(offline.read_text())["stages"]
    unknown = sorted(set(replacements) - set(pipeline["stages"]))
    if unknown:
        raise A2IError(f"{offline}: replaces stages that {base.name} does not have: {', '.join(unknown)}")
    for name, stage in replacements.items():
        pipeline["stages"][name] = stage
    with open(out, "w") as f:
        f.write(f"# {base.name} with the offline demo's {', '.join(replacements)} from {OFFLINE_STAGES.as_posix()}; "
                "a new `a2i demo` writes it anew.\n")
        yaml.dump(pipeline, f)


def find_profile(name: str | Path, root: Path) -> Path:
    """A profile file: the path itself, or a name of the project's own (``offline`` for profiles/offline.yaml)."""
    path = Path(name)
    if path.is_file():
        return path
    own = root / "profiles" / f"{name}.yaml"
    if path.parent == Path(".") and own.is_file():
        return own
    known = ", ".join(sorted(p.stem for p in (root / "profiles").glob("*.yaml")))
    raise A2IError(f"{name}: no such params profile (a YAML file, or one of the project's: {known})")


def prepare(workspace: str | Path, profiles: Sequence[str | Path], root: Path | None = None) -> Path:
    """Create or refresh ``workspace`` from the project at ``root`` with ``profiles`` merged into its params.yaml;
    commit it."""
    root = root or project_root()
    workspace = Path(workspace).resolve()
    found = [find_profile(p, root) for p in profiles]
    workspace.mkdir(parents=True, exist_ok=True)
    for name in PIPELINE_FILES:
        if name != "dvc.yaml":
            _copy(root / name, workspace / name)
    write_pipeline(root / "dvc.yaml", root / OFFLINE_STAGES, workspace / "dvc.yaml")
    params = workspace / "params.yaml"
    before = params.read_text() if params.is_file() else None
    write_profile(root / "params.yaml", found, params)
    if before is not None and before != params.read_text():
        # A rerun writes params.yaml anew from the profiles: edits made there (or by `dvc exp run`) would be lost.
        kept = params.with_name(EDITED_PARAMS)
        kept.write_text(before)
        log.warning("%s differed from a fresh merge of the profiles (your edits, or a changed profile): it is now "
                    "the fresh merge, and the old one is kept in %s", params, kept)
    # DVC git-ignores the outputs it tracks; the render stages' staging folders are not among them.
    # `dvc plots show` writes its HTML into dvc_plots/: a view, not a result.
    ignored = ["__pycache__/", "metrics/.images.tmp/", "metrics/.images_reference.tmp/", "metrics/.timelines.tmp/",
               "metrics/.timelines.frames/", "dvc_plots/"]
    (workspace / ".gitignore").write_text("".join(f"{line}\n" for line in ignored))
    if not (workspace / ".git").exists():
        run(["git", "init", "-q", "-b", "main"], workspace)
    if not (workspace / ".dvc").exists():
        run(dvc("init", "-q"), workspace)
        run(dvc("config", "core.autostage", "true"), workspace)
    commit(workspace, "a2i workspace: pipeline code and params")
    return workspace


# What a2i writes into a workspace, DVC's files included; anything else there (a cookies file, notes) is the
# user's, and `git add -A` would commit it.
MANAGED = (*PIPELINE_FILES, "params.yaml", "dvc.lock", ".gitignore", ".dvcignore", ".dvc/config", ".dvc/.gitignore",
           "metrics")


def commit(workspace: Path, message: str) -> None:
    run(["git", "add", "-u"], workspace)  # what is tracked was added here, so it is a2i's
    run(["git", "add", "-A", "--", *[name for name in MANAGED if (workspace / name).exists()]], workspace)
    # DVC writes a .gitignore beside each output it tracks (data/, models/, ...).
    ignores = run(["git", "ls-files", "-z", "--others", "--exclude-standard", "--", ":(glob)**/.gitignore"],
                  workspace, capture=True).stdout.split("\0")
    if any(ignores):
        run(["git", "add", "--", *filter(None, ignores)], workspace)
    if run(["git", "diff", "--cached", "--name-only"], workspace, capture=True).stdout.strip():
        run(["git", "commit", "-q", "-m", message], workspace)
