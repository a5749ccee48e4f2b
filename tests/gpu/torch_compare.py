#!/usr/bin/env python3
"""Our CUDA prefill against PyTorch on the same warm GPU (run by tests/gpu/check.sh).

For each benchmark shape (bf16, 32 query heads, 8 KV heads, head_dim 128, batch 1, AnLLM mask,
n tokens, mean segment length L), `bench_attention_cuda --dump` builds the problem, times our
kernel (CUDA events, median) and writes the FlexAttention BlockMask arrays our mask export
produces; for the check shapes it also writes q, k, v, our output and lse. This script then
  * checks our output against FlexAttention (our BlockMask + the equivalent mask_mod) and both
    against a float64 reference on sampled rows (relative error < 1e-2 for ours);
  * times FlexAttention (torch.compile'd) with the same mask and scaled_dot_product_attention
    with the dense causal mask (K/V expanded to 32 heads so the flash backend takes it), CUDA
    events, median of repeats, inputs rotated;
  * prints one line per shape: ms of each, our speedup, TFLOP/s on visible work; ours_ms is
    the whole call (the layout's tables, then the kernel), run_ms the kernel alone on tables
    built once (attention_plan / attention_run: a model's layers share one plan);
  * the dump also times a candidate prefill where it runs (tensor_sm90_ws on a Hopper, where
    automatic picks tensor_sm90) and writes its output: it gets the same checks, and its own
    columns (alt_ms, alt_x_sdpa, alt_run_x_sdpa; the kernels are named first).
Needs only torch (no numpy: .npy files are parsed here). Exit status: 0 ok, 1 a check failed,
3 torch / FlexAttention / CUDA unavailable.
"""
import argparse
import ast
import json
import os
import pathlib
import struct
import subprocess
import sys
import time

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("torch_compare: torch is not installed", flush=True)
    sys.exit(3)

SHAPES = [  # (n, L, check): the goal shape first, so a time limit cuts the least useful ones
    (4096, 20, True), (16384, 20, True), (4096, 8, True), (4096, 64, True),
    (16384, 8, False), (16384, 64, False), (65536, 20, False), (65536, 8, False), (65536, 64, False),
]
NPY_DTYPES = {"<i4": torch.int32, "<i8": torch.int64, "<f4": torch.float32, "<u2": torch.int16,
              "|u1": torch.uint8, "|b1": torch.bool}


def load_npy(path, device="cuda"):
    """A .npy file (format 1.x/2.x, little-endian, C order) as a torch tensor."""
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise ValueError(f"{path}: not a .npy file")
        major = f.read(2)[0]
        header_len = struct.unpack("<H" if major == 1 else "<I", f.read(2 if major == 1 else 4))[0]
        header = ast.literal_eval(f.read(header_len).decode("latin1"))
        data = bytearray(f.read())
    if header["fortran_order"]:
        raise ValueError(f"{path}: Fortran order is not supported")
    dtype = NPY_DTYPES[header["descr"]]
    t = torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)
    t = t.reshape(header["shape"])
    if header["descr"] == "<u2":  # raw bf16 bits
        t = t.view(torch.bfloat16)
    return t.to(device)


def make_mask_mod(policy, doc, pos, seg_start, is_anchor):
    """ansan::visible (SPEC sections 2 and 5) with torch ops, as FlexAttention's mask_mod."""
    def mask_mod(b, h, q, k):
        qpos, kpos = pos[b, q], pos[b, k]
        if policy["local"] == "causal":
            lo = torch.zeros_like(qpos)
        elif policy["local"] == "segment":
            lo = seg_start[b, q]
        elif policy["local"] == "window":
            lo = torch.clamp(qpos - policy["window"] + 1, min=0)
        else:
            lo = torch.maximum(seg_start[b, q], qpos - policy["window"] + 1)
        local = (kpos <= qpos) & (kpos >= lo)
        retained_key = kpos < policy["sinks"]
        if policy["retain_anchors"]:
            retained_key = retained_key | is_anchor[b, k]
        if policy["retained_rows"] == "all":
            sees_retained = torch.ones_like(local)
        else:
            sees_retained = ~is_anchor[b, q]
        same = (doc[b, q] == doc[b, k]) & (doc[b, q] >= 0)
        return same & (local | ((kpos < lo) & retained_key & sees_retained))
    return mask_mod


def median_ms(fn, repeats):
    times = []
    for i in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(i)
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]


