"""Commands of the results package (reports) and the end-to-end demo."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo_out"),
              show_default=True, help="Folder for every demo output.")
def demo(out_dir: Path) -> None:
    """Run the whole mission on the built-in sample data (stages not built yet are listed as such)."""
    from training.datasets import create_dataset
    from training.sample import generate_sample

    roots = generate_sample(out_dir / "data")
    for _name, root in roots.items():
        ds = create_dataset(root, split="all", allow_empty_classes=True)
        click.echo(ds.summary())


COMMANDS = [demo]
