"""The paper's ablations (Table 1a-1d, Figure 4) at a larger budget than notebook 10 can afford.

    python benchmarks/ablations.py --steps 240 --seeds 0 1 2 --out benchmarks/results
    python benchmarks/ablations.py --epochs 2 --image-size 256 --trunk-steps 0 --seeds 0 1 2   # a GPU

The same runs as the notebook (``retina_edu.ablations``: the same runner, the same cache in
``data/ablations/``), with more steps and seeds. By default every run starts, like the notebook's,
from the pretrained trunk (backbone + FPN of one FL run of ``--trunk-steps`` steps, frozen) and
trains new subnets; ``--finetune`` trains the trunk too, ``--trunk-steps 0`` trains every run
from scratch. The prior-init runs always start from scratch with the paper's SGD.

Writes ``OUT/ablations.csv``, one row per run of this invocation (the configuration, AP..APl,
seconds, device, threads, date, versions; runs already in the cache are read, not trained again,
and keep their original seconds and date), and the figures ``OUT/ablations_*.png``. Notebook 10
reads the CSV and shows it beside its own small-budget numbers.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `retina_edu` (and `benchmarks`) importable
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from retina_edu import ablations as ab  # noqa: E402
from retina_edu.data import CocoDetection, make_shapes_splits  # noqa: E402
from retina_edu.files import write_atomic  # noqa: E402

STUDIES = ("gamma_alpha", "prior", "anchors", "ohem", "figure4")
# The paper's orderings, checked seed by seed: (study, the setting the paper found better, the other)
CLAIMS = (
    ("gamma_alpha", "CE α=0.75", "CE α=0.25"),
    ("gamma_alpha", "CE α=0.75", "CE α=0.5"),
    ("gamma_alpha", "FL γ=0.5 α=0.5", "CE α=0.75"),
    ("gamma_alpha", "FL γ=2 α=0.25", "CE α=0.75"),
    ("gamma_alpha", "FL γ=2 α=0.25", "FL γ=0.5 α=0.5"),
    ("gamma_alpha", "FL γ=2 α=0.25", "FL γ=1 α=0.25"),
    ("gamma_alpha", "FL γ=2 α=0.25", "FL γ=5 α=0.25"),
    ("anchors", "anchors 3×3", "anchors 1×1"),
    ("ohem", "FL γ=2 α=0.25", "OHEM 1:3"),
)


def build_runs(args, num_train: int) -> list[tuple[str, ab.Ablation]]:
    steps = args.steps if args.steps is not None else max(1, round(args.epochs * num_train / args.batch_size))
    common = dict(batch_size=args.batch_size, image_size=args.image_size)
    budget = dict(steps=steps, val_images=args.val_images, preset={"base_lr": args.base_lr, **args.preset}, **common)
    if args.trunk_steps:
        # the trunk's own evaluation uses 100 val images, as the notebook's: the same trunk serves both
        budget["trunk"] = ab.pretrained_trunk(
            steps=args.trunk_steps, preset={"base_lr": args.base_lr}, val_images=100, **common
        )
        budget["freeze_trunk"] = not args.finetune
    runs: list[tuple[str, ab.Ablation]] = []
    if "gamma_alpha" in args.studies or "figure4" in args.studies:
        runs += [("gamma_alpha", a) for a in ab.gamma_alpha_runs(args.seeds, **budget)]
    if "prior" in args.studies:
        runs += [("prior", a) for a in ab.prior_runs(seed=args.seeds[0], steps=args.prior_steps, **common)]
    if "anchors" in args.studies:
        runs += [("anchors", a) for a in ab.anchor_runs(args.seeds, **budget)]
    if "ohem" in args.studies:
        runs += [("ohem", a) for a in ab.ohem_runs(args.seeds, **budget)]
    return runs


def result_row(result: ab.AblationResult, study: str = "") -> dict:
    """One flat CSV row for a result of ``run_ablation``."""
    a = result.ablation
    metrics = result.metrics or {}
    versions = result.versions
    return {
        "study": study,
        "name": result.name,
        "gamma": a.gamma,
        "alpha": "" if a.alpha is None else a.alpha,
        "prior": a.prior_probability,
        "anchors": f"{len(a.anchor_scales)}x{len(a.aspect_ratios)}",
        "loss": a.loss,
        "seed": a.seed,
        "steps": result.steps,
        "batch_size": a.batch_size,
        "image_size": a.image_size,
        "train_images": result.num_train_images,
        "val_images": result.num_val_images,
        "trunk_steps": a.trunk.steps if a.trunk else 0,
        "trunk_frozen": bool(a.trunk) and a.freeze_trunk,
        **{k: round(float(metrics[k]), 4) if k in metrics else "" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")},
        "final_loss": round(result.history["loss"][-1], 4) if result.history["loss"] else "",
        "diverged_at": result.diverged_at if result.diverged_at is not None else "",
        "seconds": round(result.seconds, 1),
        "device": result.device,
        "threads": result.threads,
        "date": result.date,
        "torch": versions["torch"],
        "torchvision": versions["torchvision"],
        "retina_edu": versions["retina_edu"],
        "python": versions["python"],
        "key": result.key,
    }


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Write the CSV atomically (``retina_edu.files``), so a reader never sees half of it."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    return write_atomic(path, write)


def figures(results: list[tuple[str, ab.AblationResult]], out: Path, seed: int = 0) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from retina_edu.viz import plot_ablation_bars, plot_loss_cdfs, plot_loss_curves

    paths = []
    by_study: dict[str, list[ab.AblationResult]] = {}
    for study, r in results:
        by_study.setdefault(study, []).append(r)
    for study, title in (
        ("gamma_alpha", "Table 1a/1b: CE by α, FL by γ"),
        ("anchors", "Table 1c: anchors per location"),
        ("ohem", "Table 1d: OHEM vs FL"),
    ):
        if study not in by_study:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for ax, metric in zip(axes, ("AP", "AP50")):
            stats = ab.summarise(by_study[study], metric)
            plot_ablation_bars(
                {k: v["values"] + [math.nan] * v["diverged"] for k, v in stats.items()},
                ax=ax,
                ylabel=f"val {metric}",
                title=f"{title} ({metric})",
            )
        fig.tight_layout()
        paths.append(out / f"ablations_{study}.png")
        fig.savefig(paths[-1])
        plt.close(fig)
    if "prior" in by_study:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        plot_loss_curves(
            {r.name: r.history["classification"] + ([math.nan] if r.diverged_at else []) for r in by_study["prior"]},
            ax=ax,
            ylabel="classification loss",
            title="Prior init: CE with and without π = 0.01 (paper's SGD)",
        )
        fig.tight_layout()
        paths.append(out / "ablations_prior.png")
        fig.savefig(paths[-1])
        plt.close(fig)
    figure4 = [
        r
        for s, r in results
        if s == "gamma_alpha"
        and r.ablation.seed == seed
        and r.name in ("FL γ=2 α=0.25", "CE α=0.75")
        and r.anchor_logits_path
    ]
    if figure4:
        fig, axes = plt.subplots(len(figure4), 2, figsize=(9, 3.3 * len(figure4)), squeeze=False)
        for row, r in zip(axes, figure4):
            losses = ab.anchor_losses(ab.load_anchor_logits(r))
            for ax, group in zip(row, ("positive", "negative")):
                plot_loss_cdfs(
                    {g: ab.loss_cdf(v[group]) for g, v in losses.items()},
                    ax=ax,
                    title=f"{group} anchors, model trained with {r.name}",
                )
        fig.tight_layout()
        paths.append(out / "ablations_figure4.png")
        fig.savefig(paths[-1])
        plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=None, help="training steps per run (default 240)")
    budget.add_argument("--epochs", type=float, default=None, help="passes over the 2000 training images per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--val-images", type=int, default=200, help="mAP on the first N val images (0: all 500)")
    parser.add_argument("--base-lr", type=float, default=4e-3, help="AdamW learning rate per 16 images")
    parser.add_argument("--trunk-steps", type=int, default=400, help="steps of the pretrained trunk (0: no trunk)")
    parser.add_argument("--finetune", action="store_true", help="train the trunk too (default: frozen)")
    parser.add_argument("--prior-steps", type=int, default=40, help="steps of the prior-init runs")
    parser.add_argument("--studies", nargs="+", choices=STUDIES, default=list(STUDIES))
    parser.add_argument(
        "--preset",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="other Preset fields for the sweep, e.g. base_lr=0.004 backbone=resnet34",
    )
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "shapes")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "data" / "ablations")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--progress", action="store_true", help="a progress bar per training run")
    args = parser.parse_args(argv)
    if args.steps is None and args.epochs is None:
        args.steps = 240
    args.val_images = args.val_images or None
    preset = {}
    for item in args.preset:
        key, _, value = item.partition("=")
        try:
            preset[key] = eval(value, {}, {})  # numbers, tuples, None, True
        except Exception:
            preset[key] = value
    args.preset = preset

    splits = make_shapes_splits(args.data, progress=False)
    train_data = CocoDetection.from_folder(splits["train"])
    val_data = CocoDetection.from_folder(splits["val"])
    runs = build_runs(args, len(train_data))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"{len(runs)} runs, cache {args.cache_dir}, device {device}", flush=True)

    results, rows, start = [], [], time.perf_counter()
    for i, (study, ablation) in enumerate(runs, 1):
        val = None if study == "prior" else val_data  # the prior runs are about the loss curve only
        r = ab.run_ablation(
            ablation, train_data, val, cache_dir=args.cache_dir, device=args.device, progress=args.progress
        )
        results.append((study, r))
        rows.append(result_row(r, study))
        if r.metrics:
            ap = f"AP {r.metrics['AP']:.3f} AP50 {r.metrics['AP50']:.3f}"
        elif r.diverged_at:
            ap = f"diverged at step {r.diverged_at}"
        else:
            ap = f"class loss {r.history['classification'][0]:.3g} -> {r.history['classification'][-1]:.3g}"
        took = "cached" if r.cached else f"{r.seconds:.0f} s"
        print(
            f"[{i:2d}/{len(runs)}] {study:11s} {r.name:<22s} seed {ablation.seed}  {r.steps:4d} steps  {ap}  {took}",
            flush=True,
        )
    path = write_rows(args.out / "ablations.csv", rows)
    print(f"\n{path} ({len(rows)} rows) in {time.perf_counter() - start:.0f} s")
    for study in dict.fromkeys(s for s, _ in results if s != "prior"):
        stats = ab.summarise([r for s, r in results if s == study])
        # Table 1d is ResNet-101 at 800 px: its numbers go beside the OHEM study only
        paper = ab.PAPER_TABLE1D if study == "ohem" else ab.PAPER_TABLE1
        print(f"\n{study}: val AP, mean ± std over seeds (n); the paper's COCO AP")
        for name, s in stats.items():
            diverged = f", {s['diverged']} diverged" if s["diverged"] else ""
            print(f"  {name:<22s} {s['mean']:.3f} ± {s['std']:.3f} ({s['n']}{diverged})  paper {paper.get(name, '?')}")
    print("\nseed by seed, the paper's order (first > second):")
    for study, better, worse in CLAIMS:
        runs = [r for s, r in results if s == study]
        if not any(r.name == better for r in runs) or not any(r.name == worse for r in runs):
            continue
        c = ab.paired_comparison(runs, better, worse)
        print(f"  {better:>15} > {worse:<15} mean {c['mean']:+.4f}, spread {c['spread']:.4f}: {c['verdict']}")
    for p in figures(results, args.out, seed=args.seeds[0]):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
