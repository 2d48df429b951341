"""The `sgm bench` workloads W1-W3 in PyTorch, for the ratios `sgm bench --compare-pytorch` prints.

Same networks (layer by layer), same losses (multi-scale DSM, sigma per sample, lambda = sigma^2),
same Adam, same annealed Langevin update, same batch sizes, step counts, thread count and device
(`--device`, the one sgm ran on). Each workload runs as eager PyTorch and as the faster variants a
performance-minded user would write (VARIANTS below). Prints one JSON line per workload and
variant with the same keys as `sgm bench`, plus "variant".
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

LEVELS = 10


class ConditionedMlp(nn.Module):
    """W1: 2-128-128-2, softplus, output / sigma."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 128), nn.Softplus(), nn.Linear(128, 128), nn.Softplus(), nn.Linear(128, 2))

    def forward(self, x, sigma):
        return self.net(x) / sigma[:, None]


class ConditionedSimpleResnet(nn.Module):
    """W2: homework 5's network (1 -> 1, 64 filters, 4 blocks, 10 embeddings)."""

    def __init__(self, sigmas, f=64, blocks=4):
        super().__init__()
        self.register_buffer("sigmas", sigmas)
        self.first = nn.Conv2d(1, f, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(f, f, 1), nn.ReLU(), nn.Conv2d(f, f, 3, padding=1), nn.ReLU(), nn.Conv2d(f, f, 1))
            for _ in range(blocks))
        self.emb = nn.ModuleList(nn.Embedding(len(sigmas), f) for _ in range(blocks))
        self.last = nn.Conv2d(f, 1, 3, padding=1)

    def forward(self, x, sigma):
        # index of the level nearest in log sigma, as sgm's Sigmas::index_of
        y = (sigma.log()[:, None] - self.sigmas.log()[None, :]).abs().argmin(1)
        h = F.relu(self.first(x))
        for block, emb in zip(self.blocks, self.emb):
            h = h + block(h + emb(y)[:, :, None, None])
        return self.last(F.relu(h))


class BlogUnet(nn.Module):
    """W3: the blog's U-Net, 16 start filters, sigma as a second input channel, ELU."""

    def __init__(self, f=16):
        super().__init__()
        c = lambda i, o: nn.Conv2d(i, o, 3, padding=1)
        self.d1 = nn.ModuleList([c(2, f), c(f, f)])
        self.d2 = nn.ModuleList([c(f, 2 * f), c(2 * f, 2 * f)])
        self.m = nn.ModuleList([c(2 * f, 4 * f), c(4 * f, 4 * f)])
        self.up2 = nn.ConvTranspose2d(4 * f, 2 * f, 3, stride=2, padding=1, output_padding=1)
        self.u2 = nn.ModuleList([c(4 * f, 2 * f), c(2 * f, 2 * f)])
        self.up1 = nn.ConvTranspose2d(2 * f, f, 3, stride=2, padding=1, output_padding=1)
        self.u1 = nn.ModuleList([c(2 * f, f), c(f, f)])
        self.out = nn.Conv2d(f, 1, 1)

    @staticmethod
    def pair(convs, h):
        return F.elu(convs[1](F.elu(convs[0](h))))

    def forward(self, x, sigma):
        h = torch.cat([x, torch.ones_like(x) * sigma[:, None, None, None]], 1)
        c1 = self.pair(self.d1, h)
        c2 = self.pair(self.d2, F.avg_pool2d(c1, 2))
        m = self.pair(self.m, F.avg_pool2d(c2, 2))
        u2 = self.pair(self.u2, torch.cat([self.up2(m), c2], 1))
        u1 = self.pair(self.u1, torch.cat([self.up1(u2), c1], 1))
        return self.out(u1)


def dsm_loss(net, x, sigmas):
    idx = torch.randint(0, len(sigmas), (x.shape[0],), device=x.device)
    sigma = sigmas[idx]
    s = sigma.view(-1, *([1] * (x.dim() - 1)))
    z = torch.randn_like(x)
    pred = net(x + z * s, sigma)
    per = s.square() * (pred + z / s).square()
    return per.flatten(1).sum(1).mean()


def langevin_step(net, x, sig, alpha):
    """One annealed-Langevin update at one level (alpha = eps sigma^2 / sigma_L^2)."""
    return x + 0.5 * alpha * net(x, sig) + math.sqrt(alpha) * torch.randn_like(x)


WORKLOADS = {
    "W1": dict(batch=512, sampler_batch=10_000, steps=1000, evals=200, shape=(2,)),
    "W2": dict(batch=128, sampler_batch=100, steps=20, evals=40, shape=(1, 28, 28)),
    "W3": dict(batch=120, sampler_batch=100, steps=60, evals=100, shape=(1, 28, 28)),
}

# What a performance-minded user would write, beside plain eager PyTorch:
# - fused-adam: torch.optim.Adam(fused=True), one kernel for all parameters (CPU and CUDA);
# - cuda-graph: the whole training step (loss, backward, capturable fused Adam) captured once
#   in a CUDA graph and replayed, each replay fed a new batch; the sampler with one graph per
#   annealing level (CUDA only; each replay advances the generator, so every step draws new
#   noise);
# - cuda-graph-bf16: the same under bf16 autocast with channels_last (convolutional networks).
VARIANTS = {
    "cpu": ["eager", "fused-adam"],
    "cuda": ["eager", "fused-adam", "cuda-graph", "cuda-graph-bf16"],
}


