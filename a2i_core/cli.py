"""The ``a2i`` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from a2i_core import workspace as ws
from a2i_core.errors import A2IError

app = typer.Typer(help="a2i: turn sound into pictures with a frozen Stable Diffusion 3.", no_args_is_help=True,
                  add_completion=False)


@app.callback()
def main() -> None:
    """Sound to pictures: VGGish audio embeddings mapped onto SD3's text conditioning."""


@app.command()
def demo(
    workspace: Annotated[Path, typer.Option(help="Where the demo's own DVC repository lives (git-ignored).")] = Path(
        ".demo"),
    profile: Annotated[Path | None, typer.Option(help="Params file [default: profiles/offline.yaml].")] = None,
) -> None:
    """Run the whole pipeline on the offline profile (synthetic sounds, tiny models, CPU) with `dvc repro`."""
    try:
        root = ws.project_root()
        path = ws.prepare(workspace, profile or root / "profiles" / "offline.yaml", root)
        typer.echo(f"workspace: {path}  (its own git + DVC repo; the project's params.yaml is untouched)")
        ws.run(ws.dvc("repro"), path)
        ws.commit(path, "a2i demo: dvc repro")
    except A2IError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    metrics = json.loads((path / "metrics" / "eval.json").read_text())
    typer.echo("\nHeld-out retrieval of the true prompt among all class prompts:")
    typer.echo(f"  top-1 {metrics['top1']:.3f} (chance {metrics['chance_top1']:.3f})   "
               f"top-5 {metrics['top5']:.3f}   cosine {metrics['cosine']:.3f}   mse {metrics['mse']:.4f}")
    typer.echo(f"\nmetrics: {path / 'metrics'}/*.json   (cd {path} && dvc metrics show)")
    typer.echo(f"images:  {path / 'metrics' / 'images'}/   (cd {path} && dvc plots show)")
    typer.echo(f"try a variant: cd {path} && dvc exp run -S train.lr=0.0003 && dvc exp show")


if __name__ == "__main__":
    app()
