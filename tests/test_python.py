#!/usr/bin/env python3
"""test_python.py -- the Python binding (python/nsa.py) against the
independent vectors, the same cases as the C tests.

    python3 tests/test_python.py [VECTORS]          numpy: the reference
    python3 tests/test_python.py --cuda [VECTORS]   torch on the GPU as well

Needs build/libnsa.so (make shared) and numpy. Without --cuda: the reference
through numpy in fp32 on every case (outputs, lse, selection exact,
gradients) and in bf16 on one, the errors the binding raises, and, when
torch is installed, torch.autograd on CPU tensors (the reference) against
the numpy path, bit for bit, and the GPU check's steps on CPU tensors. With
--cuda (tests/gpu.sh): every case on the GPU through nsa.attention in bf16,
zero-padded to supported head dims and on the vectors' own selection,
outputs and autograd gradients against the vectors; a missing torch, GPU
or CUDA library is a counted skip, said so.
Tolerances are tools/vectors.h's. Ends with "N passed, N failed".
"""
import ctypes
import json
import math
import os
import subprocess
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(ROOT, "python"))

import numpy as np  # noqa: E402
import nsa  # noqa: E402

passed = failed = skipped = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print("FAIL %s%s" % (name, ": " + detail if detail else ""))


def skip(name, why):
    global skipped
    skipped += 1
    print("SKIP %s: %s" % (name, why))


# ---- tolerances (tools/vectors.h) -------------------------------------------
VTOL_FP32, VTOL_BF16, VTOL_LOGIT, VTOL_LSE = 2e-5, 8e-3, 4.0, 2e-6


def close(name, got, exp, rtol, floor=0.0):
    """max |got - exp| <= rtol * max(floor, max |exp|), infinities exact."""
    got = np.asarray(got, dtype=np.float64)
    exp = np.asarray(exp, dtype=np.float64)
    if got.shape != exp.shape:
        check(name, False, "shape %s, expected %s" % (got.shape, exp.shape))
        return
    fin = np.isfinite(exp)
    scale = max(float(np.abs(exp[fin]).max()) if fin.any() else 0.0, floor,
                np.finfo(np.float32).tiny)
    if not np.array_equal(got[~fin], exp[~fin]) or not np.isfinite(got[fin]).all():
        check(name, False, "non-finite entries differ")
        return
    err = float(np.abs(got[fin] - exp[fin]).max()) if fin.any() else 0.0
    check(name, err <= rtol * scale, "max abs err %.3g, tol %.3g" % (err, rtol * scale))


def close_lse(name, got, exp):
    got = np.asarray(got, dtype=np.float64)
    exp = np.asarray(exp, dtype=np.float64)
    fin = np.isfinite(exp)
    ok = np.array_equal(got[~fin], exp[~fin]) and np.isfinite(got[fin]).all()
    tol = VTOL_LSE * np.maximum(1.0, np.abs(exp[fin]))
    err = np.abs(got[fin] - exp[fin])
    check(name, ok and bool((err <= tol).all()),
          "max err/tol %.3g" % (float((err / tol).max()) if err.size else 0.0))


# ---- the vectors -----------------------------------------------------------

def cases(folder):
    """(case dict, its folder) for folder's cases.json and nested folders."""
    out = []
    listing = os.path.join(folder, "cases.json")
    if os.path.exists(listing):
        with open(listing) as f:
            for c in json.load(f):
                out.append((c, os.path.join(folder, c["name"])))
    for sub in sorted(os.listdir(folder)):
        path = os.path.join(folder, sub)
        if os.path.isdir(path) and os.path.exists(os.path.join(path, "cases.json")):
            out.extend(cases(path))
    return out


def case_config(c, scale=0.0):
    g = c["cfg"]
    return nsa.config("paper", l=g["l"], d=g["d"], lp=g["lp"], n=g["n"],
                      n_init=g["n_init"], n_local=g["n_local"], w=g["w"],
                      bq=g["bq"], score_mode=g["mode"],
                      branches=",".join(c["branches"]), scale=scale)


def load(folder, name):
    path = os.path.join(folder, name + ".npy")
    return np.load(path) if os.path.exists(path) else None


