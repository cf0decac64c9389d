"""Helpers for kernels written as LLVM IR: vectors of one dtype filling a 512-bit register
(16 float32 or 8 float64 lanes), their loads, stores, broadcasts and fused multiply-adds; the
transpose of a square of them; and a software prefetch."""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def lanes_of(dtype):
    """Lanes of ``dtype`` in a vector: 64 bytes (a 512-bit register, or two 256-bit ones)."""
    return 64 // np.dtype(dtype).itemsize


def vector_ops(builder, dtype):
    """(lanes, vector type, i64, load, store, broadcast, fma) for LLVM code on ``dtype``."""
    fty = ir.FloatType() if dtype == types.float32 else ir.DoubleType()
    lanes = 16 if dtype == types.float32 else 8
    vty = ir.VectorType(fty, lanes)
    name = f"llvm.fma.v{lanes}{'f32' if lanes == 16 else 'f64'}"
    fma_fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3), name)
    i64 = ir.IntType(64)
    splat_mask = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
    undef = ir.Constant(vty, ir.Undefined)

    def load(ptr, off):
        return builder.load(builder.bitcast(builder.gep(ptr, [off]), vty.as_pointer()), align=4)

    def store(value, ptr, off):
        builder.store(value, builder.bitcast(builder.gep(ptr, [off]), vty.as_pointer()), align=4)

    def broadcast(ptr, off):
        x = builder.load(builder.gep(ptr, [off]))
        v = builder.insert_element(undef, x, ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(v, undef, splat_mask)

    def fma(a, b, c):
        return builder.call(fma_fn, [a, b, c])

    return lanes, vty, i64, load, store, broadcast, fma


def transpose_square(builder, rows):
    """The columns of the n x n matrix whose rows are the n vectors ``rows`` (n a power of
    two): log2(n) stages of two-input shuffles, each swapping the off-diagonal blocks of its
    pairs of rows (n log2(n) shuffles in all)."""
    n = len(rows)
    i32 = ir.IntType(32)
    rows = list(rows)
    b = 1
    while b < n:
        mask = ir.VectorType(i32, n)
        low = ir.Constant(mask, [q if q & b == 0 else n + q - b for q in range(n)])
        high = ir.Constant(mask, [q + b if q & b == 0 else n + q for q in range(n)])
        for i in range(n):
            if i & b == 0:
                a, c = rows[i], rows[i + b]
                rows[i] = builder.shuffle_vector(a, c, low)
                rows[i + b] = builder.shuffle_vector(a, c, high)
        b *= 2
    return rows


def as_i64(builder, value):
    i64 = ir.IntType(64)
    return value if value.type == i64 else builder.sext(value, i64)


@intrinsic
def prefetch(typingctx, arr, idx):
    """A software prefetch (read, into L2: locality 2, ``prefetcht1`` on x86) of the line
    holding arr.flat[idx] of a C-contiguous array; a hint only, never a load. (Into L1 as
    well, the EM routing kernel's next sample's lines evicted its parent rows: 1.04x
    slower.)"""
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(2), i32(1)])
        return context.get_dummy_value()

    return sig, codegen
