"""nsa -- Native Sparse Attention from Python, through the C library.

A thin ctypes binding of nsa.h: nothing is compiled at import time. Build the
shared library first, from the repository root:

    make shared      # build/libnsa.so (the reference); with nvcc also
                     # build/libnsa_cuda.so (reference + CUDA path)

The module loads $NSA_LIBRARY if set, else build/libnsa_cuda.so, else
build/libnsa.so (next to this file's folder), on first use.

Reference, numpy arrays (float32, float16, or bf16 bits as uint16 with
dtype="bf16"):

    import numpy as np, nsa
    cfg = nsa.config("paper")
    o, saved = nsa.ref_forward(cfg, q, k, v, cu_seqlens)      # q [T, H, Dk] ...
    grads = nsa.ref_backward(saved, d_o)                       # dq, dk, dv[, dgates]

PyTorch, with autograd (CUDA tensors run the CUDA path on the current stream,
CPU tensors the reference):

    o = nsa.attention(q, k, v, cu_seqlens, cfg=nsa.config("paper"))
    o.float().square().sum().backward()

Every failure of the library raises nsa.Error with the library's message
(nsa_last_error), which names the argument and the rule it broke.
"""
import ctypes
import os

__all__ = ["Error", "config", "ref_forward", "ref_backward", "attention",
           "to_bf16", "from_bf16", "library"]

BF16, FP16, FP32 = 0, 1, 2
BRANCH_CMP, BRANCH_SLC, BRANCH_WIN = 1, 2, 4


class Error(RuntimeError):
    """A status other than NSA_OK, or a library that is not built."""


# ---- ctypes mirrors of nsa.h's structs (checked against nsa_py_layout) ----

class Config(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int) for n in
                ("l", "d", "lp", "n", "n_init", "n_local", "w", "bq",
                 "score_mode")] + [
        ("branches", ctypes.c_uint), ("scale", ctypes.c_float),
        ("caller_compressed", ctypes.c_int), ("deterministic", ctypes.c_int),
        ("accum", ctypes.c_int)]


_p = ctypes.c_void_p
_i64 = ctypes.c_int64


class Batch(ctypes.Structure):
    _fields_ = [
        ("B", ctypes.c_int), ("T", _i64), ("TQ", _i64),
        ("cu_seqlens", _p), ("cu_seqlens_q", _p),
        ("cu_seqlens_dev", _p), ("cu_seqlens_q_dev", _p),
        ("H", ctypes.c_int), ("Hkv", ctypes.c_int),
        ("Dk", ctypes.c_int), ("Dv", ctypes.c_int), ("dtype", ctypes.c_int),
        ("q", _p), ("q_stride_token", _i64), ("q_stride_head", _i64),
        ("k", _p), ("k_stride_token", _i64), ("k_stride_head", _i64),
        ("v", _p), ("v_stride_token", _i64), ("v_stride_head", _i64),
        ("k_cmp", _p), ("v_cmp", _p), ("sel_idx", _p), ("sel_count", _p)]


class Sizes(ctypes.Structure):
    _fields_ = [(n, _i64) for n in
                ("T", "TQ", "Tc", "units", "max_slc_blocks", "q", "k", "v",
                 "o", "gates", "lse", "k_cmp", "v_cmp", "sel_idx", "sel_count",
                 "block_mask")] + [
        ("scale", ctypes.c_double), ("nbranch", ctypes.c_int)] + [
        (n, _i64) for n in ("q_stride_token", "q_stride_head",
                            "k_stride_token", "k_stride_head",
                            "v_stride_token", "v_stride_head")]


class Saved(ctypes.Structure):
    _fields_ = [(n, _p) for n in ("lse_cmp", "lse_slc", "lse_win", "sel_idx",
                                  "sel_count", "k_cmp", "v_cmp", "o_branch")]


class Grads(ctypes.Structure):
    _fields_ = [(n, _p) for n in ("dq", "dk", "dv", "dgates", "dk_cmp",
                                  "dv_cmp")]


# ---- the library ----------------------------------------------------------

_lib = None


def _candidates():
    if os.environ.get("NSA_LIBRARY"):
        return [os.environ["NSA_LIBRARY"]]
    build = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                         "build")
    return [os.path.normpath(os.path.join(build, name))
            for name in ("libnsa_cuda.so", "libnsa.so")]


