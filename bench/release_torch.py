"""The release's pipeline in PyTorch, shaped as the release runs it, for side-by-side timing.

Not a port for use: the same work as the release per image (read for behaviour from
``tttt-0814/TEXTER``), written from the spec so benches can time it next to ours.

* stage 1: classifier features, SAE codes, IG of ``head(decode(codes))[c]`` over the
  codes (Gauss-Legendre, 100 steps, all steps in one batch as captum does by default);
* stage 2: MACO, one image at a time, with the classifier and SAE weights left
  trainable (``param_grads=True``: every backward also computes weight gradients, as in
  the release), NAdam on a Fourier phase, 6 ``roi_align`` crops resized to 224 with
  noise, TopK SAE objective, |d loss / d image| accumulated for the transparency;
* stage 3: numpy percentiles, alpha blend on white, 6 crops -> classifier -> aligner ->
  cosine against the concept texts' embeddings.

Random weights at real sizes: torchvision ResNet-50, SAE 2048 -> 16384 (k = 1638),
aligner 2048 -> 512.
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision

FEATURES, CODES, TOP_K, CLIP_DIM = 2048, 16384, 1638, 512


class ReleasePipeline:
    """The release's stages for one image at a time; every method returns host values."""

    def __init__(self, canvas: int, magnitude: np.ndarray, *, crops: int = 6,
                 crop_size: int = 224, param_grads: bool = True, seed: int = 0,
                 device: str = "cpu"):
        g = torch.Generator().manual_seed(seed)
        self.device = dev = torch.device(device)
        net = torchvision.models.resnet50(weights=None).eval()
        self.body = torch.nn.Sequential(*list(net.children())[:-1]).to(dev)
        self.fc = net.fc.to(dev)
        self.enc_w = torch.nn.Parameter((torch.randn(FEATURES, CODES, generator=g) / 45).to(dev))
        self.enc_b = torch.nn.Parameter(torch.zeros(CODES, device=dev))
        dec = torch.randn(CODES, FEATURES, generator=g)
        self.dec = torch.nn.Parameter((dec / dec.norm(dim=1, keepdim=True)).to(dev))
        self.aligner_w = (torch.randn(CLIP_DIM, FEATURES, generator=g) / 45).to(dev)
        self.aligner_b = torch.zeros(CLIP_DIM, device=dev)
        self.canvas, self.crops, self.crop_size = canvas, crops, crop_size
        self.magnitude = torch.from_numpy(np.asarray(magnitude, np.float32)).to(dev)
        self.colour = (torch.randn(3, 3, generator=g) * 0.3).to(dev)
        self.set_param_grads(param_grads)

    def set_param_grads(self, on: bool) -> None:
        for p in [*self.body.parameters(), *self.fc.parameters(), self.enc_w, self.enc_b,
                  self.dec]:
            p.requires_grad_(on)

    def _codes(self, z):
        pre = torch.relu(z @ self.enc_w + self.enc_b)
        top = torch.topk(pre, TOP_K, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values)

    # ---- stage 1
    def stage1(self, image: np.ndarray, steps: int = 100, k: int = 6) -> np.ndarray:
        """image [224, 224, 3] in [0, 1] -> the k top |IG| SAE codes (indices)."""
        with torch.no_grad():
            x = torch.from_numpy(image).permute(2, 0, 1)[None].to(self.device)
            z = self.body(x).flatten(1)
            codes = self._codes(z)
            target = int(self.fc(codes @ self.dec).argmax())
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        alphas = torch.from_numpy((nodes + 1) / 2).float()[:, None].to(self.device)
        scaled = (alphas * codes).requires_grad_(True)
        out = self.fc(scaled @ self.dec)[:, target].sum()
        (grads,) = torch.autograd.grad(out, scaled)
        w = torch.from_numpy(weights / 2).float()[:, None].to(self.device)
        attr = (codes * (w * grads).sum(0, keepdim=True))[0]
        attr = torch.where(codes[0] > 0, attr.abs(), torch.full_like(attr, -1.0))
        return torch.topk(attr, k).indices.cpu().numpy()

    # ---- stage 2
    def maco_start(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        s = self.canvas
        self.phase = torch.randn(3, s, s // 2 + 1, generator=g).to(self.device)
        self.phase.requires_grad_(True)
        self.opt = torch.optim.NAdam([self.phase], lr=1.0)
        self.transparency = torch.zeros(3, s, s, device=self.device)

    def maco_step(self, units: np.ndarray) -> float:
        s = self.canvas
        ph = (self.phase - self.phase.mean()) / (self.phase.std() + 1e-4)
        spec = self.magnitude * torch.complex(torch.cos(ph), torch.sin(ph))
        img = torch.fft.irfft2(spec, s=(s, s))
        img = (img - img.mean()) / (img.std() + 1e-4)
        img = torch.sigmoid(torch.einsum("chw,cd->dhw", img, self.colour))
        img.retain_grad()
        n, dev = self.crops, self.device
        c = 0.5 + 0.15 * torch.randn(n, 2, device=dev)
        side = 0.25 + 0.05 * torch.rand(n, 1, device=dev)
        boxes = torch.cat([torch.zeros(n, 1, device=dev), (c - side / 2) * s,
                           (c + side / 2) * s], 1)
        crops = torchvision.ops.roi_align(img[None], boxes, output_size=2 * self.crop_size)
        crops = torch.nn.functional.interpolate(crops, size=self.crop_size, mode="bicubic",
                                                antialias=True)
        crops = crops + 0.05 * torch.randn_like(crops) + 0.05 * (torch.rand_like(crops) - 0.5)
        codes = self._codes(self.body(crops).flatten(1))
        loss = -codes[:, torch.from_numpy(units).to(dev)].mean(0).sum()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            self.transparency += img.grad.abs()
        for p in (*self.body.parameters(), self.enc_w, self.enc_b, self.dec):
            p.grad = None
        return float(loss.detach())  # one host sync per step: per-step timing stays honest on a GPU

    def maco_image(self) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            s = self.canvas
            ph = (self.phase - self.phase.mean()) / (self.phase.std() + 1e-4)
            img = torch.fft.irfft2(self.magnitude * torch.complex(torch.cos(ph), torch.sin(ph)),
                                   s=(s, s))
            img = (img - img.mean()) / (img.std() + 1e-4)
            img = torch.sigmoid(torch.einsum("chw,cd->dhw", img, self.colour))
        return img.cpu().numpy(), self.transparency.cpu().numpy()

    # ---- stage 3
    def stage3(self, image_chw: np.ndarray, transparency_chw: np.ndarray,
               text_emb: np.ndarray) -> np.ndarray:
        """Concept image + transparency [3, S, S] -> concept scores [T]."""
        img = np.clip(image_chw, np.percentile(image_chw, 1), np.percentile(image_chw, 99))
        img = (img - img.min()) / max(img.max() - img.min(), 1e-12)
        a = transparency_chw.mean(0, keepdims=True)
        a = np.minimum(a, np.percentile(a, 80))
        a = a / max(a.max(), 1e-12)
        dev = self.device
        blended = torch.from_numpy((a * img + (1 - a)).astype(np.float32))[None].to(dev)
        s, n = self.canvas, self.crops
        with torch.no_grad():
            c = 0.5 + 0.15 * torch.randn(n, 2, device=dev)
            side = 0.25 + 0.05 * torch.rand(n, 1, device=dev)
            lo = torch.minimum((c - side / 2).clamp(min=0), 1 - side) * s
            boxes = torch.cat([torch.zeros(n, 1, device=dev), lo, lo + side * s], 1)
            crops = torchvision.ops.roi_align(blended, boxes, output_size=self.crop_size)
            h = self.body(crops).flatten(1) @ self.aligner_w.T + self.aligner_b
            h = h / h.norm(dim=-1, keepdim=True)
            t = torch.from_numpy(text_emb).to(dev)
            t = t / t.norm(dim=-1, keepdim=True)
            return (h @ t.T).mean(0).cpu().numpy()
