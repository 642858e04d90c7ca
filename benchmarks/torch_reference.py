"""A straightforward PyTorch implementation of the benchmark workloads (the reference).

The same models, objectives and optimizer as `workloads.py`, written the way a PyTorch user would:
batched `nn.Module`s, `torch.distributions`-free closed forms, `torch.optim.Adam`, one Python-level
step per batch over a device-resident tensor indexed by a per-epoch permutation (W4: binarised
afresh in each step with `torch.bernoulli`). Eager by default; `compile=True` wraps the model's
forward pass and loss in `torch.compile`. `device='cuda'` runs it on the GPU.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from benchmarks import workloads

LOG_2PI = math.log(2 * math.pi)


class DenseVAE(nn.Module):
    """784-200-200-(2x50) tanh encoder, 50-200-200-784 tanh decoder (Burda et al. 2016)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Flatten(), nn.Linear(784, 200), nn.Tanh(), nn.Linear(200, 200), nn.Tanh(),
            nn.Linear(200, 100),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Linear(50, 200), nn.Tanh(), nn.Linear(200, 200), nn.Tanh(), nn.Linear(200, 784)
        )

    def decode(self, z):  # [..., 50] -> logits [..., 28, 28, 1]
        return self.decoder(z).reshape(*z.shape[:-1], 28, 28, 1)


class ConvVAE(nn.Module):
    """The W3 conv VAE (NCHW inside; images and logits NHWC at the boundary)."""

    def __init__(self, latent: int = 16):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 3, 2, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, padding=1),
            nn.ReLU(), nn.Flatten(), nn.Linear(3136, 2 * latent),
        )  # fmt: skip
        # 'SAME' stride-2 transposed conv, 3x3: output 2x input = padding 1, output_padding 1.
        self.decoder = nn.Sequential(
            nn.Linear(latent, 3136), nn.ReLU(), nn.Unflatten(1, (64, 7, 7)),
            nn.ConvTranspose2d(64, 64, 3, 2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 3, 2, padding=1, output_padding=1), nn.ReLU(),
            nn.Conv2d(32, 1, 3, 1, padding=1),
        )  # fmt: skip

    def encode_input(self, x):  # [B, 28, 28, 1] -> [B, 1, 28, 28]
        return x.permute(0, 3, 1, 2)

    def decode(self, z):  # [B, D] -> logits [B, 28, 28, 1]
        return self.decoder(z).permute(0, 2, 3, 1)


def bernoulli_log_prob(logits, x):
    """sum over pixels of log Bernoulli(x | logits); logits [..., 28, 28, 1], x broadcast."""
    return (
        -nn.functional.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction='none'
        )
        .flatten(-3)
        .sum(-1)
    )


def normal_log_prob(z, loc, scale):
    return (-0.5 * ((z - loc) / scale) ** 2 - torch.log(scale) - 0.5 * LOG_2PI).sum(-1)


def iwae_loss(model: DenseVAE, x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over the batch of -IWAE_k (k = 1: the Monte-Carlo ELBO); x [B, 28, 28, 1]."""
    params = model.encoder(x)
    loc, scale = params[:, :50], torch.exp(params[:, 50:])
    eps = torch.randn((k, *loc.shape), device=loc.device)
    z = loc + scale * eps  # [K, B, D]
    log_px = bernoulli_log_prob(model.decode(z), x)  # [K, B]
    log_pz = (-0.5 * z**2 - 0.5 * LOG_2PI).sum(-1)
    log_qz = normal_log_prob(z, loc, scale)
    log_w = log_px + log_pz - log_qz
    bound = torch.logsumexp(log_w, 0) - math.log(k)
    return -bound.mean()


def elbo_loss(model: ConvVAE, x: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the negative ELBO with the analytic KL; x [B, 28, 28, 1]."""
    params = model.encoder(model.encode_input(x))
    d = params.shape[-1] // 2
    loc, log_scale = params[:, :d], params[:, d:]
    z = loc + torch.exp(log_scale) * torch.randn_like(loc)
    recon = -bernoulli_log_prob(model.decode(z), x)
    kl = 0.5 * (loc**2 + torch.exp(2 * log_scale) - 1 - 2 * log_scale).sum(-1)
    return (recon + kl).mean()


class Trainer:
    """Model, Adam and the loss of one workload; `epoch(num_steps)` trains on random data."""

    def __init__(
        self,
        name: str,
        *,
        compile: bool = False,
        seed: int = 0,
        batch_size: int | None = None,
        device: str = 'cpu',
    ):
        torch.manual_seed(seed)
        workload = workloads.WORKLOADS[name]
        if workload.family == 'dense':
            self.model = DenseVAE()
            k = workload.k_samples
            self.loss_fn = lambda x: iwae_loss(self.model, x, k)
        else:
            self.model = ConvVAE()
            self.loss_fn = lambda x: elbo_loss(self.model, x)
        self.model.to(device)
        if compile:
            # The usual recipe: compile the model's forward pass and loss (AOTAutograd compiles
            # the backward pass too); zero_grad and the optimizer step stay eager. Compiling the
            # whole step instead breaks the graph at zero_grad, backward and Adam's step and
            # ran 10x slower than eager here.
            self.loss_fn = torch.compile(self.loss_fn)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3, eps=workload.adam_eps)
        self.images = torch.from_numpy(workloads.train_images(name)).to(device)
        self.dynamic_binarize = workload.dynamic_binarize
        self.batch_size = batch_size or workload.batch_size
        self.device = device
        self.perm = torch.randperm(self.images.shape[0], device=device)
        self.position = 0

    def _step(self, x):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(x)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def epoch(self, num_steps: int) -> float:
        """Runs `num_steps` optimizer steps; returns the last loss (a host sync at the end)."""
        loss = None
        for _ in range(num_steps):
            if self.position + self.batch_size > self.images.shape[0]:
                self.perm = torch.randperm(self.images.shape[0], device=self.device)
                self.position = 0
            idx = self.perm[self.position : self.position + self.batch_size]
            self.position += self.batch_size
            x = self.images[idx]
            if self.dynamic_binarize:
                x = torch.bernoulli(x)
            loss = self._step(x)
        return float(loss)
