"""Conversion speed and memory: a synthetic >= 300M-parameter bf16 qwen2 checkpoint to bf16 and to q8_0, and a
synthetic Qwen3-MoE checkpoint (Qwen3-30B-A3B's widths: 128 experts per layer stored one tensor each, stacked into
one [128, 768, 2048] tensor per projection as they stream) to bf16 and q8_0.

Baseline, same run: a plain copy of the checkpoint's safetensors file (shutil.copyfile + fsync, page cache
warm as for the conversions; the better of two runs). Tensors whose bytes do not change are copied by the
kernel (copy_file_range), which on some filesystems beats a copy through user space: a ratio above 1 is
possible. Each conversion runs in its own process (the real CLI), so its peak RSS is its
own (os.wait4's rusage for that child). Goals: bf16 output >= 0.5 x the copy's MB/s, peak RSS <= 1.5 x the
largest tensor. `python -m bench.convert` prints the table.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import Row, table

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench"
# Qwen2-1.5B's widths and vocabulary with 12 of its 28 layers and an untied head: 1.03B parameters, 2.06 GB
# of bf16 (the issue asks for >= 300M, larger when the disk allows; a bigger file also keeps the fixed
# costs, interpreter start and a 150k-token vocabulary, from dominating the figure).
SHAPE = dict(hidden=1536, layers=12, vocab=151936, ff=8960, heads=12, kv_heads=2)
# Qwen3-30B-A3B's widths (hidden 2048, 32/4 heads of 128, 128 experts of 768, 8 used, 151,936 tokens) with 2 of
# its 48 layers: 3.7 GB of bf16, each layer's experts 1.2 GB, each stacked projection 403 MB.
MOE_SHAPE = dict(
    hidden=2048, layers=2, vocab=151936, heads=32, kv_heads=4, head_dim=128, experts=128, used=8, moe_ff=768
)
MB = 1e6


def checkpoint() -> Path:
    folder = CACHE / "qwen2-synthetic-{hidden}x{layers}-{vocab}".format(**SHAPE)
    if not (folder / "tokenizer_config.json").is_file():  # written last
        from testkit.fixtures.synthetic import write_synthetic

        shutil.rmtree(folder, ignore_errors=True)
        print(f"building {folder} (once)", file=sys.stderr)
        write_synthetic(folder, **SHAPE)
    return folder


def moe_checkpoint() -> Path:
    folder = CACHE / "qwen3moe-synthetic-{hidden}x{layers}-{experts}x{moe_ff}".format(**MOE_SHAPE)
    if not (folder / "tokenizer_config.json").is_file():  # written last
        from testkit.fixtures.synthetic import write_synthetic_moe

        shutil.rmtree(folder, ignore_errors=True)
        print(f"building {folder} (once)", file=sys.stderr)
        write_synthetic_moe(folder, **MOE_SHAPE)
    return folder


def _read_all(path: Path) -> None:
    """Warm the page cache so copy and conversions read from memory alike."""
    with path.open("rb") as f:
        while f.read(64 << 20):
            pass


def plain_copy(src: Path, dst: Path) -> float:
    t0 = time.perf_counter()
    shutil.copyfile(src, dst)
    with dst.open("rb+") as f:
        os.fsync(f.fileno())
    seconds = time.perf_counter() - t0
    dst.unlink()
    return seconds


def convert(src: Path, out: Path, out_type: str) -> tuple[float, int]:
    """(seconds, peak RSS bytes) of one CLI conversion in a child process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "convert", str(src), str(out), "--type", out_type, "--force", "--quiet"],
        env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"conversion to {out_type} failed with exit {proc.returncode}")
    return seconds, usage.ru_maxrss * 1024  # ru_maxrss is in KiB on Linux


def run() -> list[Row]:
    return run_dense() + run_moe()


def run_moe() -> list[Row]:
    """The MoE checkpoint: time against a plain copy, peak RSS against the largest tensor and one layer's experts."""
    from convert.source import read_tensors

    src = moe_checkpoint()
    weights = src / "model.safetensors"
    tensors = read_tensors(src)
    e, ff, h = MOE_SHAPE["experts"], MOE_SHAPE["moe_ff"], MOE_SHAPE["hidden"]
    stacked = e * ff * h * 2  # one [experts, 768, 2048] bf16 output tensor
    largest = max(stacked, *(t.nbytes for t in tensors.values()))
    layer_experts = 3 * stacked
    size = weights.stat().st_size
    out_dir = CACHE / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    _read_all(weights)
    copy_s = min(plain_copy(weights, out_dir / "copy.safetensors") for _ in range(2))
    copy_rate = size / MB / copy_s
    rows = [
        Row(
            "convert",
            f"qwen3moe: plain file copy ({size / MB:,.0f} MB, {len(tensors):,} tensors)",
            copy_rate,
            "MB/s",
            None,
            "",
            None,
        )
    ]
    for out_type in ("bf16", "q8_0"):
        out = out_dir / f"moe.{out_type}.gguf"
        seconds, rss = convert(src, out, out_type)
        out.unlink()
        rate = size / MB / seconds
        rows += [
            Row("convert", f"qwen3moe {out_type}: {seconds:.2f} s, throughput vs plain copy", rate, "MB/s", rate / copy_rate,
                ">= 0.5 x" if out_type == "bf16" else "", rate / copy_rate >= 0.5 if out_type == "bf16" else None),
            Row("convert", f"qwen3moe {out_type}: peak RSS vs largest tensor ({largest / MB:,.0f} MB)", rss / MB, "MB",
                rss / largest, "<= 1.5 x", rss / largest <= 1.5),
            Row("convert", f"qwen3moe {out_type}: peak RSS vs one layer's experts ({layer_experts / MB:,.0f} MB)", rss / MB,
                "MB", rss / layer_experts, "< 1 x", rss / layer_experts < 1),
        ]  # fmt: skip
    return rows


def run_dense() -> list[Row]:
    from convert.source import read_tensors

    src = checkpoint()
    weights = src / "model.safetensors"
    tensors = read_tensors(src)
    largest = max(t.nbytes for t in tensors.values())
    params = sum(t.nbytes for t in tensors.values()) // 2
    size = weights.stat().st_size
    out_dir = CACHE / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    _read_all(weights)

    copy_s = min(plain_copy(weights, out_dir / "copy.safetensors") for _ in range(2))  # the baseline's best
    copy_rate = size / MB / copy_s
    rows = [
        Row(
            "convert",
            f"plain file copy ({size / MB:,.0f} MB, {params / 1e6:,.0f}M params)",
            copy_rate,
            "MB/s",
            None,
            "",
            None,
        )
    ]
    for out_type in ("bf16", "q8_0"):
        out = out_dir / f"model.{out_type}.gguf"
        seconds, rss = convert(src, out, out_type)
        out.unlink()
        rate = size / MB / seconds
        ratio = rate / copy_rate
        goal_met = ratio >= 0.5 if out_type == "bf16" else None
        rows.append(
            Row(
                "convert",
                f"{out_type}: {seconds:.2f} s, throughput vs plain copy",
                rate,
                "MB/s",
                ratio,
                ">= 0.5 x" if out_type == "bf16" else "",
                goal_met,
            )
        )
        rows.append(
            Row(
                "convert",
                f"{out_type}: peak RSS vs largest tensor ({largest / MB:,.0f} MB)",
                rss / MB,
                "MB",
                rss / largest,
                "<= 1.5 x",
                rss / largest <= 1.5,
            )
        )
    return rows


if __name__ == "__main__":
    print(table(run()))
