#!/usr/bin/env python3
"""gpuforge ResNet-50 training smoke benchmark.

Trains torchvision's ResNet-50 (random weights) on synthetic data that is generated on the GPU
once, so the figure measures the GPU, the driver, CUDA, cuDNN, NCCL and the framework in the
image, not a data pipeline. One process per GPU:

  python3 resnet50.py --batch-size 256 --precision bf16 --gpus 1   # one GPU, no torch.distributed
  python3 resnet50.py --batch-size 256 --precision bf16 --gpus 4   # spawns 4 processes (DDP, NCCL)
  torchrun --nproc-per-node 4 resnet50.py --batch-size 256          # DDP as launched by torchrun

Rank 0 prints one line, "GPUFORGE_RESNET50_RESULT " followed by a JSON object, which gpuforge
parses (validate.ParseResNet50Output). Everything else the script prints is for people.

The script never sets or changes NCCL_* (or any other) environment variables: the GPU host's
settings, such as NCCL_NVLS_ENABLE=0, reach NCCL as they are. Needs Python 3.10+, torch and
torchvision, nothing else.
"""

import argparse
import contextlib
import json
import math
import os
import socket
import sys
import time

MARKER = "GPUFORGE_RESNET50_RESULT "
PRECISIONS = ("bf16", "fp16", "tf32", "fp32")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="ResNet-50 training smoke benchmark (synthetic data)")
    p.add_argument("--batch-size", type=int, default=256, help="images per GPU per step (default 256)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="bf16",
        help="bf16: bfloat16 autocast; fp16: float16 autocast with a GradScaler; "
        "tf32: float32 with TF32 tensor-core math; fp32: strict float32 (TF32 off). Default bf16",
    )
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="use the channels_last (NHWC) memory format (default on)",
    )
    p.add_argument("--compile", action="store_true", help="wrap the model in torch.compile")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (default 10)")
    p.add_argument("--iterations", type=int, default=30, help="timed steps (default 30)")
    p.add_argument(
        "--gpus",
        type=int,
        default=None,
        help="processes to start, one per GPU (0: all visible GPUs; default 1). Ignored when "
        "launched by torchrun or another launcher that sets WORLD_SIZE",
    )
    p.add_argument("--image-size", type=int, default=224, help="image height and width (default 224)")
    p.add_argument("--num-classes", type=int, default=1000, help="classes (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error("--batch-size must be at least 1")
    if args.iterations < 1:
        p.error("--iterations must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must not be negative")
    if args.gpus is not None and args.gpus < 0:
        p.error("--gpus must not be negative")
    if args.image_size < 32:
        p.error("--image-size must be at least 32")
    if args.num_classes < 2:
        p.error("--num-classes must be at least 2")
    return args


def fail(msg, code=2):
    print(f"gpuforge resnet50: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def log(rank, msg):
    if rank == 0:
        print(f"gpuforge resnet50: {msg}", flush=True)


def free_port():
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def finite_or_none(x):
    return x if isinstance(x, float) and math.isfinite(x) else None


def set_precision_flags(torch, precision):
    # cudnn.benchmark picks the fastest convolution algorithms for the fixed input shape.
    torch.backends.cudnn.benchmark = True
    tf32 = precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def nccl_version(torch):
    try:
        v = torch.cuda.nccl.version()
    except Exception:  # noqa: BLE001 (a build without NCCL)
        return None
    return ".".join(str(x) for x in v) if isinstance(v, tuple) else str(v)


def make_grad_scaler(torch):
    try:
        return torch.amp.GradScaler("cuda")
    except (AttributeError, TypeError):  # torch < 2.3
        return torch.cuda.amp.GradScaler()


def make_model(torchvision, num_classes):
    try:
        return torchvision.models.resnet50(weights=None, num_classes=num_classes)
    except TypeError:  # torchvision < 0.13 has no weights argument
        return torchvision.models.resnet50(pretrained=False, num_classes=num_classes)


def run(local_rank, rank, world_size, args, init_method):
    """Runs the benchmark in this process on GPU local_rank; returns rank 0's result or None."""
    import torch
    import torchvision

    distributed = world_size > 1
    torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank)
    if distributed:
        import torch.distributed as dist

        dist.init_process_group(backend="nccl", init_method=init_method, rank=rank, world_size=world_size)

    try:
        set_precision_flags(torch, args.precision)
        if args.precision == "bf16" and not torch.cuda.is_bf16_supported():
            print(
                f"gpuforge resnet50: warning: {torch.cuda.get_device_name(device)} has no native bfloat16 "
                "support; the figure will be low",
                file=sys.stderr,
                flush=True,
            )
        torch.manual_seed(args.seed + rank)
        memory_format = torch.channels_last if args.channels_last else torch.contiguous_format

        model = make_model(torchvision, args.num_classes).to(device=device, memory_format=memory_format)
        if distributed:
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(model, device_ids=[local_rank], output_device=local_rank)
        if args.compile:
            model = torch.compile(model)

        criterion = torch.nn.CrossEntropyLoss().to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        scaler = make_grad_scaler(torch) if args.precision == "fp16" else None
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)

        def autocast():
            if amp_dtype is None:
                return contextlib.nullcontext()
            return torch.autocast(device_type="cuda", dtype=amp_dtype)

        # Synthetic data, made on the GPU once: no host-to-device copies in the timed loop.
        images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
        images = images.contiguous(memory_format=memory_format)
        labels = torch.randint(0, args.num_classes, (args.batch_size,), device=device)

        model.train()

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = criterion(model(images), labels)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            return loss

        def sync():
            torch.cuda.synchronize(device)
            if distributed:
                # Every rank enters and leaves the timed loop together.
                flag = torch.zeros(1, device=device)
                dist.all_reduce(flag)
                torch.cuda.synchronize(device)

        warmup = args.warmup
        if args.compile and warmup < 2:
            warmup = 2  # keep compilation out of the timed loop
            log(rank, "--compile: warm-up raised to 2 steps so that compilation is not timed")

        log(
            rank,
            f"{world_size} process(es), {torch.cuda.get_device_name(device)}, batch {args.batch_size}/GPU, "
            f"{args.precision}, channels_last={args.channels_last}, compile={args.compile}, "
            f"{warmup} warm-up + {args.iterations} timed steps",
        )
        t0 = time.perf_counter()
        for _ in range(warmup):
            step()
        sync()
        warmup_seconds = time.perf_counter() - t0

        t0 = time.perf_counter()
        for _ in range(args.iterations):
            loss = step()
        torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        sync()

        mine = {
            "rank": rank,
            "images_per_sec": args.batch_size * args.iterations / seconds,
            "seconds": seconds,
            "model": torch.cuda.get_device_name(device),
            "loss": finite_or_none(float(loss.detach().float().item())),
        }
        if distributed:
            every = [None] * world_size
            dist.all_gather_object(every, mine)
        else:
            every = [mine]
        if rank != 0:
            return None

        every.sort(key=lambda r: r["rank"])
        per_gpu = [round(r["images_per_sec"], 2) for r in every]
        models = sorted({r["model"] for r in every})
        result = {
            "model": every[0]["model"],
            "gpus": world_size,
            "batch_size": args.batch_size,
            "precision": args.precision,
            "channels_last": args.channels_last,
            "compile": args.compile,
            "warmup_iterations": warmup,
            "iterations": args.iterations,
            "images_per_sec": round(sum(r["images_per_sec"] for r in every), 2),
            "images_per_sec_per_gpu": per_gpu,
            "seconds": round(max(r["seconds"] for r in every), 4),
            "warmup_seconds": round(warmup_seconds, 3),
            "final_loss": every[0]["loss"],
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "nccl": nccl_version(torch) if distributed else None,
        }
        if len(models) > 1:
            result["models"] = models
        return result
    finally:
        if distributed:
            dist.destroy_process_group()


