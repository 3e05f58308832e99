"""Train the toy world's models: VAE, then text encoder + UNet, then a tiny CLIP; one seeded command.

    python -m bench.world.train --out toyworld/weights --device cuda --seed 0

Phases, in order (each saved as soon as it finishes, so a crash later does not lose it):

(a) ``vae``: AutoencoderKL on world images (MSE + L1 + a small KL); PSNR on held-out images;
    the latent scaling factor is set to 1 / std of the training latents.
(b) ``diffusion``: CLIP text encoder and UNet jointly, VAE frozen, epsilon prediction, the
    grammar's ~10% empty captions for classifier-free guidance; the EMA weights (diffusers'
    ``EMAModel``) are saved.
(c) ``clip``: the open_clip architecture ``sstar-world-clip`` trained contrastively on
    (image, non-empty caption) pairs.
(d) ``eval``: guidance-3 samples of captions naming hue + background, measured by the oracle
    (hue-word and background accuracy); zero-shot hue-word accuracy of the world CLIP.

Everything is written into ``OUT.partial/`` and renamed to ``OUT`` at the end; ``--resume`` reuses
the finished phases found in ``OUT.partial/``. Output: a diffusers Stable Diffusion folder (fp16
safetensors; loadable by :func:`inversion.model.components.load_components`), ``clip/sstar-world-clip.safetensors``
(+ its JSON config) and ``train_log.json``.

CUDA runs under bf16 autocast (weights and optimizer fp32); the CPU runs fp32. The dataset (images,
several captions each) is drawn once up front and kept on the device.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel
from tqdm import tqdm

from common.atomic import atomic_write_bytes
from inversion.device import resolve_device, synchronize

from . import generate as G
from . import oracle as O
from .configs import WORLD_CLIP_ARCH, WORLD_CLIP_CONFIG, build_clip, build_diffusion

LOG_NAME = "train_log.json"
CLIP_DIR = "clip"
CLIP_FILE = f"{WORLD_CLIP_ARCH}.safetensors"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def say(message: str) -> None:
    print(message, flush=True)


# -- helpers ------------------------------------------------------------------------------------------


def progress_bar(phase: str, total: int) -> tqdm:
    """A progress bar of one phase (steps/s, elapsed, ETA and the loss), redrawn at most every 10 s."""
    return tqdm(total=total, desc=f"[{phase}]", unit="step", mininterval=10.0, file=sys.stdout, ascii=True)


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def lr_factor(step: int, total: int, warmup: int, floor: float = 0.1) -> float:
    """Linear warm-up, then cosine decay to ``floor`` × the base rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def optimize(optimizer: torch.optim.Optimizer, loss: torch.Tensor, params, lr: float) -> None:
    """One clipped (norm 1) AdamW step of ``loss`` at learning rate ``lr``: the shared tail of every phase."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]`` → float in [-1, 1]."""
    return images.float() / 127.5 - 1.0


class Dataset:
    """World samples held on the device: images (uint8 NCHW) and ``captions_per_image`` caption ids each."""

    def __init__(self, size: int, resolution: int, seed: int, captions_per_image: int, device: torch.device) -> None:
        tick = time.perf_counter()
        rng = np.random.default_rng(seed)
        chunks, captions = [], []
        for start in range(0, size, 4096):
            n = min(4096, size - start)
            attrs = G.sample_attributes(rng, n)
            chunks.append(G.render(attrs, resolution))
            for scene in G.scenes(attrs):
                captions.append([G.caption(scene, rng) for _ in range(captions_per_image)])
        images = np.concatenate(chunks)
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
        self.texts = sorted({c for row in captions for c in row})
        index = {text: i for i, text in enumerate(self.texts)}
        self.caption_ids = torch.tensor([[index[c] for c in row] for row in captions], device=device)
        self.size, self.device = size, device
        self.seconds = time.perf_counter() - tick
        say(
            f"[data] {size} images at {resolution} px, {len(self.texts)} distinct captions "
            f"({captions_per_image} per image) in {self.seconds:.1f}s"
        )

    def batch_indices(self, generator: torch.Generator, batch: int) -> torch.Tensor:
        return torch.randint(self.size, (batch,), generator=generator, device=self.device)

    def caption_choice(self, generator: torch.Generator, idx: torch.Tensor) -> torch.Tensor:
        pick = torch.randint(self.caption_ids.shape[1], (idx.shape[0],), generator=generator, device=self.device)
        return self.caption_ids[idx, pick]


