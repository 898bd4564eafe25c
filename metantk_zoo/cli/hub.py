"""``metantk-zoo card | push | pull``: genotype cards and sharing runs on the Hugging Face Hub."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ._app import app


@app.command("card")
def card_command(
    source: Annotated[str, typer.Argument(help="Zoo name (metantk_cell5), genotype text/JSON, genotype.json or "
                                               "run dir.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for card.md, card.json, cells.svg, cells.png.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it is a card folder this tool "
                                            "wrote (never an arbitrary folder).")] = False,
) -> None:
    """Write a genotype card: the cell diagram, both notations, cost at 84x84, provenance and results.

    Example: metantk-zoo card metantk_cell5 --out cards/mini5_a
    """
    from ..hub.cards import card_data, write_card
    from ..utils.rundir import check_out_dir, claim_out_dir

    data = card_data(source)  # everything is validated before the first write
    action = check_out_dir(out, "card", overwrite=overwrite)
    claim_out_dir(out, "card", action)
    paths = write_card(data, out)
    for p in paths.values():
        typer.echo(str(p))


@app.command("push")
def push_command(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (model.json + model.safetensors).")],
    repo: Annotated[str, typer.Option("--repo", help="Hub repository ORG/NAME, e.g. ORG/metantk_cell5.rfs_mini.")],
    revision: Annotated[str | None, typer.Option("--revision", help="Branch to commit to (default main).")] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the repository private.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Write the repository to --local-dir, upload "
                                          "nothing.")] = False,
    local_dir: Annotated[Path | None, typer.Option("--local-dir", help="Folder for the repository (implies "
                                                   "--dry-run).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --local-dir if it holds an export this tool "
                                            "made (never an arbitrary folder).")] = False,
    tag: Annotated[str | None, typer.Option("--tag", help="timm tag for a hub/ manifest of this push.")] = None,
    manifest_dir: Annotated[Path | None, typer.Option("--manifest-dir", help="Write the manifest here (needs "
                                                      "--tag).")] = None,
) -> None:
    """Upload a run as a timm Hub repository in one commit (token from HF_TOKEN / `hf auth login`).

    Example: metantk-zoo push runs/cell5 --repo me/metantk_cell5.rfs_mini --dry-run --local-dir /tmp/repo
    """
    from ..hub import push_pull as hub
    from ..pipeline import export_to_folder
    from ..utils.io import write_json

    if (manifest_dir is None) != (tag is None):
        raise typer.BadParameter("--tag and --manifest-dir go together")
    if overwrite and local_dir is None:
        raise typer.BadParameter("--overwrite applies to --local-dir (a push replaces nothing locally)")
    if dry_run or local_dir is not None:
        if local_dir is None:
            raise typer.BadParameter("--dry-run needs --local-dir FOLDER to write the repository to")
        hub._check_repo_id(repo)
        files = export_to_folder(run_dir, local_dir, repo_id=repo, overwrite=overwrite)
        typer.echo(f"wrote {repo} to {local_dir} (not uploaded): {', '.join(files)}")
        return
    result = hub.push(run_dir, repo, revision=revision, private=private)
    typer.echo(f"pushed {result.repo_id} at {result.commit}: {', '.join(result.files)}")
    typer.echo(result.url)
    if tag is not None and manifest_dir is not None:
        path = manifest_dir / f"{result.architecture}.{tag}.json"
        write_json(path, result.manifest(tag))
        typer.echo(f"manifest: {path}")


@app.command("pull")
def pull_command(
    repo: Annotated[str, typer.Argument(help="Hub repository ORG/NAME.")],
    revision: Annotated[str | None, typer.Option("--revision", help="Branch, tag or commit.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Download a repository into the Hugging Face cache and check it (files, architecture, weights).

    Example: metantk-zoo pull me/metantk_cell5.rfs_mini --revision main
    """
    from ..hub import push_pull as hub

    result = hub.pull(repo, revision=revision)
    if as_json:
        typer.echo(json.dumps({"repo_id": result.repo_id, "revision": result.revision, "path": str(result.path),
                               "architecture": result.architecture, "files": list(result.files)}, indent=2))
        return
    typer.echo(f"pulled {result.repo_id}@{result.revision} ({result.architecture}) into {result.path}")
    typer.echo(f'files: {", ".join(result.files)}; load with timm.create_model("hf-hub:{repo}", pretrained=True)')