def library():
    """The loaded ctypes library (loaded on first use)."""
    global _lib
    if _lib is not None:
        return _lib
    paths = _candidates()
    path = next((p for p in paths if os.path.exists(p)), None)
    if path is None:
        raise Error("nsa: the shared library is not built (looked for %s); "
                    "run `make shared` in the repository root, or set "
                    "NSA_LIBRARY to the library's path" % ", ".join(paths))
    lib = ctypes.CDLL(path)
    lib.nsa_last_error.restype = ctypes.c_char_p
    lib.nsa_status_string.restype = ctypes.c_char_p
    lib.nsa_py_layout.restype = _i64
    for i, cls in enumerate((Config, Batch, Sizes, Saved, Grads)):
        if lib.nsa_py_layout(i) != ctypes.sizeof(cls):
            raise Error("nsa: %s has %d bytes in %s but %d here: the module "
                        "and the library are from different versions"
                        % (cls.__name__, lib.nsa_py_layout(i), path,
                           ctypes.sizeof(cls)))
    if (lib.nsa_py_layout(5) != Batch.sel_count.offset or
            lib.nsa_py_layout(6) != Sizes.v_stride_head.offset):
        raise Error("nsa: struct field offsets differ between %s and the "
                    "module" % path)
    for name in ("nsa_config_paper", "nsa_config_fla"):
        getattr(lib, name).restype = Config
    lib.nsa_config_tile.restype = Config
    _lib = lib
    return lib


def _has_cuda(lib):
    try:
        lib.nsa_cuda_forward
        return True
    except AttributeError:
        return False


def _call(fn, *args):
    lib = library()
    status = getattr(lib, fn)(*args)
    if status != 0:
        raise Error("%s: %s: %s" % (fn, lib.nsa_status_string(status).decode(),
                                    lib.nsa_last_error().decode()))


# ---- configuration --------------------------------------------------------

def config(preset="paper", **fields):
    """An nsa_config: preset "paper", "fla" or "tile" (nsa_config_tile(lp,
    bq), lp and bq from fields, default 64), then any field of nsa_config by
    name; branches may be a string such as "cmp,slc" and score_mode "probs"
    or "logits"."""
    lib = library()
    if preset == "paper":
        cfg = lib.nsa_config_paper()
    elif preset == "fla":
        cfg = lib.nsa_config_fla()
    elif preset == "tile":
        cfg = lib.nsa_config_tile(int(fields.get("lp", 64)),
                                  int(fields.get("bq", 64)))
    else:
        raise ValueError("preset: must be paper, fla or tile (got %r)" % preset)
    for name, value in fields.items():
        if name == "branches" and isinstance(value, str):
            bits = {"cmp": BRANCH_CMP, "slc": BRANCH_SLC, "win": BRANCH_WIN}
            value = sum(bits[b.strip()] for b in value.split(",") if b.strip())
        if name == "score_mode" and isinstance(value, str):
            value = {"probs": 0, "logits": 1}[value]
        if name not in dict(Config._fields_):
            raise ValueError("config: no field %r in nsa_config" % name)
        setattr(cfg, name, value)
    return cfg


# ---- bf16 in numpy (which has no bf16 type): uint16 bit patterns ----------

def to_bf16(x):
    """float32 array -> bf16 bits (uint16), rounded to nearest even, NaN kept
    quiet (as nsa_f32_to_bf16)."""
    import numpy as np
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    nan = (u & 0x7fffffff) > 0x7f800000
    r = ((u + 0x7fff + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), r)


def from_bf16(b):
    """bf16 bits (uint16) -> float32."""
    import numpy as np
    return (np.ascontiguousarray(b, dtype=np.uint16).astype(np.uint32)
            << 16).view(np.float32)


# ---- the reference on numpy arrays ----------------------------------------

def _np_dtype(arr, dtype):
    import numpy as np
    if dtype == "bf16":
        if arr.dtype != np.uint16:
            raise TypeError("dtype='bf16' takes uint16 arrays of bf16 bits "
                            "(nsa.to_bf16)")
        return BF16
    if dtype is not None:
        raise ValueError("dtype: only 'bf16' is given by name (float16 and "
                         "float32 come from the arrays)")
    if arr.dtype == np.float32:
        return FP32
    if arr.dtype == np.float16:
        return FP16
    raise TypeError("arrays must be float32, float16, or uint16 with "
                    "dtype='bf16' (got %s)" % arr.dtype)