def sel_counts(sel):
    return (sel >= 0).sum(axis=-1).astype(np.int32)


def grad_floor(exp, name):
    """dq / dk: scale at least 0.1 * max |expected| of the other one."""
    other = {"dq": "dk", "dk": "dq"}.get(name)
    return 0.1 * float(np.abs(exp[other]).max()) if other else 0.0


def run_reference_case(c, folder):
    name = c["name"]
    a = {n: load(folder, n) for n in ("q", "k", "v", "gates", "do", "cu_seqlens",
                                       "cu_seqlens_q", "o", "lse_cmp", "lse_slc",
                                       "lse_win", "sel_idx", "dq", "dk", "dv",
                                       "dgates")}
    gates = a["gates"] if c.get("gates") else None
    cfg = case_config(c)
    L = max(float(np.abs(a[n][np.isfinite(a[n])]).max(initial=0.0))
            for n in ("lse_cmp", "lse_slc", "lse_win") if a[n] is not None)
    rtol = VTOL_FP32 + VTOL_LOGIT * L / 2.0 ** 24
    o, saved = nsa.ref_forward(cfg, a["q"], a["k"], a["v"], a["cu_seqlens"],
                               gates=gates, cu_seqlens_q=a["cu_seqlens_q"])
    close("%s/o(fp32)" % name, o, a["o"], rtol)
    for br in ("cmp", "slc", "win"):
        if br in c["branches"]:
            close_lse("%s/lse_%s(fp32)" % (name, br), getattr(saved, "lse_" + br),
                      a["lse_" + br])
    if "slc" in c["branches"]:
        check("%s/sel_idx(fp32) exact" % name,
              np.array_equal(saved.sel_idx, a["sel_idx"]))
    g = nsa.ref_backward(saved, a["do"])
    exp = {n: a[n] for n in ("dq", "dk", "dv")}
    for n in ("dq", "dk", "dv") + (("dgates",) if gates is not None else ()):
        close("%s/%s(fp32)" % (name, n), g[n], a[n], rtol, grad_floor(exp, n))
    # The branches' outputs kept for backward: the same bits everywhere.
    o2, saved2 = nsa.ref_forward(cfg, a["q"], a["k"], a["v"], a["cu_seqlens"],
                                 gates=gates, cu_seqlens_q=a["cu_seqlens_q"],
                                 keep_branch_outputs=True)
    g2 = nsa.ref_backward(saved2, a["do"])
    check("%s/branch_outputs_kept_change_no_bit(fp32)" % name,
          o2.tobytes() == o.tobytes() and saved2.o_branch.shape ==
          (3,) + o.shape and all(g2[n].tobytes() == g[n].tobytes() for n in g))
    return a, gates, cfg


def run_bf16_case(c, a, gates, cfg):
    """bf16 storage on the vectors' own selection (passed as the caller's):
    the bf16 paths and the selection pass-through."""
    name = c["name"]
    b = {n: nsa.to_bf16(a[n]) for n in ("q", "k", "v", "do")}
    gb = None if gates is None else nsa.to_bf16(gates)
    check("%s/inputs exact in bf16" % name,
          np.array_equal(nsa.from_bf16(b["q"]), a["q"]))
    o, saved = nsa.ref_forward(cfg, b["q"], b["k"], b["v"], a["cu_seqlens"],
                               gates=gb, cu_seqlens_q=a["cu_seqlens_q"],
                               dtype="bf16", sel_idx=a["sel_idx"],
                               sel_count=sel_counts(a["sel_idx"]))
    close("%s/o(bf16)" % name, nsa.from_bf16(o), a["o"], VTOL_BF16)
    check("%s/caller selection kept(bf16)" % name,
          np.array_equal(saved.sel_idx, a["sel_idx"]))
    g = nsa.ref_backward(saved, b["do"])
    exp = {n: a[n] for n in ("dq", "dk", "dv")}
    for n in ("dq", "dk", "dv") + (("dgates",) if gates is not None else ()):
        close("%s/%s(bf16)" % (name, n), nsa.from_bf16(g[n]), a[n], VTOL_BF16,
              grad_floor(exp, n))