class Timer:
    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.t0


def train_rate(net, batch, sigmas, variant, steps):
    fused = variant != "eager"
    graph = variant.startswith("cuda-graph")
    bf16 = variant.endswith("bf16")
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=fused, capturable=graph)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = dsm_loss(net, batch, sigmas)
        loss.backward()
        opt.step()
        return loss

    if not graph:
        for _ in range(3):
            step().item()
        with Timer(batch.device) as t:
            for _ in range(steps):
                step().item()
        return steps / t.seconds
    # A training step takes a new batch: as in PyTorch's own whole-network capture example
    # (CUDA semantics, "CUDA Graphs"), each replay is fed one by copying into the graph's static
    # input, here gathered from a device-resident data set of `steps` batches in a random order
    # (one kernel, `index_select(out=)`), as `sgm train`'s graphed step is fed. (It may give
    # `batch` contiguous strides; with one channel those address the same bytes as channels_last.)
    b = batch.shape[0]
    data = torch.randn(steps * b, *batch.shape[1:], device=batch.device)
    data = data.contiguous(memory_format=torch.channels_last) if bf16 else data
    perm = torch.randperm(steps * b, device=batch.device)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(g):
        static_loss = step()
    with Timer(batch.device) as t:
        for i in range(steps):
            torch.index_select(data, 0, perm[i * b : (i + 1) * b], out=batch)
            g.replay()
    if not torch.isfinite(static_loss).item():
        raise SystemExit(f"{variant}: the captured training step gave a loss of {static_loss.item()}")
    return steps / t.seconds


@torch.no_grad()
def sampler_rate(net, sigmas, x0, variant, per_level, eps=1e-6):
    graph = variant.startswith("cuda-graph")
    bf16 = variant.endswith("bf16")
    sig_l = sigmas[-1].item()
    levels = [(torch.full((x0.shape[0],), s, device=x0.device), eps * s**2 / sig_l**2) for s in sigmas.tolist()]

    def update(x, sig, alpha):
        with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=bf16):
            return langevin_step(net, x, sig, alpha).float()

    if not graph:
        def run(x, k):
            for sig, alpha in levels:
                for _ in range(k):
                    x = update(x, sig, alpha)
            return x

        run(x0, 1)
        with Timer(x0.device) as t:
            run(x0, per_level)
        return per_level * len(levels) / t.seconds, None
    x = x0.clone()
    graphs = []
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for sig, alpha in levels:
            x.copy_(update(x, sig, alpha))
    torch.cuda.current_stream().wait_stream(side)
    # The captures are timed apart: sgm's sampler captures its graphs within the call it is
    # timed by, so the rate with them included is the closer figure to sgm's for one call (it
    # still leaves out the eager step per level above, which sgm's call includes).
    with Timer(x0.device) as captures:
        for sig, alpha in levels:
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                x.copy_(update(x, sig, alpha))
            graphs.append(g)
    x.copy_(x0)
    with Timer(x0.device) as t:
        for g in graphs:
            for _ in range(per_level):
                g.replay()
    return per_level * len(levels) / t.seconds, captures.seconds


def run(name, w, scale, device, variant):
    torch.manual_seed(0)
    n = lambda k: max(LEVELS, round(k * scale))
    sigmas = torch.tensor([1.0 * (0.01 / 1.0) ** (i / (LEVELS - 1)) for i in range(LEVELS)], device=device)
    net = {"W1": ConditionedMlp, "W2": lambda: ConditionedSimpleResnet(sigmas), "W3": BlogUnet}[name]().to(device)
    batch = torch.randn(w["batch"], *w["shape"], device=device)
    x0 = torch.randn(w["sampler_batch"], *w["shape"], device=device)
    if variant.endswith("bf16"):
        net = net.to(memory_format=torch.channels_last)
        batch = batch.contiguous(memory_format=torch.channels_last)
        x0 = x0.contiguous(memory_format=torch.channels_last)
    steps = n(w["steps"])
    per_level = n(w["evals"]) // LEVELS
    train = train_rate(net, batch, sigmas, variant, steps)
    evals, captures = sampler_rate(net, sigmas, x0, variant, per_level)
    return {
        "workload": name,
        "impl": "pytorch",
        "variant": variant,
        "version": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "train_batch": w["batch"],
        "train_steps": steps,
        "train_steps_per_s": train,
        "train_batches": "fed" if variant.startswith("cuda-graph") else "fixed",
        "sampler_batch": w["sampler_batch"],
        "sampler_evals": per_level * LEVELS,
        "sampler_evals_per_s": evals,
        "sampler_sample_evals_per_s": evals * w["sampler_batch"],
        # Graph variants: the seconds their captures took (outside the rate above), and the
        # rate of one call that includes them.
        "sampler_capture_s": captures,
        "sampler_evals_per_s_with_captures": None
        if captures is None
        else per_level * LEVELS / (per_level * LEVELS / evals + captures),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--workloads", default="W1,W2,W3")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: the device sgm ran on")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    for name in a.workloads.split(","):
        name = name.strip().upper()
        for variant in VARIANTS[device.type]:
            if variant.endswith("bf16") and name == "W1":
                continue  # autocast and channels_last are for the convolutional networks
            print(json.dumps(run(name, WORKLOADS[name], a.scale, device, variant)), flush=True)


if __name__ == "__main__":
    main()
