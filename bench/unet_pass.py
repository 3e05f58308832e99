"""Time one UNet forward + backward to the text conditioning alone — the floor of any trainer's step.

    python -m bench.unet_pass --model sd15|sdxl|… --resolution 512 --passes 4 [--precision bf16] [--profile]

Textual Inversion needs the gradient only at the text conditioning, so no weight gradients are
computed (every weight is frozen). Each pass prints its wall time, process user/system CPU seconds
and minor page faults (``getrusage``); ``--profile`` adds a ``torch.profiler`` table of the last pass.
Compare its steady-state passes with ``bench.speed``'s s/step for our trainer: the difference is
everything else our step does.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.unet_pass", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sd15", help="an architecture of inversion.model.components.ARCHITECTURES")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--passes", type=int, default=4, help="timed passes (the first includes warm-up)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of one more pass")
    args = parser.parse_args(argv)

    import torch

    from inversion.device import resolve_dtype
    from inversion.model.zoo import build_random_components
    from inversion.text.encoder import PromptEmbeds, PromptEncoder

    dtype = resolve_dtype(args.precision, torch.device("cpu"))
    components = build_random_components(args.model, seed=0)
    components.to(torch.device("cpu"), dtype)
    text = PromptEncoder(components)
    with torch.no_grad():
        embeds = text.encode(["a photo of a cat"])
    hidden = embeds.hidden.detach().requires_grad_(True)
    size = args.resolution
    time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=torch.float32)  # SDXL's; others ignore it
    kwargs = text.unet_kwargs(PromptEmbeds(hidden, embeds.pooled), dtype, time_ids)
    side = args.resolution // components.vae_scale_factor
    latents = torch.randn(1, components.unet.config.in_channels, side, side, dtype=dtype)
    timestep = torch.tensor([500])

    def one_pass() -> None:
        components.unet(latents, timestep, **kwargs).sample.float().pow(2).mean().backward()
        hidden.grad = None

    print(f"{args.model} UNet, {args.resolution} px, {args.precision}, {torch.get_num_threads()} threads")
    print("pass  wall s  user s  sys s  minor faults")
    for index in range(1, args.passes + 1):
        before, tick = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        one_pass()
        wall, after = time.perf_counter() - tick, resource.getrusage(resource.RUSAGE_SELF)
        print(
            f"{index:>4}  {wall:6.2f}  {after.ru_utime - before.ru_utime:6.2f}  "
            f"{after.ru_stime - before.ru_stime:5.2f}  {after.ru_minflt - before.ru_minflt:>12}",
            flush=True,
        )
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            one_pass()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return 0


if __name__ == "__main__":
    sys.exit(main())