def holdout_images(n: int, resolution: int, seed: int) -> np.ndarray:
    """Fresh world images (another stream than the training set) for evaluation."""
    images, _, _ = G.make_batch(np.random.default_rng(seed + 10_000), n, resolution)
    return images


def half_copy(module: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(module).to("cpu", torch.float16)


# -- phase (a): VAE -------------------------------------------------------------------------------------


def train_vae(vae, data: Dataset, args, device: torch.device) -> dict[str, Any]:
    vae.to(device).train().requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    generator = torch.Generator(device).manual_seed(args.seed + 1)
    started = time.perf_counter()
    losses = []
    bar = progress_bar("vae", args.vae_steps)
    for step in range(args.vae_steps):
        x = to_pixels(data.images[data.batch_indices(generator, args.vae_batch)])
        with autocast(device):
            posterior = vae.encode(x).latent_dist
            z = posterior.sample()
            recon = vae.decode(z).sample
        recon = recon.float()
        kl = posterior.kl().float().mean() / z[0].numel()
        loss = F.mse_loss(recon, x) + 0.5 * F.l1_loss(recon, x) + args.vae_kl * kl
        optimize(
            optimizer,
            loss,
            vae.parameters(),
            args.vae_lr * lr_factor(step, args.vae_steps, min(100, args.vae_steps // 10)),
        )
        bar.update()
        if (step + 1) % 25 == 0 or step + 1 == args.vae_steps or step == 0:
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    synchronize(device)
    bar.close()
    seconds = time.perf_counter() - started
    vae.eval().requires_grad_(False)
    psnr = vae_psnr(vae, holdout_images(512, args.resolution, args.seed), device)
    say(
        f"[vae] done in {seconds:.1f}s ({args.vae_steps / max(seconds, 1e-9):.1f} steps/s); held-out PSNR {psnr:.2f} dB"
    )
    return {
        "steps": args.vae_steps,
        "batch": args.vae_batch,
        "seconds": seconds,
        "steps_per_s": args.vae_steps / max(seconds, 1e-9),
        "final_loss": losses[-1] if losses else None,
        "psnr_db": psnr,
        "kl_weight": args.vae_kl,
    }


@torch.no_grad()
def vae_psnr(vae, images: np.ndarray, device: torch.device) -> float:
    x = to_pixels(torch.from_numpy(images).permute(0, 3, 1, 2).to(device))
    mse = []
    for chunk in x.split(128):
        with autocast(device):
            recon = vae.decode(vae.encode(chunk).latent_dist.mode()).sample
        recon = ((recon.float().clamp(-1, 1) + 1) * 127.5).round() / 255.0
        target = (chunk + 1) / 2
        mse.append(((recon - target) ** 2).mean(dim=(1, 2, 3)))
    return float(10 * torch.log10(1.0 / torch.cat(mse).mean()))


@torch.no_grad()
def encode_dataset(vae, data: Dataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for chunk in data.images.split(1024):
        with autocast(device):
            dist = vae.encode(to_pixels(chunk)).latent_dist
        means.append(dist.mean.float())
        stds.append(dist.std.float())
    return torch.cat(means), torch.cat(stds)


# -- phase (b): text encoder + UNet ----------------------------------------------------------------------


def tokenize_texts(tokenizer, texts: list[str], device: torch.device) -> torch.Tensor:
    ids = tokenizer(
        texts, padding="max_length", truncation=True, max_length=tokenizer.model_max_length, return_tensors="pt"
    ).input_ids
    return ids.to(device)


def train_diffusion(
    text_encoder, unet, vae, scheduler, tokenizer, data: Dataset, args, device: torch.device
) -> dict[str, Any]:
    tick = time.perf_counter()
    latent_mean, latent_std = encode_dataset(vae, data, device)
    sample = latent_mean[:4096] + latent_std[:4096] * torch.randn_like(latent_std[:4096])
    scaling = float(1.0 / sample.std())
    vae.register_to_config(scaling_factor=scaling)
    token_ids = tokenize_texts(tokenizer, data.texts, device)
    say(
        f"[diffusion] encoded {data.size} latents and {len(data.texts)} captions in "
        f"{time.perf_counter() - tick:.1f}s; latent scaling factor {scaling:.4f}"
    )
    text_encoder.to(device).train().requires_grad_(True)
    unet.to(device).train().requires_grad_(True)
    params = list(text_encoder.parameters()) + list(unet.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.diffusion_lr, weight_decay=0.0, betas=(0.9, 0.99))
    ema = EMAModel(params, decay=args.ema, foreach=True)
    alphas = scheduler.alphas_cumprod.to(device)
    num_t = int(scheduler.config.num_train_timesteps)
    generator = torch.Generator(device).manual_seed(args.seed + 2)
    started = time.perf_counter()
    bar = progress_bar("diffusion", args.diffusion_steps)
    losses, running = [], []
    warmup = min(200, args.diffusion_steps // 10)
    for step in range(args.diffusion_steps):
        idx = data.batch_indices(generator, args.diffusion_batch)
        ids = token_ids[data.caption_choice(generator, idx)]
        eps = torch.randn(latent_mean[idx].shape, generator=generator, device=device)
        noise = torch.randn(latent_mean[idx].shape, generator=generator, device=device)
        t = torch.randint(0, num_t, (idx.shape[0],), generator=generator, device=device)
        latents = (latent_mean[idx] + latent_std[idx] * eps) * scaling
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        with autocast(device):
            hidden = text_encoder(ids)[0]
            pred = unet(noisy, t, hidden).sample
        loss = F.mse_loss(pred.float(), noise)
        optimize(optimizer, loss, params, args.diffusion_lr * lr_factor(step, args.diffusion_steps, warmup))
        ema.step(params)
        bar.update()
        if (step + 1) % 25 == 0 or step + 1 == args.diffusion_steps or step == 0:
            running.append(loss.item())
            losses.append(running[-1])
            bar.set_postfix(loss=f"{np.mean(running[-8:]):.4f}", refresh=False)
    synchronize(device)
    bar.close()
    seconds = time.perf_counter() - started
    ema.copy_to(params)
    for module in (text_encoder, unet):
        module.eval().requires_grad_(False)
    say(f"[diffusion] done in {seconds:.1f}s ({args.diffusion_steps / max(seconds, 1e-9):.1f} steps/s)")
    tail = losses[-max(1, len(losses) // 10) :]
    return {
        "steps": args.diffusion_steps,
        "batch": args.diffusion_batch,
        "seconds": seconds,
        "steps_per_s": args.diffusion_steps / max(seconds, 1e-9),
        "final_loss": float(np.mean(tail)),
        "latent_scaling_factor": scaling,
        "ema": args.ema,
        "lr": args.diffusion_lr,
        "setup_seconds": time.perf_counter() - tick - seconds,
    }


def save_diffusion(folder: Path, tokenizer, text_encoder, vae, unet, scheduler) -> None:
    from inversion.model.components import DiffusionComponents
    from inversion.model.zoo import save_pipeline

    components = DiffusionComponents(
        tokenizer, half_copy(text_encoder), half_copy(vae), half_copy(unet), scheduler, "world"
    )
    save_pipeline(components, folder)


# -- phase (c): CLIP -----------------------------------------------------------------------------------


def clip_pixels(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(OPENAI_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def train_clip(data: Dataset, args, device: torch.device):
    import open_clip

    model = build_clip(args.seed).to(device).train()
    tokenizer = open_clip.get_tokenizer(WORLD_CLIP_ARCH)
    texts = data.texts
    tokens = tokenizer(texts).to(device)
    nonempty = torch.tensor([bool(t.strip()) for t in texts], device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.clip_lr, weight_decay=0.1, betas=(0.9, 0.98))
    generator = torch.Generator(device).manual_seed(args.seed + 3)
    started = time.perf_counter()
    bar = progress_bar("clip", args.clip_steps)
    losses = []
    for step in range(args.clip_steps):
        idx = data.batch_indices(generator, args.clip_batch * 2)
        cap = data.caption_choice(generator, idx)
        keep = nonempty[cap]
        idx, cap = idx[keep][: args.clip_batch], cap[keep][: args.clip_batch]
        with autocast(device):
            image_features = F.normalize(model.encode_image(clip_pixels(data.images[idx])).float(), dim=-1)
            text_features = F.normalize(model.encode_text(tokens[cap]).float(), dim=-1)
        # captions are coarse, so several images of a batch share one: all of them count as positives
        same = (cap[:, None] == cap[None, :]).float()
        targets = same / same.sum(dim=1, keepdim=True)
        logits = model.logit_scale.exp().clamp(max=100) * image_features @ text_features.T
        loss = 0.5 * (
            torch.sum(-targets * F.log_softmax(logits, dim=1), dim=1).mean()
            + torch.sum(-targets.T * F.log_softmax(logits.T, dim=1), dim=1).mean()
        )
        optimize(
            optimizer,
            loss,
            model.parameters(),
            args.clip_lr * lr_factor(step, args.clip_steps, min(100, args.clip_steps // 10)),
        )
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        bar.update()
        if (step + 1) % 25 == 0 or step + 1 == args.clip_steps or step == 0:
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    synchronize(device)
    bar.close()
    seconds = time.perf_counter() - started
    model.eval().requires_grad_(False)
    say(f"[clip] done in {seconds:.1f}s ({args.clip_steps / max(seconds, 1e-9):.1f} steps/s)")
    return model, {
        "steps": args.clip_steps,
        "batch": args.clip_batch,
        "seconds": seconds,
        "steps_per_s": args.clip_steps / max(seconds, 1e-9),
        "final_loss": losses[-1] if losses else None,
    }


def save_clip(model, folder: Path) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    path = folder / CLIP_FILE
    save_file(state, str(path))
    shutil.copyfile(WORLD_CLIP_CONFIG, folder / WORLD_CLIP_CONFIG.name)
    return path


# -- phase (d): evaluation --------------------------------------------------------------------------------


@torch.no_grad()
def sample_captions(
    model_dir: Path, prompts: list[str], seed: int, steps: int, guidance: float, device: torch.device, batch: int = 256
) -> np.ndarray:
    """Render each prompt once (independent noise per prompt, seeded); uint8 ``[N, H, W, 3]``."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from inversion.model.components import load_components

    components = load_components(model_dir)
    components.to(device, torch.float32)
    pipeline = StableDiffusionPipeline(
        vae=components.vae,
        text_encoder=components.text_encoder,
        tokenizer=components.tokenizer,
        unet=components.unet,
        scheduler=DDIMScheduler.from_config(components.noise_scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    resolution = components.resolution
    generator = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        latents = torch.randn(
            (len(chunk), 4, resolution // components.vae_scale_factor, resolution // components.vae_scale_factor),
            generator=generator,
        ).to(device)
        images = pipeline(
            prompt=chunk,
            latents=latents,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=resolution,
            width=resolution,
            output_type="np",
        ).images
        out.append((np.clip(images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out)


def evaluate(folder: Path, args, device: torch.device) -> dict[str, Any]:
    tick = time.perf_counter()
    prompts, targets = G.evaluation_captions(np.random.default_rng(args.seed + 20_000), args.eval_samples)
    images = sample_captions(folder, prompts, args.seed, args.eval_steps, args.eval_guidance, device)
    m = O.measure(images)
    words = m.hue_words
    hue_ok = np.array([w == t["hue_word"] for w, t in zip(words, targets)])
    bg_ok = np.array([m.background[i] == G.BACKGROUNDS.index(t["background"]) for i, t in enumerate(targets)])
    centre_error = O.hue_error(m.hue, np.array([G.HUE_CENTRES[G.HUE_WORDS.index(t["hue_word"])] for t in targets]))
    result: dict[str, Any] = {
        "samples": len(prompts),
        "guidance": args.eval_guidance,
        "steps": args.eval_steps,
        "hue_word_accuracy": float(hue_ok.mean()),
        "background_accuracy": float(bg_ok.mean()),
        "shape_found": float(m.has_shape.mean()),
        "median_error_to_bin_centre": float(np.nanmedian(centre_error)) if m.has_shape.any() else None,
    }
    _save_strip(images[:16], folder / "eval_samples.png")
    clip_path = folder / CLIP_DIR / CLIP_FILE
    if clip_path.is_file():
        result["clip_zero_shot_hue_accuracy"] = clip_zero_shot(clip_path, args, device)
    result["seconds"] = time.perf_counter() - tick
    say(
        f"[eval] hue-word accuracy {result['hue_word_accuracy']:.3f}, background accuracy "
        f"{result['background_accuracy']:.3f}, shape found {result['shape_found']:.3f}"
        + (f", CLIP zero-shot hue {result['clip_zero_shot_hue_accuracy']:.3f}" if clip_path.is_file() else "")
        + f" ({result['seconds']:.1f}s)"
    )
    return result


def _save_strip(images: np.ndarray, path: Path) -> None:
    from PIL import Image

    if len(images):
        Image.fromarray(np.concatenate(list(images), axis=1)).save(path)


@torch.no_grad()
def clip_zero_shot(clip_path: Path, args, device: torch.device) -> float:
    """Share of fresh world images whose hue word the world CLIP picks among the 8.

    The texts are 'a photo of a {hue} {shape}'.
    """
    from PIL import Image

    from inversion.config import ClipSpec
    from inversion.evaluation.clip import load_clip

    clip = load_clip(ClipSpec(WORLD_CLIP_ARCH, checkpoint=clip_path), device)
    images, _, info = G.make_batch(np.random.default_rng(args.seed + 30_000), 256, args.resolution)
    image_embeds = clip.embed_images([Image.fromarray(im) for im in images], batch_size=256)
    correct = 0
    for shape in G.SHAPES:
        rows = [i for i, a in enumerate(info) if a["shape"] == shape]
        if not rows:
            continue
        text = clip.embed_texts([f"a photo of a {w} {shape}" for w in G.HUE_WORDS])
        guess = (image_embeds[rows] @ text.T).argmax(dim=1)
        correct += sum(G.HUE_WORDS[int(g)] == info[i]["hue_word"] for g, i in zip(guess, rows))
    return correct / len(info)


# -- driver ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.world.train", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("toyworld/weights"))
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resolution", type=int, default=G.DEFAULT_RESOLUTION)
    p.add_argument("--dataset-size", type=int, default=50_000)
    p.add_argument("--captions-per-image", type=int, default=4)
    p.add_argument("--vae-steps", type=int, default=400)
    p.add_argument("--vae-batch", type=int, default=256)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--vae-kl", type=float, default=1e-4, help="weight of the per-latent-element KL term")
    p.add_argument("--diffusion-steps", type=int, default=1000)
    p.add_argument("--diffusion-batch", type=int, default=512)
    p.add_argument("--diffusion-lr", type=float, default=1e-3)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--clip-steps", type=int, default=600)
    p.add_argument("--clip-batch", type=int, default=256)
    p.add_argument("--clip-lr", type=float, default=5e-4)
    p.add_argument("--eval-samples", type=int, default=256)
    p.add_argument("--eval-steps", type=int, default=25)
    p.add_argument("--eval-guidance", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--resume", action="store_true", help="reuse finished phases found in OUT.partial/")
    return p.parse_args(argv)


def _write_log(folder: Path, log: dict[str, Any]) -> None:
    atomic_write_bytes(folder / LOG_NAME, (json.dumps(log, indent=2) + "\n").encode("utf-8"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from inversion.cli import quiet_libraries

    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out = args.out.resolve()
    work = out.with_name(out.name + ".partial")
    if work.exists() and not args.resume:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    previous = json.loads((work / LOG_NAME).read_text()) if (work / LOG_NAME).is_file() else {}
    done = set(previous.get("phases_done", [])) if args.resume else set()
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    log: dict[str, Any] = {
        "command": " ".join([sys.executable, "-m", "bench.world.train", *(argv if argv is not None else sys.argv[1:])]),
        "device": str(device),
        "device_name": device_name,
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "held_out": [c.to_dict() for c in G.HELD_OUT],
        "phases_done": sorted(done),
        **{k: previous[k] for k in ("data", "vae", "diffusion", "clip") if k in previous and k in done | {"data"}},
    }
    started = time.perf_counter()
    say(f"world training on {device} ({device_name}); writing {work}")
    torch.manual_seed(args.seed)
    data = Dataset(args.dataset_size, args.resolution, args.seed, args.captions_per_image, device)
    log["data"] = {
        "images": data.size,
        "distinct_captions": len(data.texts),
        "seconds": data.seconds,
        "resolution": args.resolution,
    }
    tokenizer, text_encoder, vae, unet, scheduler = build_diffusion(args.resolution, args.seed)

    if "vae" in done:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(work / "vae", torch_dtype=torch.float32)
        say("[vae] reused from the previous run")
    else:
        log["vae"] = train_vae(vae, data, args, device)
        half_copy(vae).save_pretrained(work / "vae", safe_serialization=True)
        log["phases_done"] = sorted(set(log["phases_done"]) | {"vae"})
        _write_log(work, log)
    vae.to(device, torch.float32).eval().requires_grad_(False)

    if "diffusion" not in done:
        log["diffusion"] = train_diffusion(text_encoder, unet, vae, scheduler, tokenizer, data, args, device)
        save_diffusion(work, tokenizer, text_encoder, vae, unet, scheduler)
        log["phases_done"] = sorted(set(log["phases_done"]) | {"diffusion"})
        _write_log(work, log)
    else:
        say("[diffusion] reused from the previous run")

    if "clip" not in done:
        model, log["clip"] = train_clip(data, args, device)
        save_clip(model, work / CLIP_DIR)
        log["phases_done"] = sorted(set(log["phases_done"]) | {"clip"})
        _write_log(work, log)
        del model
    else:
        say("[clip] reused from the previous run")

    del data
    log["eval"] = evaluate(work, args, device)
    log["total_seconds"] = time.perf_counter() - started
    log["sizes_mb"] = {
        p.relative_to(work).as_posix(): round(p.stat().st_size / 1e6, 2) for p in sorted(work.rglob("*.safetensors"))
    }
    log["total_mb"] = round(sum(log["sizes_mb"].values()), 2)
    _write_log(work, log)
    if out.exists():
        old = out.with_name(out.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
        work.rename(out)
        shutil.rmtree(old)
    else:
        work.rename(out)
    say(f"world model written to {out} ({log['total_mb']} MB of weights) in {log['total_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
