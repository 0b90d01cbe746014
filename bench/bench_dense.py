"""bench_dense.py -- dense causal attention (torch SDPA) beside bench_cuda.

Same shape as bench_cuda's NSA rows: B=1, H=64 query heads, Hkv=4 (K/V
expanded to 64 heads before timing), D=128, bf16, causal; forward and
forward+backward through the cuDNN and the flash backends of
torch.nn.functional.scaled_dot_product_attention; then torch.topk on
[rows, 129280] fp32 for rows 32 and 2048, k = 64, 1024, 2048 (what:
torch_topk_r<rows>_k<k>, beside bench_cuda's topk_r<rows>_k<k>). CUDA
events, warm-up, median.
Useful TFLOP/s counts 4*D*H*T*(T+1)/2 for the forward, 2.5x that more for
the backward.

--decode times dense decoding instead, the shapes of bench_cuda --decode:
one query per sequence (q [B, 64, 1, 128]) against the whole cache
(K, V [B, 4, ctx, 128], GQA without expanding K and V), batch 1, 8, 64 and
ctx 8K, 64K, 128K, through each SDPA backend that takes the shape, and
flash_attn_with_kvcache (flash-decoding) when the flash_attn package is
installed; what = sdpa_<backend>_decode_b<B>_ctx<T> or
flash_decoding_b<B>_ctx<T>, and dense_best_decode_b<B>_ctx<T> for the
fastest, beside bench_cuda's decode_b<B>_ctx<T>; --decode-ctx T only the
context T.

usage: python3 bench_dense.py [--tmin T] [--tmax T] [--reps N] [--csv FILE]
                              [--topk-only] [--decode [--decode-ctx T]]"""