def report(result):
    print(
        f"gpuforge resnet50: {result['images_per_sec']:.1f} img/s total, "
        f"per GPU {', '.join(f'{x:.1f}' for x in result['images_per_sec_per_gpu'])}; "
        f"{result['iterations']} steps in {result['seconds']:.2f} s",
        flush=True,
    )
    print(MARKER + json.dumps(result, sort_keys=True), flush=True)


def spawned(local_rank, world_size, args, init_method):
    """Entry point of a process started by --gpus N (torch.multiprocessing.spawn)."""
    result = run(local_rank, local_rank, world_size, args, init_method)
    if result is not None:
        report(result)


def main(argv=None):
    args = parse_args(argv)
    try:
        import torch
        import torchvision  # noqa: F401  (fail early with a clear message)
    except ImportError as e:
        fail(f"PyTorch and torchvision are needed: {e}")
    if not torch.cuda.is_available():
        fail("CUDA is not available to PyTorch (no GPU visible, or no driver in the container)")
    visible = torch.cuda.device_count()

    if "WORLD_SIZE" in os.environ:
        # Started by torchrun (or another launcher): one process of many, rendezvous from env.
        world_size = int(os.environ["WORLD_SIZE"])
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
        if args.gpus not in (None, 0, local_world) and rank == 0:
            print(
                f"gpuforge resnet50: note: --gpus {args.gpus} ignored, the launcher started {local_world} "
                "process(es) per node",
                file=sys.stderr,
                flush=True,
            )
        if local_rank >= visible:
            fail(f"LOCAL_RANK {local_rank} but only {visible} GPU(s) are visible")
        result = run(local_rank, rank, world_size, args, "env://")
        if result is not None:
            report(result)
        return 0

    n = args.gpus if args.gpus is not None else 1
    if n == 0:
        n = visible
    if n > visible:
        fail(f"--gpus {n} but only {visible} GPU(s) are visible")
    if n == 1:
        result = run(0, 0, 1, args, None)
        report(result)
        return 0

    import torch.multiprocessing as mp

    init_method = f"tcp://127.0.0.1:{free_port()}"
    # Children inherit this process's environment unchanged (NCCL_* included).
    mp.spawn(spawned, args=(n, args, init_method), nprocs=n, join=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