def _ptr(a):
    return None if a is None else ctypes.c_void_p(a.ctypes.data)


def _np_tokens(name, a):
    import numpy as np
    if a.ndim != 3:
        raise ValueError("%s: must be [tokens, heads, dim] (got shape %s)"
                         % (name, a.shape))
    return np.ascontiguousarray(a)


class RefSaved:
    """What ref_forward keeps for ref_backward: the inputs, the config and
    one block (nsa_buffers_place) holding the saved and gradient buffers.
    lse_cmp, lse_slc, lse_win, sel_idx, sel_count are numpy views of it;
    o_branch is None, or with keep_branch_outputs the branches' fp32 outputs
    [3, TQ, H, Dv] (nsa_saved.o_branch)."""


def ref_forward(cfg, q, k, v, cu_seqlens, gates=None, cu_seqlens_q=None,
                dtype=None, sel_idx=None, sel_count=None,
                keep_branch_outputs=False):
    """o [TQ, H, Dv] and a RefSaved, on the CPU reference. sel_idx
    [units, Hkv, n] and sel_count [units, Hkv] (int32), when given, are the
    caller's selection (nsa_batch.sel_idx). keep_branch_outputs: keep each
    branch's fp32 output o_c in saved.o_branch [3, TQ, H, Dv] (planes cmp,
    slc, win; zeros for a branch that is off), which ref_backward then reads
    instead of recomputing o_c: the same gradients, bit for bit."""
    import numpy as np
    lib = library()
    q = _np_tokens("q", np.asarray(q))
    k = _np_tokens("k", np.asarray(k))
    v = _np_tokens("v", np.asarray(v))
    dt = _np_dtype(q, dtype)
    for name, a in (("k", k), ("v", v)) + ((("gates", gates),) if gates is not None else ()):
        if _np_dtype(np.asarray(a), dtype) != dt:
            raise TypeError("%s: must have q's storage type" % name)
    s = RefSaved()
    s.cfg = cfg = Config.from_buffer_copy(cfg)  # backward needs this one
    s.dtype = dtype
    s.q, s.k, s.v = q, k, v
    s.gates = None if gates is None else np.ascontiguousarray(gates)
    s.cu = np.ascontiguousarray(cu_seqlens, dtype=np.int32)
    s.cuq = (None if cu_seqlens_q is None
             else np.ascontiguousarray(cu_seqlens_q, dtype=np.int32))
    x = Batch()
    x.B = len(s.cu) - 1
    x.T = k.shape[0]
    x.TQ = q.shape[0]
    x.cu_seqlens = _ptr(s.cu)
    x.cu_seqlens_q = _ptr(s.cuq)
    x.H, x.Dk = q.shape[1], q.shape[2]
    x.Hkv, x.Dv = v.shape[1], v.shape[2]
    x.dtype = dt
    x.q, x.k, x.v = _ptr(q), _ptr(k), _ptr(v)
    s.sel = [None if a is None else np.ascontiguousarray(a, dtype=np.int32)
             for a in (sel_idx, sel_count)]
    x.sel_idx, x.sel_count = _ptr(s.sel[0]), _ptr(s.sel[1])
    if k.shape[1:] != (x.Hkv, x.Dk) or v.shape[0] != x.T:
        raise ValueError("k [T, Hkv, Dk] and v [T, Hkv, Dv] do not match q "
                         "[TQ, H, Dk] (got %s, %s, %s)" % (q.shape, k.shape,
                                                            v.shape))
    s.batch = x
    sz = Sizes()
    _call("nsa_sizes_get", ctypes.byref(cfg), ctypes.byref(x), ctypes.byref(sz))
    s.sizes = sz
    ws = ctypes.c_size_t()
    _call("nsa_ref_workspace_size", ctypes.byref(cfg), ctypes.byref(x),
          ctypes.byref(ws))
    s.work = np.empty(max(ws.value, 1), dtype=np.uint8)
    nbytes = ctypes.c_size_t()
    with_gates = int(gates is not None)
    _call("nsa_buffers_bytes", ctypes.byref(cfg), ctypes.byref(x), with_gates,
          ctypes.byref(nbytes))
    s.block = np.empty(max(nbytes.value, 1), dtype=np.uint8)
    s.saved, s.grads = Saved(), Grads()
    _call("nsa_buffers_place", ctypes.byref(cfg), ctypes.byref(x), with_gates,
          _ptr(s.block), nbytes, ctypes.byref(s.saved), ctypes.byref(s.grads))
    s.o_branch = None
    if keep_branch_outputs:
        s.o_branch = np.zeros((3, x.TQ, x.H, x.Dv), dtype=np.float32)
        s.saved.o_branch = _ptr(s.o_branch)
    o = np.empty((x.TQ, x.H, x.Dv), dtype=q.dtype)
    _call("nsa_ref_forward", ctypes.byref(cfg), ctypes.byref(x), _ptr(s.gates),
          _ptr(o), ctypes.byref(s.saved), _ptr(s.work),
          ctypes.c_size_t(s.work.size))
    base = s.block.ctypes.data

    def view(ptr, count, typ):
        if not ptr:
            return None
        return s.block[ptr - base:ptr - base + count * np.dtype(typ).itemsize].view(typ)

    for i, name in enumerate(("lse_cmp", "lse_slc", "lse_win")):
        a = view(getattr(s.saved, name), sz.lse, np.float32)
        setattr(s, name, None if a is None else a.reshape(x.TQ, x.H))
    sel = view(s.saved.sel_idx, sz.sel_idx, np.int32)
    s.sel_idx = None if sel is None else sel.reshape(sz.units, x.Hkv, cfg.n)
    cnt = view(s.saved.sel_count, sz.sel_count, np.int32)
    s.sel_count = None if cnt is None else cnt.reshape(sz.units, x.Hkv)
    return o, s


