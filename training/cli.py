"""Commands of the training package: `emobench data ...` (and, later, train/evaluate/select).

Heavy imports stay inside command bodies so `emobench --help` is quick.
"""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("data")
def data_group() -> None:
    """Generate the built-in sample dataset and inspect dataset folders."""


@data_group.command("sample")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write rafdb/, fer2013/ and custom/ into.")
@click.option("--seed", type=int, default=0, show_default=True, help="Every image is a function of the seed.")
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="Multiply every per-class count (0.1 for a tiny set, 2 for a bigger one).")
def data_sample(out_dir: Path, seed: int, scale: float) -> None:
    """Write the deterministic sample dataset (drawn faces) in the RAF-DB, FER-2013 and custom layouts."""
    from training.sample import SampleConfig, generate_sample

    base = SampleConfig()
    n = lambda v: max(2, round(v * scale))  # noqa: E731
    config = SampleConfig(
        seed=seed,
        rafdb_train_per_class=n(base.rafdb_train_per_class), rafdb_test_per_class=n(base.rafdb_test_per_class),
        fer_train_per_class=n(base.fer_train_per_class), fer_val_per_class=n(base.fer_val_per_class),
        fer_test_per_class=n(base.fer_test_per_class), custom_per_class=n(base.custom_per_class),
    )
    roots = generate_sample(out_dir, config)
    for name, root in roots.items():
        click.echo(f"{name:8s} {root}")


@data_group.command("info")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--kind", default="auto", show_default=True, help="Layout; 'auto' detects it.")
@click.option("--split", default="train", show_default=True, type=click.Choice(["train", "val", "test", "all"]))
@click.option("--classes", default=None, help="Comma-separated task classes (default: all seven).")
@click.option("--skip-bad", is_flag=True, help="Skip and count bad rows and unreadable images instead of failing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def data_info(root: Path, kind: str, split: str, classes: str | None, skip_bad: bool, as_json: bool) -> None:
    """Read a dataset folder and print its layout and per-class counts."""
    from training.datasets import create_dataset

    ds = create_dataset(root, kind=kind, split=split, class_names=classes.split(",") if classes else None,
                        skip_bad=skip_bad, verify_images=skip_bad, allow_empty_classes=True)
    if as_json:
        click.echo(json.dumps({
            "kind": ds.kind, "root": str(ds.root), "split": ds.split, "images": len(ds),
            "class_counts": ds.class_counts(), "excluded": dict(ds.excluded), "skipped": ds.skipped,
        }, indent=2))
        return
    click.echo(f"{ds.kind} at {ds.root} [{ds.split}]: {len(ds)} images")
    for name, count in ds.class_counts().items():
        click.echo(f"  {name:9s} {count:6d}")
    for name, count in sorted(ds.excluded.items()):
        click.echo(f"  ({name} excluded by the task: {count})")
    if ds.skipped:
        click.echo(f"  skipped as bad: {len(ds.skipped)}")
        for msg in ds.skipped[:10]:
            click.echo(f"    {msg}")


COMMANDS = [data_group]