def row_errors(got, want):
    """Max over rows of max|got - want| / max|want| (rows: all but the last dim); float64."""
    got, want = got.double(), want.double()
    scale = want.abs().amax(dim=-1).clamp(min=1e-3)
    return ((got - want).abs().amax(dim=-1) / scale).max().item()


def reference_rows(q, k, v, mask_mod, rows, scale):
    """float64 attention for the sampled query rows (q: (1, H, S, D), k/v: (1, Hkv, S, D))."""
    group = q.shape[1] // k.shape[1]
    kd = k.double().repeat_interleave(group, dim=1)[0]
    vd = v.double().repeat_interleave(group, dim=1)[0]
    keys = torch.arange(k.shape[2], device=q.device)
    zero = torch.zeros((), dtype=torch.int64, device=q.device)
    outs, lses = [], []
    for r in rows.tolist():
        allowed = mask_mod(zero, zero, torch.full_like(keys, r), keys)  # (S,)
        s = torch.einsum("hd,hkd->hk", q[0, :, r].double(), kd) * scale
        s = s.masked_fill(~allowed, float("-inf"))
        lse = torch.logsumexp(s, dim=-1)
        p = torch.exp(s - lse[:, None]).nan_to_num(0.0)
        outs.append(torch.einsum("hk,hkd->hd", p, vd))
        lses.append(lse)
    return torch.stack(outs), torch.stack(lses)  # (rows, H, D), (rows, H)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", required=True, help="path of the bench_attention_cuda binary")
    ap.add_argument("--work", default="/tmp/ansan-torch", help="scratch directory for the dumps")
    ap.add_argument("--budget-s", type=float, default=170.0, help="start no new shape after this")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--shapes", default="", help="comma list of n:L to run (default: all)")
    args = ap.parse_args()
    t_start = time.time()

    if not torch.cuda.is_available():
        print("torch_compare: torch sees no CUDA device", flush=True)
        return 3
    try:
        from torch.nn.attention.flex_attention import BlockMask, flex_attention
    except ImportError as e:
        print(f"torch_compare: FlexAttention unavailable in torch {torch.__version__}: {e}", flush=True)
        return 3
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}", flush=True)
    flex = torch.compile(flex_attention, dynamic=False)
    bench_env = dict(os.environ)  # the bench binary's libraries staged by prepare.sh
    libs = pathlib.Path(args.bench).resolve().parent.parent / "lib"
    if libs.is_dir():
        bench_env["LD_LIBRARY_PATH"] = f"{libs}:{bench_env.get('LD_LIBRARY_PATH', '')}"
    wanted = {tuple(float(x) for x in s.split(":")) for s in args.shapes.split(",") if s}
    failures = 0
    print("shape              ours_ms   flex_ms   sdpa_ms  x_flex  x_sdpa  ours_TFLOPs   run_ms  run_x_sdpa"
          "   alt_ms   alt_x_sdpa  alt_run_x_sdpa  check", flush=True)
    named = False
    for n, L, check in SHAPES:
        if wanted and (float(n), float(L)) not in wanted:
            continue
        if time.time() - t_start > args.budget_s:
            print(f"n={n} L={L}: not run, the {args.budget_s:.0f}s budget is spent", flush=True)
            continue
        d = pathlib.Path(args.work) / f"n{n}_L{L}"
        cmd = [args.bench, f"--dump={d}", f"--n={n}", f"--L={L}"] + (["--tensors"] if check else [])
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=bench_env)
        ours = json.loads((d / "meta_ours.json").read_text())
        if not named:
            print(f"ours: {ours['kernel']}, alt: {ours['alt_kernel']}"
                  f"{'' if ours.get('alt_ms') is not None else ' (does not run here)'}", flush=True)
            named = True
        meta = json.loads((d / "meta.json").read_text())
        H, Hkv, D, scale = ours["heads_q"], ours["heads_kv"], ours["dim"], ours["softmax_scale"]
        doc, pos, seg_start, is_anchor = (load_npy(d / f"{x}.npy") for x in ("doc", "pos", "seg_start", "is_anchor"))
        mask_mod = make_mask_mod(meta["policy"], doc, pos, seg_start, is_anchor)
        S = meta["seq_len"]
        block_mask = BlockMask.from_kv_blocks(
            load_npy(d / "kv_num_blocks.npy"), load_npy(d / "kv_indices.npy"),
            load_npy(d / "full_kv_num_blocks.npy"), load_npy(d / "full_kv_indices.npy"),
            BLOCK_SIZE=meta["block_size"], mask_mod=mask_mod, seq_lengths=(S, S))

        copies = []  # rotated inputs, (1, heads, S, D)
        if check:
            q, k, v = (load_npy(d / f"{x}.npy").permute(1, 0, 2).unsqueeze(0).contiguous() for x in ("q", "k", "v"))
            copies.append((q, k, v))
        while len(copies) < 2:
            copies.append(tuple(torch.randn(1, h, S, D, device="cuda", dtype=torch.bfloat16) for h in (H, Hkv, Hkv)))

        status = "timing only"
        if check:
            q, k, v = copies[0]
            out_flex = flex(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=True)[0].permute(1, 0, 2)
            out_ours = load_npy(d / "out.npy")  # (S, H, D)
            lse_ours = load_npy(d / "lse.npy")  # (H, S)
            rows = torch.unique(torch.cat([torch.arange(0, S, max(1, S // 192), device="cuda"),
                                           torch.tensor([S - 1], device="cuda")]))
            ref_out, ref_lse = reference_rows(q, k, v, mask_mod, rows, scale)
            err_ours = row_errors(out_ours[rows], ref_out)
            err_flex = row_errors(out_flex[rows], ref_out)
            err_pair = row_errors(out_ours, out_flex.to(out_ours.dtype))
            err_lse = ((lse_ours[:, rows].double().T - ref_lse).abs() / ref_lse.abs().clamp(min=1.0)).max().item()
            ok = err_ours < 1e-2 and err_lse < 1e-3 and err_pair < 2e-2
            status = (f"ours-vs-fp64 {err_ours:.2e} flex-vs-fp64 {err_flex:.2e} "
                      f"ours-vs-flex {err_pair:.2e} lse {err_lse:.1e}")
            if ours.get("alt_ms") is not None:  # the other kernel's output, held to the same bounds
                out_alt, lse_alt = load_npy(d / "out_alt.npy"), load_npy(d / "lse_alt.npy")
                err_alt = row_errors(out_alt[rows], ref_out)
                err_alt_flex = row_errors(out_alt, out_flex.to(out_alt.dtype))
                err_alt_lse = ((lse_alt[:, rows].double().T - ref_lse).abs() / ref_lse.abs().clamp(min=1.0)).max().item()
                ok = ok and err_alt < 1e-2 and err_alt_lse < 1e-3 and err_alt_flex < 2e-2
                status += f" alt-vs-fp64 {err_alt:.2e} alt-vs-flex {err_alt_flex:.2e} alt-lse {err_alt_lse:.1e}"
            failures += not ok
            status = f"{'PASS' if ok else 'FAIL'} {status}"
            print(f"check n={n} L={L}: {status}", flush=True)

        flex_ms = median_ms(lambda i: flex(*copies[i % 2], block_mask=block_mask, scale=scale, enable_gqa=True),
                            args.repeats)
        group = H // Hkv
        dense = [(q, k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)) for q, k, v in copies]
        sdpa_ms = median_ms(lambda i: F.scaled_dot_product_attention(*dense[i % 2], is_causal=True, scale=scale),
                            args.repeats)
        del dense
        tflops = ours["visible_pairs"] * H * 4 * D / (ours["ours_ms"] * 1e-3) / 1e12
        run_ms = ours["ours_run_ms"]
        alt_ms, alt_run_ms = ours.get("alt_ms"), ours.get("alt_run_ms")
        alt = (f"{alt_ms:7.3f}  {sdpa_ms / alt_ms:11.2f}  {sdpa_ms / alt_run_ms:14.2f}" if alt_ms
               else f"{'-':>7}  {'-':>11}  {'-':>14}")
        print(f"n={n:<6} L={L:<3}  {ours['ours_ms']:8.3f}  {flex_ms:8.3f}  {sdpa_ms:8.3f}  "
              f"{flex_ms / ours['ours_ms']:6.2f}  {sdpa_ms / ours['ours_ms']:6.2f}  {tflops:11.1f}  "
              f"{run_ms:7.3f}  {sdpa_ms / run_ms:10.2f}  {alt}  {status}", flush=True)
        del copies, block_mask
        torch.cuda.empty_cache()
    print(f"torch_compare: {failures} check(s) failed, {time.time() - t_start:.0f}s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
