"""Training throughput: emobench's training step vs a bare PyTorch loop, and data loading vs the model.

Figures (measured side by side in one run, on this machine's CPU):
1. images/s of ``training.engine.train_step`` (the step ``train()`` runs) vs a hand-written
   ``zero_grad/forward/loss/backward/step`` loop over the same model, batch and data. Target: the
   emobench step costs at most 5% more time (ratio of times <= 1.05).
2. images/s of the real training data loader (sample dataset, augmentation, the default worker count)
   vs the model's training images/s. Target: loading is faster than the model (ratio >= 1), so it
   is not the bottleneck.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from bench.harness import BenchmarkError, Figure, interleaved, main, ratio_figure


def run(*, quick: bool) -> list[Figure]:
    from training import distributed
    from training.config import load_config
    from training.engine import train_step
    from training.loaders import load_splits, make_loader
    from training.models import create_model
    from training.optim import create_optimizer
    from training.sample import SampleConfig, generate_sample

    arch, image_size, batch, repeats = ("test_efficientnet", 64, 16, 6) if quick else ("efficientnet_b0", 96, 16, 8)
    with tempfile.TemporaryDirectory() as tmp:
        per_class = 6 if quick else 24
        roots = generate_sample(Path(tmp), SampleConfig(rafdb_train_per_class=per_class, rafdb_test_per_class=2,
                                                        fer_train_per_class=2, fer_val_per_class=2, fer_test_per_class=2,
                                                        custom_per_class=2))
        config = load_config(phase="phase2", overrides=dict(
            data_root=str(roots["rafdb"]), arch=arch, pretrained=False, image_size=image_size, batch_size=batch,
            mixup_alpha=0.0, grad_clip_norm=None, tensorboard=False, progress=False))
        train_ds, _, _ = load_splits(config, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        loader = make_loader(train_ds, batch_size=batch, shuffle=True, dist=distributed.DistInfo(), seed=0, epoch=0,
                         workers=config.workers, pin_memory=False, drop_last=True)
        x, y = next(iter(loader))

        torch.manual_seed(0)
        model_a = create_model(arch, num_classes=len(config.classes), drop_rate=config.drop_rate).train()
        model_b = create_model(arch, num_classes=len(config.classes), drop_rate=config.drop_rate).train()
        opt_a, opt_b = create_optimizer(model_a, config), create_optimizer(model_b, config)
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        criterion = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

        def emobench_step():
            train_step(model_a, x, y, criterion, opt_a, scaler, config, False)

        def bare_step():
            opt_b.zero_grad(set_to_none=True)
            loss = criterion(model_b(x), y)
            loss.backward()
            opt_b.step()
            float(loss.detach())

        timings = interleaved({"emobench": emobench_step, "bare": bare_step}, warmup=2, repeats=repeats)
        emo, bare = timings["emobench"], timings["bare"]
        model_ips = batch / emo.median_s
        figures = [ratio_figure(
            f"train step time, emobench vs bare loop ({arch} {image_size}px, batch {batch}, CPU)",
            value=emo.median_ms, reference=bare.median_ms, unit="ms/step", reference_label="bare PyTorch loop",
            target_max=1.05, spread=f"emobench {emo.spread_ms()}; bare {bare.spread_ms()}",
            note=f"{model_ips:.1f} vs {batch / bare.median_s:.1f} images/s")]

        # The loader: whole epochs (worker start-up included, as train() re-creates it every epoch).
        passes = 2 if quick else 3
        rates = []
        for epoch in range(passes):
            it_loader = make_loader(train_ds, batch_size=batch, shuffle=True, dist=distributed.DistInfo(), seed=0,
                                epoch=epoch, workers=config.workers, pin_memory=False, drop_last=True)
            t0 = time.perf_counter()
            n = sum(int(xb.shape[0]) for xb, _ in it_loader)
            rates.append(n / (time.perf_counter() - t0))
        if not rates or min(rates) <= 0:
            raise BenchmarkError("the data loader produced no images")
        rates.sort()
        loader_ips = rates[len(rates) // 2]
        figures.append(ratio_figure(
            f"data loading vs model training ({config.workers} workers, augmentation on, {image_size}px)",
            value=loader_ips, reference=model_ips, unit="images/s", reference_label="model training images/s",
            target_min=1.0, spread=f"loader passes {', '.join(f'{r:.0f}' for r in rates)} images/s",
            note=f"{len(train_ds)} images per pass; default workers = {config.workers}"))
        return figures


if __name__ == "__main__":
    main(run)