import argparse
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def median_ms(fn, reps):
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def run_decode(reps, out, ctx_only=0):
    """Dense decoding: the time of one step and the bandwidth it reaches on
    the cache's bytes (K and V read once)."""
    H, Hkv, D = 64, 4, 128
    try:
        from flash_attn import flash_attn_with_kvcache
    except ImportError:
        flash_attn_with_kvcache = None
    backends = (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION),
                ("efficient", SDPBackend.EFFICIENT_ATTENTION), ("math", SDPBackend.MATH))
    print(f"\ndense decoding, H={H} Hkv={Hkv} D={D} bf16, one query per sequence")
    print(f"{'backend':>16} {'B':>4} {'ctx':>7} {'ms':>9} {'TB/s':>7}")
    for T in (8192, 65536, 131072):
        if ctx_only and T != ctx_only:
            continue
        for B in (1, 8, 64):
            q = torch.randn(B, H, 1, D, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(B, Hkv, T, D, device="cuda", dtype=torch.bfloat16)
            v = torch.randn(B, Hkv, T, D, device="cuda", dtype=torch.bfloat16)
            nbytes = 2.0 * B * Hkv * T * D * 2
            times = {}
            for bname, be in backends:
                if bname == "math" and B * T > 65536:
                    continue  # materialises [B, H, 1, T] scores and expanded K, V: slow
                try:
                    with sdpa_kernel(be):
                        def step():
                            with torch.no_grad():
                                F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
                        times[f"sdpa_{bname}"] = median_ms(step, reps)
                except Exception as e:  # backend not available for this shape
                    print(f"{bname:>16} {B:>4} {T:>7} unavailable: {str(e)[:60]}")
            if flash_attn_with_kvcache is not None:
                qf, kf, vf = (x.transpose(1, 2).contiguous() for x in (q, k, v))

                def fd():
                    with torch.no_grad():
                        flash_attn_with_kvcache(qf, kf, vf)
                times["flash_decoding"] = median_ms(fd, reps)
                del qf, kf, vf
            for name, t in times.items():
                print(f"{name:>16} {B:>4} {T:>7} {t:>9.4f} {nbytes / t / 1e9:>7.2f}")
                if out:
                    out.write(f"{name}_decode_b{B}_ctx{T},{T},{t:.4f},,\n")
            if times:
                best = min(times, key=times.get)
                print(f"{'best: ' + best:>30} {times[best]:.4f} ms")
                if out:
                    out.write(f"dense_best_decode_b{B}_ctx{T},{T},{times[best]:.4f},,\n")
            del q, k, v
            torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tmin", type=int, default=8192)
    ap.add_argument("--tmax", type=int, default=131072)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--tmul", type=int, default=2)
    ap.add_argument("--csv", default=None)
    ap.add_argument("--topk-only", action="store_true", help="skip SDPA, time torch.topk only")
    ap.add_argument("--decode", action="store_true", help="time dense decoding only")
    ap.add_argument("--decode-ctx", type=int, default=0, help="with --decode: only this context")
    a = ap.parse_args()
    name = torch.cuda.get_device_name(0)
    peak = 756.0 if "PCIe" in name else 989.0
    print(f"device: {name}, torch {torch.__version__}, peak taken as {peak:.0f} TFLOP/s")
    out = open(a.csv, "w") if a.csv else None
    if out:
        out.write("what,T,ms,tflops,frac_peak\n")
    if a.decode:
        run_decode(a.reps, out, a.decode_ctx)
        if out:
            out.close()
        return
    H, D = 64, 128
    print(f"\ndense causal SDPA, B=1 H={H} D={D} bf16")
    print(f"{'backend':>8} {'T':>7} {'reps':>5} {'fwd ms':>9} {'TFLOP/s':>8} {'fwd+bwd ms':>11} {'TFLOP/s':>8} {'of peak':>8}")
    T = a.tmin
    while T <= a.tmax and not a.topk_only:
        # the largest sizes take seconds per call: fewer repetitions there
        reps = a.reps if T <= 32768 else max(3, a.reps // 4)
        q = torch.randn(1, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn(1, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(1, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        do = torch.randn(1, H, T, D, device="cuda", dtype=torch.bfloat16)
        f_fwd = 4.0 * D * H * T * (T + 1) / 2
        f_fb = 3.5 * f_fwd
        for bname, be in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
            try:
                with sdpa_kernel(be):
                    def fwd():
                        with torch.no_grad():
                            F.scaled_dot_product_attention(q, k, v, is_causal=True)

                    def fb():
                        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                        o.backward(do)

                    tf = median_ms(fwd, reps)
                    tb = median_ms(fb, reps)
            except Exception as e:  # backend not available for this shape
                print(f"{bname:>8} {T:>7} unavailable: {str(e)[:60]}")
                continue
            a1, a2 = f_fwd / tf / 1e9, f_fb / tb / 1e9
            print(f"{bname:>8} {T:>7} {reps:>5} {tf:>9.3f} {a1:>8.1f} {tb:>11.3f} {a2:>8.1f} {100 * a2 / peak:>7.1f}%")
            if out:
                out.write(f"sdpa_{bname}_fwd,{T},{tf:.4f},{a1:.2f},{a1 / peak:.4f}\n")
                out.write(f"sdpa_{bname}_fwd_bwd,{T},{tb:.4f},{a2:.2f},{a2 / peak:.4f}\n")
        del q, k, v, do
        torch.cuda.empty_cache()
        T *= a.tmul
    cols = 129280
    print(f"\ntorch.topk per row, {cols} columns, fp32 (the shapes of bench_cuda --topk)")
    for rows in (32, 2048):
        x = torch.rand(rows, cols, device="cuda")
        for kk in (64, 1024, 2048):
            t = median_ms(lambda: torch.topk(x, kk, dim=1), a.reps)
            print(f"{rows:>6} {kk:>6} {t:>10.4f} ms")
            if out:
                out.write(f"torch_topk_r{rows}_k{kk},{cols},{t:.4f},,\n")
        del x
    if out:
        out.close()


if __name__ == "__main__":
    main()
