"""The `sgm bench` workloads W1-W3 in PyTorch, for the ratios `sgm bench --compare-pytorch` prints.

Same networks (layer by layer), same losses (multi-scale DSM, sigma per sample, lambda = sigma^2),
same Adam, same annealed Langevin update, same batch sizes, step counts and thread count.
Prints one JSON line per workload with the same keys as `sgm bench`.
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
    idx = torch.randint(0, len(sigmas), (x.shape[0],))
    sigma = sigmas[idx]
    s = sigma.view(-1, *([1] * (x.dim() - 1)))
    z = torch.randn_like(x)
    pred = net(x + z * s, sigma)
    per = s.square() * (pred + z / s).square()
    return per.flatten(1).sum(1).mean()


@torch.no_grad()
def annealed_langevin(net, sigmas, x, steps_per_level, eps):
    for sigma in sigmas.tolist():
        alpha = eps * sigma**2 / sigmas[-1].item() ** 2
        sig = torch.full((x.shape[0],), sigma)
        for _ in range(steps_per_level):
            x = x + 0.5 * alpha * net(x, sig) + math.sqrt(alpha) * torch.randn_like(x)
    return x


WORKLOADS = {
    "W1": dict(batch=512, sampler_batch=10_000, steps=1000, evals=200, shape=(2,)),
    "W2": dict(batch=128, sampler_batch=100, steps=20, evals=40, shape=(1, 28, 28)),
    "W3": dict(batch=120, sampler_batch=100, steps=60, evals=100, shape=(1, 28, 28)),
}


def run(name, w, scale):
    torch.manual_seed(0)
    n = lambda k: max(LEVELS, round(k * scale))
    sigmas = torch.tensor([1.0 * (0.01 / 1.0) ** (i / (LEVELS - 1)) for i in range(LEVELS)])
    net = {"W1": ConditionedMlp, "W2": lambda: ConditionedSimpleResnet(sigmas), "W3": BlogUnet}[name]()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    batch = torch.randn(w["batch"], *w["shape"])

    def step():
        loss = dsm_loss(net, batch, sigmas)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(3):
        step()
    steps = n(w["steps"])
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    train_rate = steps / (time.perf_counter() - t0)

    x0 = torch.randn(w["sampler_batch"], *w["shape"])
    annealed_langevin(net, sigmas, x0, 1, 1e-6)
    per_level = n(w["evals"]) // LEVELS
    t0 = time.perf_counter()
    annealed_langevin(net, sigmas, x0, per_level, 1e-6)
    eval_rate = per_level * LEVELS / (time.perf_counter() - t0)
    return {
        "workload": name,
        "impl": "pytorch",
        "version": torch.__version__,
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "train_batch": w["batch"],
        "train_steps": steps,
        "train_steps_per_s": train_rate,
        "sampler_batch": w["sampler_batch"],
        "sampler_evals": per_level * LEVELS,
        "sampler_evals_per_s": eval_rate,
        "sampler_sample_evals_per_s": eval_rate * w["sampler_batch"],
    }


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--workloads", default="W1,W2,W3")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    for name in a.workloads.split(","):
        print(json.dumps(run(name.strip().upper(), WORKLOADS[name.strip().upper()], a.scale)), flush=True)


if __name__ == "__main__":
    main()