def ref_backward(saved, d_o):
    """Gradients of sum(o * d_o) for the ref_forward that gave saved: a dict
    with dq, dk, dv (and dgates when gates were given), new arrays."""
    import numpy as np
    s = saved
    d_o = np.ascontiguousarray(d_o)
    if d_o.dtype != s.q.dtype or d_o.shape != (s.batch.TQ, s.batch.H, s.batch.Dv):
        raise ValueError("d_o: must be [TQ, H, Dv] in q's dtype (got %s %s)"
                         % (d_o.dtype, d_o.shape))
    _call("nsa_ref_backward", ctypes.byref(s.cfg), ctypes.byref(s.batch),
          _ptr(s.gates), _ptr(d_o), ctypes.byref(s.saved),
          ctypes.byref(s.grads), _ptr(s.work), ctypes.c_size_t(s.work.size))
    base = s.block.ctypes.data
    out = {}
    for name, shape in (("dq", s.q.shape), ("dk", s.k.shape), ("dv", s.v.shape),
                        ("dgates", None if s.gates is None else s.gates.shape)):
        ptr = getattr(s.grads, name)
        if shape is None or not ptr:
            continue
        count = int(np.prod(shape))
        size = s.q.dtype.itemsize
        out[name] = s.block[ptr - base:ptr - base + count * size].view(
            s.q.dtype).reshape(shape).copy()
    return out


# ---- PyTorch: tensors, autograd -------------------------------------------

def _torch_dtype(t):
    import torch
    table = {torch.bfloat16: BF16, torch.float16: FP16, torch.float32: FP32}
    if t.dtype not in table:
        raise TypeError("tensors must be bfloat16, float16 or float32 (got %s)"
                        % t.dtype)
    return table[t.dtype]


def _tensor_batch(q, k, v, cu, cuq, cu_dev, cuq_dev):
    """An nsa_batch over torch tensors (strided q, k, v: element strides)."""
    x = Batch()
    x.B = cu.numel() - 1
    x.T, x.TQ = k.shape[0], q.shape[0]
    x.cu_seqlens = cu.data_ptr()
    x.cu_seqlens_q = None if cuq is None else cuq.data_ptr()
    x.cu_seqlens_dev = None if cu_dev is None else cu_dev.data_ptr()
    x.cu_seqlens_q_dev = None if cuq_dev is None else cuq_dev.data_ptr()
    x.H, x.Dk = q.shape[1], q.shape[2]
    x.Hkv, x.Dv = v.shape[1], v.shape[2]
    x.dtype = _torch_dtype(q)
    for name, t in (("q", q), ("k", k), ("v", v)):
        setattr(x, name, t.data_ptr())
        setattr(x, name + "_stride_token", t.stride(0))
        setattr(x, name + "_stride_head", t.stride(1))
    return x


