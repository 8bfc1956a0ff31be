"""Writing the GGUF: a temporary file beside the target, streamed tensor by tensor, renamed at the end.

GGUFWriter writes the header, metadata and tensor table (`add_tensor_info` for every tensor first). Tensor
data then goes out one tensor at a time and, within a tensor, block by block: `GGUFWriter.write_tensor_data`
takes a whole tensor as one array, which for a float32 view of a large embedding is several times the size
of the tensor, so `_write_data` does the same bookkeeping with the data in pieces. A tensor whose bytes are
unchanged (or a concatenation of unchanged tensors, as stacked experts) is copied file-to-file by the kernel
(`os.copy_file_range`) and never enters this process.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
from collections.abc import Iterator
from io import BufferedWriter
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from gguf import GGML_QUANT_VERSION, GGUFEndian, GGUFValueType, GGUFWriter, LlamaFileType
from gguf.gguf_writer import WriterState
from tqdm import tqdm

from convert.arch import OutTensor, Plan
from convert.errors import OutputError
from convert.source import TensorRef
from convert.vocab import Vocab

FILE_TYPES: dict[str, LlamaFileType] = {
    "f32": LlamaFileType.ALL_F32,
    "f16": LlamaFileType.MOSTLY_F16,
    "bf16": LlamaFileType.MOSTLY_BF16,
    "q8_0": LlamaFileType.MOSTLY_Q8_0,
}
# Types llama.cpp's own quantizer produces from an intermediate file (llama_ftype values).
LLAMA_QUANT_FTYPES: dict[str, int] = {"q4_0": 2, "q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}
OUT_TYPES = (*FILE_TYPES, *LLAMA_QUANT_FTYPES)
COPY_CHUNK = 64 * 1024 * 1024


def temp_name(target: Path, tag: str = "tmp") -> Path:
    """Hidden, beside the target, not ending in .gguf, and carrying our pid so a later run can tell it is stale."""
    return target.with_name(f".{target.name}.{tag}-{os.getpid()}")


def remove_stale_temps(target: Path) -> None:
    """Temp files left by a conversion that was killed (SIGKILL cannot be caught) whose process is gone."""
    for path in target.parent.glob(f".{target.name}.*-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def removed_on_failure(*paths: Path) -> Iterator[None]:
    """Delete the temp files if anything (an error, Ctrl-C, SIGTERM turned into an exception) escapes."""
    try:
        yield
    except BaseException:
        for p in paths:
            p.unlink(missing_ok=True)
        raise
    finally:
        for p in paths[1:]:  # intermediates never outlive the call
            p.unlink(missing_ok=True)


class _Writer(GGUFWriter):
    """GGUFWriter that packs long metadata arrays (tokens, scores, types, merges) in bulk.

    gguf-py packs an array element by element through `_pack_val`; for a 150k-token vocabulary that took
    longer than copying a 0.8 GB model's tensors. Same bytes, packed with one join / one numpy call.
    (gguf is pinned, so overriding its packing helper is safe; anything unusual goes to the original.)
    """

    _NUMPY: ClassVar[dict[GGUFValueType, str]] = {
        GGUFValueType.INT32: "<i4",
        GGUFValueType.UINT32: "<u4",
        GGUFValueType.FLOAT32: "<f4",
    }

    def _pack_val(
        self, val: Any, vtype: GGUFValueType, add_vtype: bool, sub_type: GGUFValueType | None = None
    ) -> bytes:
        if vtype != GGUFValueType.ARRAY or not isinstance(val, (list, tuple)) or len(val) < 64:
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        first = type(val[0])
        if sub_type is None and (first not in (str, int, float) or not all(type(v) is first for v in val)):
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        ltype = sub_type if sub_type is not None else GGUFValueType.get_type(val[0])
        if ltype == GGUFValueType.STRING:
            size = struct.Struct("<Q").pack
            encoded = [v.encode("utf-8") for v in val]
            body = b"".join(part for e in encoded for part in (size(len(e)), e))
        elif ltype in self._NUMPY and self.endianess == GGUFEndian.LITTLE:
            body = np.asarray(val, dtype=self._NUMPY[ltype]).tobytes()
        else:
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        head = self._pack("I", vtype) if add_vtype else b""
        return head + self._pack("I", ltype) + self._pack("Q", len(val)) + body


def write_gguf(plan: Plan, vocab: Vocab, path: Path, out_type: str, *, name: str, progress: bool) -> None:
    w = _Writer(path, plan.arch.name)
    w.add_name(name)
    w.add_file_type(FILE_TYPES[out_type])
    w.add_quantization_version(GGML_QUANT_VERSION)
    for key, value, vtype in plan.meta:
        w.add_key_value(key, value, vtype)
    vocab.add_to(w)
    for t in plan.tensors:
        # the dtype argument only matters for uint8 data given in bytes; our shapes are always in elements
        w.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.ggml_type)
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        total = sum(t.nbytes for t in plan.tensors)
        with tqdm(total=total, unit="B", unit_scale=True, desc=path.name.split(".tmp-")[0].lstrip("."),
                  disable=not progress) as bar:  # fmt: skip
            for t in plan.tensors:
                _write_data(w, t, bar)
        w.flush()
        assert w.fout is not None
        os.fsync(w.fout[0].fileno())
    finally:
        w.close()


def _write_data(w: GGUFWriter, t: OutTensor, bar: tqdm) -> None:
    assert w.fout is not None and len(w.fout) == 1
    fout = w.fout[0]
    first = next(iter(w.tensors[0]))
    if first != t.name:
        raise RuntimeError(f"tensor {t.name} written out of order (expected {first})")
    w.tensors[0].pop(first)
    w.write_padding(fout, fout.tell())
    written = 0
    if t.sources and _kernel_copy(t.sources, fout, bar):
        written = t.nbytes
    else:
        for chunk in t.produce():
            data = chunk.data.cast("B")
            fout.write(data)
            written += len(data)
            bar.update(len(data))
    if written != t.nbytes:
        raise RuntimeError(f"tensor {t.name}: wrote {written} bytes, planned {t.nbytes}")
    w.write_padding(fout, t.nbytes)
    w.state = WriterState.WEIGHTS


def _kernel_copy(refs: tuple[TensorRef, ...], fout: BufferedWriter, bar: tqdm) -> bool:
    """Copy the tensors' byte ranges, one after the other, straight from their files; False when the kernel cannot
    (the output is then as it was before the call)."""
    if not hasattr(os, "copy_file_range"):
        return False
    fout.flush()
    dst = fout.fileno()
    start = os.lseek(dst, 0, os.SEEK_CUR)
    done = 0
    try:
        for ref in refs:
            src = os.open(ref.path, os.O_RDONLY)
            try:
                copied = 0
                while copied < ref.nbytes:
                    n = os.copy_file_range(src, dst, min(COPY_CHUNK, ref.nbytes - copied), ref.offset + copied)
                    if n == 0:
                        raise OutputError(f"{ref.path.name}: file ends inside tensor {ref.name} (truncated?)")
                    copied += n
                    done += n
                    bar.update(n)
            finally:
                os.close(src)
    except OSError:
        if done:
            bar.update(-done)
        os.lseek(dst, start, os.SEEK_SET)
        os.ftruncate(dst, start)
        return False
    fout.seek(0, os.SEEK_END)  # resync the buffered file with the fd
    return True


def llama_quantize(src: Path, dst: Path, out_type: str) -> None:
    """q4_0 / k-quants through llama.cpp's own quantizer (it copies metadata and vocab as they are)."""
    try:
        import llama_cpp
    except ImportError as e:
        raise OutputError(f"--type {out_type} needs llama-cpp-python, which is not importable ({e})") from e
    from llama_cpp import _logger

    _logger.set_verbose(False)  # llama.cpp reports every tensor it quantizes; errors still come through
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_QUANT_FTYPES[out_type]
    params.nthread = os.cpu_count() or 1
    keep = _keep_quantized(src, llama_cpp.llama_model_tensor_override)
    if keep is not None:
        params.tt_overrides = keep
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise OutputError(f"llama.cpp could not quantize to {out_type} (error {rc})")


def _keep_quantized(src: Path, override: type[ctypes.Structure]) -> ctypes.Array[ctypes.Structure] | None:
    """Tensors the intermediate already holds quantized (gpt-oss's MXFP4 experts) keep their type.

    llama.cpp refuses to requantize them ("requantizing from type mxfp4 is disabled"); a per-tensor type
    override equal to the current type makes it copy them unchanged instead.
    """
    import re

    from gguf import GGMLQuantizationType, GGUFReader

    plain = (GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16)
    kept = [t for t in GGUFReader(src).tensors if t.tensor_type not in plain]
    if not kept:
        return None
    table = (override * (len(kept) + 1))()  # the last entry (pattern NULL) ends the list
    for i, t in enumerate(kept):
        table[i].pattern = f"^{re.escape(t.name)}$".encode()
        table[i].type = int(t.tensor_type)
    return table