def check_errors(vectors):
    # The library's own message, naming the field to fix.
    cfg = nsa.config("paper")
    q = np.zeros((10, 2, 8), np.float32)
    kv = np.zeros((10, 1, 8), np.float32)
    try:
        nsa.ref_forward(cfg, q, kv, kv, [0, 4, 11])
        check("bad_cu_seqlens_raises", False, "no exception")
    except nsa.Error as e:
        check("bad_cu_seqlens_raises_naming_batch_T",
              "NSA_ERR_INVALID_BATCH" in str(e) and "batch.T" in str(e), str(e))
    try:
        nsa.ref_forward(cfg, q.astype(np.float64), kv, kv, [0, 10])
        check("float64_is_refused", False, "no exception")
    except TypeError as e:
        check("float64_is_refused_with_a_message", "float32" in str(e), str(e))
    # No library: a clear message at first use, nothing compiled.
    env = dict(os.environ, NSA_LIBRARY=os.path.join(ROOT, "build", "no_such_libnsa.so"))
    r = subprocess.run([sys.executable, "-c",
                        "import sys; sys.path.insert(0, %r); import nsa\n"
                        "try:\n    nsa.config()\nexcept nsa.Error as e:\n    print(e)"
                        % os.path.join(ROOT, "python")],
                       env=env, capture_output=True, text=True)
    check("missing_library_gives_a_clear_error",
          r.returncode == 0 and "make shared" in r.stdout and "not built" in r.stdout,
          (r.stdout + r.stderr).strip())


def check_torch_cpu(c, a, gates, cfg):
    """torch.autograd over CPU tensors (the reference) == the numpy path."""
    import torch
    name = c["name"]
    t = {n: torch.from_numpy(a[n].copy()).requires_grad_(n in ("q", "k", "v"))
         for n in ("q", "k", "v")}
    tg = None if gates is None else torch.from_numpy(gates.copy()).requires_grad_(True)
    cuq = None if a["cu_seqlens_q"] is None else torch.from_numpy(a["cu_seqlens_q"])
    o = nsa.attention(t["q"], t["k"], t["v"], torch.from_numpy(a["cu_seqlens"]),
                      cfg=cfg, gates=tg, cu_seqlens_q=cuq)
    (o * torch.from_numpy(a["do"])).sum().backward()
    o_np, saved = nsa.ref_forward(cfg, a["q"], a["k"], a["v"], a["cu_seqlens"],
                                  gates=gates, cu_seqlens_q=a["cu_seqlens_q"])
    g = nsa.ref_backward(saved, a["do"])
    check("%s/torch_cpu_o_equals_numpy_bitwise" % name,
          np.array_equal(o.detach().numpy(), o_np))
    for n in ("q", "k", "v"):
        check("%s/torch_cpu_d%s_equals_numpy_bitwise" % (name, n),
              np.array_equal(t[n].grad.numpy(), g["d" + n]))
    if tg is not None:
        check("%s/torch_cpu_dgates_equals_numpy_bitwise" % name,
              np.array_equal(tg.grad.numpy(), g["dgates"]))


def pad_dims(Dk, Dv):
    for pk, pv in ((64, 64), (128, 128), (192, 128)):
        if Dk <= pk and Dv <= pv:
            return pk, pv
    return None