def _function():
    import torch

    class NSAFunction(torch.autograd.Function):
        """o = NSA(q, k, v[, gates]); backward gives dq, dk, dv[, dgates].
        Selection is held constant (contract, Backward)."""

        @staticmethod
        def forward(ctx, q, k, v, gates, cu_seqlens, cu_seqlens_q, cfg,
                    sel_idx, sel_count, keep_branch_outputs=False):
            lib = library()
            cfg = Config.from_buffer_copy(cfg)  # backward needs forward's
            dev = q.device
            cuda = dev.type == "cuda"
            if cuda and not _has_cuda(lib):
                raise Error("nsa: CUDA tensors need build/libnsa_cuda.so "
                            "(make shared on a machine with nvcc)")
            for name, t in (("k", k), ("v", v)) + ((("gates", gates),) if gates is not None else ()):
                if t.device != dev or t.dtype != q.dtype:
                    raise TypeError("%s: must be on q's device with q's dtype"
                                    % name)
            for name, t in (("q", q), ("k", k), ("v", v)):
                if t.dim() != 3 or t.stride(2) != 1:
                    raise ValueError("%s: must be [tokens, heads, dim] with "
                                     "unit stride in dim" % name)
            q_, k_, v_ = q.detach(), k.detach(), v.detach()
            g_ = None if gates is None else gates.detach().contiguous()
            cu = cu_seqlens.to("cpu", torch.int32).contiguous()
            cuq = (None if cu_seqlens_q is None
                   else cu_seqlens_q.to("cpu", torch.int32).contiguous())
            cu_dev = cu.to(dev) if cuda else None
            cuq_dev = cuq.to(dev) if (cuda and cuq is not None) else None
            x = _tensor_batch(q_, k_, v_, cu, cuq, cu_dev, cuq_dev)
            sel = [None if t is None else t.to(dev, torch.int32).contiguous()
                   for t in (sel_idx, sel_count)]
            x.sel_idx = None if sel[0] is None else sel[0].data_ptr()
            x.sel_count = None if sel[1] is None else sel[1].data_ptr()
            sz = Sizes()
            _call("nsa_sizes_get", ctypes.byref(cfg), ctypes.byref(x),
                  ctypes.byref(sz))
            ws = ctypes.c_size_t()
            _call("nsa_cuda_workspace_size" if cuda else "nsa_ref_workspace_size",
                  ctypes.byref(cfg), ctypes.byref(x), ctypes.byref(ws))
            work = torch.empty(max(ws.value, 1), dtype=torch.uint8, device=dev)
            nbytes = ctypes.c_size_t()
            with_gates = int(gates is not None)
            _call("nsa_buffers_bytes", ctypes.byref(cfg), ctypes.byref(x),
                  with_gates, ctypes.byref(nbytes))
            block = torch.empty(max(nbytes.value, 1), dtype=torch.uint8,
                                device=dev)
            saved, grads = Saved(), Grads()
            _call("nsa_buffers_place", ctypes.byref(cfg), ctypes.byref(x),
                  with_gates, ctypes.c_void_p(block.data_ptr()), nbytes,
                  ctypes.byref(saved), ctypes.byref(grads))
            o = torch.empty((x.TQ, x.H, x.Dv), dtype=q.dtype, device=dev)
            # each branch's fp32 output, kept for the backward's Delta and
            # dgates (nsa_saved.o_branch): memory for a pass of every branch
            o_branch = None
            if keep_branch_outputs:
                o_branch = torch.empty((3, x.TQ, x.H, x.Dv), dtype=torch.float32,
                                       device=dev)
                saved.o_branch = o_branch.data_ptr()
            gp = None if g_ is None else ctypes.c_void_p(g_.data_ptr())
            if cuda:
                stream = torch.cuda.current_stream(dev).cuda_stream
                _call("nsa_cuda_forward", ctypes.byref(cfg), ctypes.byref(x), gp,
                      ctypes.c_void_p(o.data_ptr()), ctypes.byref(saved),
                      ctypes.c_void_p(work.data_ptr()), ws,
                      ctypes.c_void_p(stream))
            else:
                _call("nsa_ref_forward", ctypes.byref(cfg), ctypes.byref(x), gp,
                      ctypes.c_void_p(o.data_ptr()), ctypes.byref(saved),
                      ctypes.c_void_p(work.data_ptr()), ws)
            # Everything the pointers in x, saved and grads point at stays
            # alive with ctx.
            ctx.keep = (q_, k_, v_, g_, cu, cuq, cu_dev, cuq_dev, work, block,
                        sel, o_branch)
            ctx.args = (cfg, x, saved, grads, ws, cuda, sz)
            ctx.gates_given = gates is not None
            return o

        @staticmethod
        def backward(ctx, d_o):
            cfg, x, saved, grads, ws, cuda, sz = ctx.args
            q_, k_, v_, g_, _, _, _, _, work, block, _, _ = ctx.keep
            d_o = d_o.to(q_.dtype).contiguous()
            gp = None if g_ is None else ctypes.c_void_p(g_.data_ptr())
            if cuda:
                stream = torch.cuda.current_stream(q_.device).cuda_stream
                _call("nsa_cuda_backward", ctypes.byref(cfg), ctypes.byref(x), gp,
                      ctypes.c_void_p(d_o.data_ptr()), ctypes.byref(saved),
                      ctypes.byref(grads), ctypes.c_void_p(work.data_ptr()), ws,
                      ctypes.c_void_p(stream))
            else:
                _call("nsa_ref_backward", ctypes.byref(cfg), ctypes.byref(x), gp,
                      ctypes.c_void_p(d_o.data_ptr()), ctypes.byref(saved),
                      ctypes.byref(grads), ctypes.c_void_p(work.data_ptr()), ws)
            base = block.data_ptr()

            def grad(ptr, shape):
                n = 1
                for s_ in shape:
                    n *= s_
                size = q_.element_size()
                return block[ptr - base:ptr - base + n * size].view(
                    q_.dtype).view(shape).clone()

            dq = grad(grads.dq, (x.TQ, x.H, x.Dk))
            dk = grad(grads.dk, (x.T, x.Hkv, x.Dk))
            dv = grad(grads.dv, (x.T, x.Hkv, x.Dv))
            dg = grad(grads.dgates, (x.TQ, x.H, 3)) if ctx.gates_given else None
            return dq, dk, dv, dg, None, None, None, None, None, None

    return NSAFunction