def check_torch_device(c, a, gates, where):
    """nsa.attention and autograd on torch tensors of device `where`, bf16,
    on the vectors' own selection, zero-padded to the head dims the CUDA
    path supports (the padded components change no logit; the scale stays
    the case's 1/sqrt(Dk)). "cuda" is the GPU path; "cpu" runs the same
    steps on the reference, which checks this test itself where no GPU is."""
    import torch
    name = "%s/%s" % (c["name"], where)
    dims = pad_dims(c["Dk"], c["Dv"])
    if dims is None:
        skip(name, "no supported head dims hold Dk %d, Dv %d" % (c["Dk"], c["Dv"]))
        return
    Pk, Pv = dims
    dev = torch.device(where)

    def padded(x, P):
        out = np.zeros(x.shape[:-1] + (P,), np.float32)
        out[..., :x.shape[-1]] = x
        return torch.from_numpy(out).to(dev, torch.bfloat16).requires_grad_(True)

    do = torch.zeros((a["do"].shape[0], a["do"].shape[1], Pv), device=dev)
    do[..., :c["Dv"]] = torch.from_numpy(a["do"]).to(dev)
    cfg = case_config(c, scale=1.0 / math.sqrt(c["Dk"]))
    cuq = None if a["cu_seqlens_q"] is None else torch.from_numpy(a["cu_seqlens_q"])
    sel = torch.from_numpy(a["sel_idx"]).to(dev)
    cnt = torch.from_numpy(sel_counts(a["sel_idx"])).to(dev)
    exp = {n: a[n] for n in ("dq", "dk", "dv")}
    # twice: the backward recomputing each branch, then reading the
    # branches' outputs the forward kept (keep_branch_outputs)
    for keep, tag in ((False, ""), (True, " o_c kept")):
        q, k, v = padded(a["q"], Pk), padded(a["k"], Pk), padded(a["v"], Pv)
        tg = (None if gates is None
              else torch.from_numpy(gates).to(dev, torch.bfloat16).requires_grad_(True))
        o = nsa.attention(q, k, v, torch.from_numpy(a["cu_seqlens"]), cfg=cfg, gates=tg,
                          cu_seqlens_q=cuq, sel_idx=sel, sel_count=cnt,
                          keep_branch_outputs=keep)
        (o.float() * do).sum().backward()
        if where == "cuda":
            torch.cuda.synchronize()
        close("%s o(bf16)%s" % (name, tag), o.detach().float()[..., :c["Dv"]].cpu().numpy(),
              a["o"], VTOL_BF16)
        check("%s padded o components are zero%s" % (name, tag),
              bool((o[..., c["Dv"]:] == 0).all()))
        for n, t, D in (("dq", q, c["Dk"]), ("dk", k, c["Dk"]), ("dv", v, c["Dv"])):
            close("%s %s(bf16)%s" % (name, n, tag), t.grad.float()[..., :D].cpu().numpy(),
                  a[n], VTOL_BF16, grad_floor(exp, n))
        if tg is not None:
            close("%s dgates(bf16)%s" % (name, tag), tg.grad.float().cpu().numpy(),
                  a["dgates"], VTOL_BF16)


def main():
    args = [x for x in sys.argv[1:] if not x.startswith("--")]
    want_cuda = "--cuda" in sys.argv[1:]
    vectors = args[0] if args else os.environ.get("VECTORS",
                                                   os.path.join(ROOT, "..", "shared", "vectors"))
    try:
        lib = nsa.library()
    except nsa.Error as e:
        print("FAIL library: %s" % e)
        print("0 passed, 1 failed")
        return 1
    print("library: %s" % lib._name)
    check_errors(vectors)
    if not os.path.isdir(vectors):
        check("vectors_folder_exists", False, "no folder %s" % vectors)
        all_cases = []
    else:
        all_cases = cases(vectors)
        check("vectors_have_cases", len(all_cases) > 0, vectors)
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
        skip("torch", "torch is not installed: autograd checks not run")
    cuda_ok = False
    if want_cuda:
        if not have_torch:
            skip("cuda", "torch is not installed")
        elif not torch.cuda.is_available():
            skip("cuda", "torch sees no GPU")
        elif not nsa._has_cuda(lib):
            skip("cuda", "%s has no CUDA path (make shared with nvcc)" % lib._name)
        else:
            cuda_ok = True
    bf16_done = False
    for c, folder in all_cases:
        a, gates, cfg = run_reference_case(c, folder)
        if not bf16_done and gates is not None and "slc" in c["branches"]:
            run_bf16_case(c, a, gates, cfg)
            bf16_done = True
        if have_torch and c["name"] in ("paper_varlen", "suffix_decode_prefill"):
            check_torch_cpu(c, a, gates, cfg)
            check_torch_device(c, a, gates, "cpu")
        if cuda_ok:
            check_torch_device(c, a, gates, "cuda")
    if all_cases:
        check("a_bf16_case_ran", bf16_done)
    if skipped:
        print("%d skipped (not counted as passed)" % skipped)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