_fn = None


def attention(q, k, v, cu_seqlens, cfg=None, gates=None, cu_seqlens_q=None,
              sel_idx=None, sel_count=None, keep_branch_outputs=False):
    """NSA of torch tensors q [TQ, H, Dk], k [T, Hkv, Dk], v [T, Hkv, Dv]
    (gates [TQ, H, 3] or None; cu_seqlens int tensor or list, B + 1 entries),
    differentiable in q, k, v and gates. CUDA tensors run nsa_cuda_* on the
    current stream (bf16, fp16); CPU tensors run the reference. sel_idx and
    sel_count (int32 tensors), when given, are the caller's selection.
    keep_branch_outputs: keep each branch's fp32 output [3, TQ, H, Dv] from
    the forward for the backward (nsa_saved.o_branch), which then skips
    recomputing every branch: faster, for 12 bytes a (query, head, column)."""
    import torch
    global _fn
    if _fn is None:
        _fn = _function()
    if cfg is None:
        cfg = config("paper")
    if not torch.is_tensor(cu_seqlens):
        cu_seqlens = torch.tensor(cu_seqlens, dtype=torch.int32)
    if cu_seqlens_q is not None and not torch.is_tensor(cu_seqlens_q):
        cu_seqlens_q = torch.tensor(cu_seqlens_q, dtype=torch.int32)
    return _fn.apply(q, k, v, gates, cu_seqlens, cu_seqlens_q, cfg, sel_idx,
                     sel_count, keep_branch_outputs)
