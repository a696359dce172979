#!/usr/bin/env python3
"""Golden test vectors for the ltvx int8 integer pipeline.

What this is
    An independent, deliberately plain Python implementation of the int8
    numerics contract (docs/NUMERICS.md, sections A-D): input quantization
    f32 -> u8, requantization i32 -> u8, derivation of the integer multiplier
    (M, sh) from a real multiplier, and the integer Dense, Conv1d, MaxPool1d and
    global-average-pool layers.  It writes tests/golden/numerics.json, which
    every backend's Rust tests read and must reproduce exactly.

Independence
    This script shares no code with the Rust crate and does not read it.
    Integer math uses Python integers (unbounded, `>>` is a floor shift) and
    fractions.Fraction, so nothing can overflow or round by accident; the
    ranges that Rust must respect (i32 accumulators, i64 requant products) are
    asserted.  The only floating-point operation of the contract, the single
    f32 multiply of input quantization, is done with numpy.float32 and
    cross-checked against the exact f64 product rounded once to f32.

Rerun
    python3 tests/golden/gen_numerics.py > tests/golden/numerics.json
    python3 tests/golden/gen_numerics.py --out tests/golden/numerics.json
    Needs Python >= 3.8 and numpy (tested with numpy 2.4.6).  The output is
    deterministic (fixed seed, Python's `random.Random`, no numpy RNG), so a
    rerun reproduces the committed file byte for byte.

Encoding
    f32 values are given as "0x%08x" hex strings of their bit pattern, f64 as
    "0x%016x"; the decimal fields next to them are for readers only.  Integers
    are plain JSON integers (all fit i64).  Flat arrays are row-major.
"""

import argparse
import json
import math
import random
import struct
import sys
from fractions import Fraction

import numpy as np

SEED = 20240611
I32_MIN, I32_MAX = -(2**31), 2**31 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1


# ----------------------------------------------------------------------------
# bit helpers
# ----------------------------------------------------------------------------

def f32_from_bits(b):
    return np.frombuffer(struct.pack("<I", b), dtype=np.float32)[0]


def f32_bits(x):
    return struct.unpack("<I", np.float32(x).tobytes())[0]


def f64_bits(x):
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def f64_from_bits(b):
    return struct.unpack("<d", struct.pack("<Q", b))[0]


def hex32(b):
    return "0x%08x" % b


def hex64(b):
    return "0x%016x" % b


def f32_dec(x):
    """Shortest decimal that parses back (as f32) to the same f32; for readers."""
    x = np.float32(x)
    if np.isnan(x):
        return "nan"
    if np.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(str(x))


def f64_dec(x):
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def clamp(v, lo, hi):
    return lo if v < lo else hi if v > hi else v


# ----------------------------------------------------------------------------
# A. input quantization f32 -> u8
# ----------------------------------------------------------------------------

def f32_mul(x, inv_s):
    """One IEEE-754 binary32 multiply, round to nearest even."""
    x, inv_s = np.float32(x), np.float32(inv_s)
    with np.errstate(over="ignore", under="ignore"):
        p = np.float32(x * inv_s)
        # Cross-check: the product of two f32 has <= 48 significant bits and its
        # exponent is far inside the f64 range, so the f64 product is exact and
        # a single rounding to f32 gives the correctly rounded f32 product.
        p_ref = np.float32(np.float64(x) * np.float64(inv_s))
    assert f32_bits(p) == f32_bits(p_ref), (x, inv_s, p, p_ref)
    return p


def quantize_input(x, inv_s, z):
    assert 0 <= z <= 255
    assert np.isfinite(np.float32(x)) and np.isfinite(np.float32(inv_s))
    p = f32_mul(x, inv_s)
    if np.isinf(p):
        return 255 if p > 0 else 0
    r = round(float(p))  # Python round() on a float: exact, half to even
    return clamp(r + z, 0, 255)


# ----------------------------------------------------------------------------
# B. requantization i32 -> u8
# ----------------------------------------------------------------------------

def requant(acc, m, sh, z_out, relu):
    assert I32_MIN <= acc <= I32_MAX, acc
    assert 1 <= m <= 2**31 - 1, m
    assert 1 <= sh <= 62, sh
    assert 0 <= z_out <= 255, z_out
    t = acc * m + (1 << (sh - 1))
    assert I64_MIN <= t <= I64_MAX  # the Rust i64 computation cannot overflow
    v = t >> sh  # Python >> on ints is a floor (arithmetic) shift
    lo = z_out if relu else 0
    return clamp(v + z_out, lo, 255)


# ----------------------------------------------------------------------------
# C. multiplier derivation
# ----------------------------------------------------------------------------

def round_half_away(q):
    """Round a Fraction to the nearest integer, ties away from zero."""
    q = Fraction(q)
    if q >= 0:
        return math.floor(q + Fraction(1, 2))
    return -math.floor(-q + Fraction(1, 2))


def derive_multiplier(m):
    """Return (M, sh) or raise ValueError('invalid'|'underflow'|'overflow')."""
    if math.isnan(m) or math.isinf(m) or m <= 0:
        raise ValueError("invalid")
    f, e = math.frexp(m)
    assert 0.5 <= f < 1.0
    M = round_half_away(Fraction(f) * 2**31)
    sh = 31 - e
    if M == 2**31:
        M = 2**30
        sh -= 1
    if sh > 62:
        M = round_half_away(Fraction(M, 2 ** (sh - 62)))
        sh = 62
    if M == 0:
        raise ValueError("underflow")
    if sh < 1:
        raise ValueError("overflow")
    assert 1 <= M <= 2**31 - 1 and 1 <= sh <= 62
    return M, sh


# ----------------------------------------------------------------------------
# D. layers (flat row-major lists of Python ints)
# ----------------------------------------------------------------------------

def check_i32(v):
    assert I32_MIN <= v <= I32_MAX, v
    return v


def dense(x, w, bias, n_in, n_out, z_in, ms, shs, z_out, relu):
    acc, q = [], []
    for o in range(n_out):
        a = bias[o]
        for j in range(n_in):
            a += w[o * n_in + j] * (x[j] - z_in)
        check_i32(a)
        acc.append(a)
        q.append(requant(a, ms[o], shs[o], z_out, relu))
    return acc, q


def conv1d_acc(x, w, bias, cin, cout, t_in, k, padding, z_in):
    if padding == "same":
        left = (k - 1) // 2
        t_out = t_in
    else:
        assert padding == "valid" and t_in >= k
        left = 0
        t_out = t_in - k + 1
    acc = []
    for o in range(cout):
        for t in range(t_out):
            a = bias[o]
            for c in range(cin):
                for j in range(k):
                    p = t + j - left
                    if 0 <= p < t_in:
                        a += w[(o * cin + c) * k + j] * (x[c * t_in + p] - z_in)
            acc.append(check_i32(a))
    return acc, t_out


def maxpool(x, c, t):
    t_out = t // 2
    return [max(x[ch * t + 2 * i], x[ch * t + 2 * i + 1])
            for ch in range(c) for i in range(t_out)]


def gap_acc(x, c, t, z_in):
    return [check_i32(sum(x[ch * t + i] - z_in for i in range(t))) for ch in range(c)]


# ----------------------------------------------------------------------------
# case generation
# ----------------------------------------------------------------------------

def iq_case(x, inv_s, z, note):
    x, inv_s = np.float32(x), np.float32(inv_s)
    p = f32_mul(x, inv_s)
    return {
        "x_bits": hex32(f32_bits(x)), "x": f32_dec(x),
        "inv_scale_bits": hex32(f32_bits(inv_s)), "inv_scale": f32_dec(inv_s),
        "zero_point": z,
        "q": quantize_input(x, inv_s, z),
        "product_bits": hex32(f32_bits(p)), "product": f32_dec(p),
        "note": note,
    }


def gen_input_quant(rng):
    F = np.float32
    B = f32_from_bits
    cases = []
    add = lambda x, s, z, note: cases.append(iq_case(x, s, z, note))

    # zeros and signed zero
    add(0.0, 1.0, 0, "zero, z=0")
    add(0.0, 37.5, 255, "zero, z=255")
    add(-0.0, 3.0, 0, "-0.0, z=0")
    add(-0.0, 3.0, 128, "-0.0, z=128")
    # ties with a power-of-two inverse scale (product exact)
    for xv, z, note in [(0.5, 0, "tie 0.5 -> 0 (even)"),
                        (1.5, 0, "tie 1.5 -> 2 (even)"),
                        (2.5, 0, "tie 2.5 -> 2 (even, not away)"),
                        (3.5, 0, "tie 3.5 -> 4"),
                        (-0.5, 128, "negative tie -0.5 -> -0 -> z"),
                        (-1.5, 128, "negative tie -1.5 -> -2"),
                        (-2.5, 128, "negative tie -2.5 -> -2 (even, not away)"),
                        (-3.5, 128, "negative tie -3.5 -> -4")]:
        add(xv, 1.0, z, note)
    add(F(0.625), 4.0, 10, "tie 2.5 via inv_s=4 -> 2")
    add(F(-0.375), 4.0, 10, "tie -1.5 via inv_s=4 -> -2")
    add(0.25, 10.0, 0, "tie 2.5 via inv_s=10 (exact) -> 2")
    add(1.25, 10.0, 7, "tie 12.5 via inv_s=10 -> 12")
    add(-1.35, 10.0, 200, "-1.35f32 * 10 rounds to -13.5 in f32 (tie) -> -14")
    # clamp boundaries, clamp after adding z
    add(127.5, 1.0, 128, "127.5 -> 128, +128 = 256 -> 255")
    add(126.5, 1.0, 128, "126.5 -> 126 (even), +128 = 254")
    add(254.5, 1.0, 0, "254.5 -> 254")
    add(255.5, 1.0, 0, "255.5 -> 256 -> 255")
    add(-0.5, 1.0, 0, "-0.5 -> 0")
    add(-128.5, 1.0, 128, "-128.5 -> -128, +128 = 0")
    add(-129.5, 1.0, 128, "-129.5 -> -130, +128 = -2 -> 0")
    add(-10.0, 1.0, 200, "negative product plus z: 190 (not clamp-then-add)")
    add(-3.0, 1.0, 2, "-3 + 2 = -1 -> 0")
    add(300.0, 1.0, 0, "300 -> 255")
    add(-1.0, 1.0, 255, "-1 + 255 = 254")
    add(1.0, 1.0, 255, "1 + 255 -> 255")
    # huge / overflow
    add(3.0e9, 1.0, 0, "3e9 (beyond i32) -> 255")
    add(-3.0e9, 1.0, 255, "-3e9 (beyond i32) -> 0")
    add(1.0e20, 1.0, 0, "1e20 -> 255")
    add(-1.0e20, 1.0, 255, "-1e20 -> 0")
    add(1.0e30, 1.0e10, 0, "product overflows to +inf -> 255")
    add(-1.0e30, 1.0e10, 255, "product overflows to -inf -> 0")
    add(B(0x7f7fffff), 100.0, 0, "f32::MAX * 100 = +inf -> 255")
    add(B(0xff7fffff), 2.0, 128, "-f32::MAX * 2 = -inf -> 0")
    add(B(0x7f7fffff), 1.0, 0, "f32::MAX * 1 finite -> 255")
    # subnormal inputs (must not be flushed to zero)
    add(B(0x00000001), 1.0e10, 0, "smallest subnormal -> 0")
    add(B(0x00000001), 1.0, 255, "smallest subnormal, z=255")
    add(B(0x007fffff), B(0x7f000000), 0, "largest subnormal * 2^127 ~ 2 -> 2 (FTZ gives 0)")
    add(B(0x00400000), B(0x7f400000), 0, "2^-127 * 1.5*2^127 = 1.5 tie -> 2 (FTZ gives 0)")
    add(B(0x00200000), B(0x7f400000), 0, "2^-128 * 1.5*2^127 = 0.75 -> 1 (FTZ gives 0)")
    add(B(0x80500000), B(0x7f000000), 100, "-(2^-127 + 2^-129) * 2^127 = -1.25 -> -1 -> 99")
    add(1.0e-30, 1.0e-10, 5, "product underflows to subnormal -> z")

    # single f32 multiply matters: rint(f32 product) != rint(exact/f64 product)
    n_found = 0
    for inv_s_val in [F(1.0 / 0.0123), F(1.0 / 0.0371), F(1.0 / 0.00917)]:
        for _ in range(200000):
            k = rng.randrange(-120, 120)
            # x near (k + 0.5) / inv_s
            x = F((k + 0.5) / float(inv_s_val))
            x = np.nextafter(x, F(np.inf) if rng.random() < 0.5 else F(-np.inf))
            for _ in range(rng.randrange(0, 3)):
                x = np.nextafter(x, F(np.inf))
            exact = Fraction(float(x)) * Fraction(float(inv_s_val))
            p = f32_mul(x, inv_s_val)
            if round(exact) != round(float(p)):
                z = 128
                add(x, inv_s_val, z, "f32 product rounds across/onto a .5 tie; "
                    "f64 or exact arithmetic gives another q")
                n_found += 1
                break
    assert n_found == 3
    # multiply by inverse scale differs from dividing by the scale
    n_found = 0
    s = F(0.0137)
    inv_s_val = F(1.0) / s
    for _ in range(200000):
        x = F((rng.randrange(-120, 120) + 0.5) * float(s))
        for _ in range(rng.randrange(-3, 4)):
            x = np.nextafter(x, F(np.inf))
        with np.errstate(all="ignore"):
            by_div = round(float(x / s))
        if by_div != round(float(f32_mul(x, inv_s_val))):
            add(x, inv_s_val, 128, "x*inv_s differs from x/s (must multiply)")
            n_found += 1
            if n_found == 2:
                break
    assert n_found == 2

    # realistic random cases
    while len(cases) < 62:
        s = F(math.exp(rng.uniform(math.log(1e-3), math.log(0.5))))
        inv_s_val = F(1.0) / s
        z = rng.choice([0, 255, rng.randrange(256), rng.randrange(256)])
        x = F(rng.gauss(0.0, 40.0 * float(s)))
        add(x, inv_s_val, z, "random")
    return cases


def rq_case(acc, m, sh, z, relu, note):
    return {"acc": acc, "multiplier": m, "shift": sh, "zero_point": z,
            "relu": relu, "q": requant(acc, m, sh, z, relu), "note": note}


def gen_requant(rng):
    cases = []
    add = lambda *a: cases.append(rq_case(*a))
    MAXM = 2**31 - 1
    # exact ties, M=1 sh=1: acc/2
    add(1, 1, 1, 0, False, "tie 0.5 -> 1")
    add(3, 1, 1, 0, False, "tie 1.5 -> 2")
    add(5, 1, 1, 0, False, "tie 2.5 -> 3 (up, not even)")
    add(-1, 1, 1, 128, False, "tie -0.5 -> 0 (toward +inf)")
    add(-3, 1, 1, 128, False, "tie -1.5 -> -1 (toward +inf; away gives -2)")
    add(-5, 1, 1, 128, False, "tie -2.5 -> -2")
    add(-5, 1, 2, 128, False, "-1.25 -> -1 (floor shift, trunc differs)")
    add(-7, 1, 2, 128, False, "-1.75 -> -2")
    add(-6, 1, 2, 128, False, "tie -1.5 -> -1")
    add(-2, 1, 2, 128, False, "tie -0.5 -> 0")
    add(-200, 3, 4, 100, False, "tie -37.5 -> -37")
    add(200, 3, 4, 100, False, "tie 37.5 -> 38")
    add(-(2**20) - 2**9, 2**10, 31, 128, False, "just below the tie: -0.5 - 2^-12 -> -1")
    add(-(2**21), 2**30, 52, 128, False, "tie -0.5 at sh=52 -> 0")
    add(-3 * 2**21, 2**30, 52, 128, False, "tie -1.5 at sh=52 -> -1")
    add(3 * 2**21, 2**30, 52, 128, False, "tie 1.5 at sh=52 -> 2")
    # saturation and relu
    add(1000, 1, 1, 0, False, "500 -> 255")
    add(-1000, 1, 1, 255, False, "-500 + 255 -> 0")
    add(-1000, 1, 1, 0, False, "negative -> 0")
    add(-10, 1, 1, 50, True, "relu: -5 + 50 = 45 -> lo = 50")
    add(-10, 1, 1, 50, False, "no relu: -5 + 50 = 45")
    add(10, 1, 1, 50, True, "relu: 5 + 50 = 55")
    add(-1, 1, 1, 50, True, "relu, tie -0.5 -> 0 -> 50")
    add(0, 1, 1, 255, True, "relu with z_out=255 -> 255")
    add(-(2**31), 1, 1, 255, True, "relu z_out=255, i32::MIN -> 255")
    add(0, 1, 1, 0, True, "relu z_out=0, zero")
    add(-7, 1, 1, 0, True, "relu z_out=0, negative -> 0")
    add(509, 1, 1, 0, True, "relu z_out=0, 254.5 -> 255")
    add(507, 1, 1, 0, True, "relu z_out=0, 253.5 -> 254")
    # i32 extremes, M extremes, sh extremes
    add(I32_MAX, MAXM, 62, 0, False, "i32::MAX * (2^31-1) >> 62 -> ~0.5 -> 1")
    add(I32_MIN, MAXM, 62, 255, False, "i32::MIN * (2^31-1) >> 62 = -0.49999 -> 0 -> 255")
    add(I32_MIN, 2**31 - 1, 61, 255, False, "i32::MIN*(2^31-1)>>61 = -0.99999 -> -1 -> 254")
    add(I32_MIN, 2**30, 61, 255, False, "i32::MIN * 2^30 >> 61 = -1 exactly -> 254")
    add(I32_MIN, 2**30, 62, 255, False, "tie -0.5 at sh=62 -> 0 -> 255")
    add(I32_MAX, 2**30, 62, 0, False, "0.49999 -> 0")
    add(I32_MAX, 1, 62, 0, False, "tiny -> 0")
    add(I32_MIN, 1, 62, 0, False, "tiny negative -> 0")
    add(I32_MIN, 1, 62, 7, False, "tiny negative + 7 -> 7")
    add(I32_MAX, 1, 1, 0, False, "i32::MAX, M=1, sh=1 -> 255")
    add(I32_MIN, 1, 1, 255, False, "i32::MIN, M=1, sh=1 -> 0")
    add(I32_MAX, MAXM, 1, 0, False, "largest product, sh=1 -> 255")
    add(I32_MIN, MAXM, 1, 255, False, "most negative product, sh=1 -> 0")
    add(I32_MIN, MAXM, 1, 0, True, "most negative product, relu -> 0")
    add(I32_MAX, MAXM, 55, 0, False, "i32::MAX*(2^31-1) >> 55 = 127.99 -> 128")
    add(I32_MIN, MAXM, 55, 255, False, "i32::MIN*(2^31-1) >> 55 = -127.99 -> -128 -> 127")
    add(-1, MAXM, 32, 128, False, "-(2^31-1)/2^32 = -0.49999 -> 0")
    add(1, MAXM, 32, 128, False, "(2^31-1)/2^32 = 0.49999 -> 0")
    add(1, MAXM, 31, 128, False, "0.99999 -> 1")
    add(-1, MAXM, 31, 128, False, "-0.99999 -> -1")
    add(37, 1, 1, 0, False, "M=1 sh=1")
    add(1 << 20, MAXM, 44, 0, False, "product needs > 32 bits")
    add(-(1 << 20), MAXM, 44, 255, False, "negative product needs > 32 bits")
    add(123456789, 1518500250, 52, 100, False, "large acc and M")
    add(-123456789, 1518500250, 52, 100, False, "large negative acc and M")
    # z_out extremes
    add(100, 2**30, 31, 0, False, "z_out=0: 50")
    add(100, 2**30, 31, 255, False, "z_out=255: 50 + 255 -> 255")
    add(-100, 2**30, 31, 255, False, "z_out=255: -50 + 255 = 205")
    add(-100, 2**30, 31, 255, True, "z_out=255 relu: 205 -> 255")

    # random realistic cases (output mostly inside [0, 255])
    while len(cases) < 82:
        m_real = math.exp(rng.uniform(math.log(1e-6), math.log(0.5)))
        M, sh = derive_multiplier(m_real)
        z = rng.randrange(256)
        target = rng.uniform(-150, 150)
        acc = clamp(int(round(target / m_real)) + rng.randrange(-3, 4), I32_MIN, I32_MAX)
        add(acc, M, sh, z, rng.random() < 0.3, "random, real multiplier %.6g" % m_real)
    return cases


def mul_case(m, note):
    c = {"real_bits": hex64(f64_bits(m)), "real": f64_dec(m)}
    try:
        M, sh = derive_multiplier(m)
        c["multiplier"] = M
        c["shift"] = sh
    except ValueError as e:
        c["error"] = str(e)
    c["note"] = note
    return c


def gen_multiplier():
    cases = []
    add = lambda m, note: cases.append(mul_case(m, note))
    below = lambda v: math.nextafter(v, 0.0)
    add(1e-30, "tiny -> underflow")
    add(2.0**-64, "2^-64: 2^30 / 2^32 = 0.25 -> underflow")
    add(2.0**-63, "2^-63: 2^30 / 2^31 = 0.5 tie -> M=1 (away), sh=62")
    add((1 - 2.0**-32) * 2.0**-63, "smallest m that does not underflow: carry, then 0.5 -> M=1")
    add(below((1 - 2.0**-32) * 2.0**-63), "largest m that underflows")
    add(1e-19, "below 2^-63 -> underflow")
    add(1e-18, "sh > 62, small M")
    add(1e-15, "sh > 62")
    add(1e-10, "sh > 62")
    add((2**30 + 1) / 2.0**31 * 2.0**-32, "sh=63, M odd: (2^30+1)/2 tie -> 2^29+1 (away)")
    add(2.0**-33, "sh=63 -> M=2^29, sh=62")
    add(2.0**-32, "2^-32: M=2^30, sh=62 (no adjustment)")
    add((1 - 2.0**-32) * 2.0**-32, "carry (f*2^31 = 2^31-0.5 -> 2^31), sh 63 -> 62")
    add((1 - 2.0**-53) * 2.0**-33, "carry, sh 64 -> 63, then > 62 rounding")
    add(1e-6, "1e-6")
    add(1e-3, "1e-3")
    add(0.0123, "0.0123")
    add(0.1, "0.1")
    add(1.0 / 3.0, "1/3")
    add(0.5, "power of two 0.5")
    add(0.75, "0.75")
    add(1.0, "power of two 1")
    add(2.0 / 3.0, "2/3")
    add(1.5, "1.5")
    add(below(1.0), "largest f64 below 1: f*2^31 rounds to 2^31 -> carry")
    add(1 - 2.0**-32, "f*2^31 = 2^31 - 0.5 exactly -> away -> carry")
    add(1 - 2.0**-31, "f*2^31 = 2^31 - 1 exactly, no carry")
    add((2**31 + 1) / 2.0**32, "f*2^31 = 2^30 + 0.5 tie -> 2^30+1 (away; even gives 2^30)")
    add((2**31 + 3) / 2.0**32 * 2.0**-10, "f*2^31 = 2^30 + 1.5 tie -> 2^30+2")
    add((2**32 - 3) / 2.0**32 * 2.0**5, "f*2^31 = 2^31 - 1.5 tie -> 2^31 - 1")
    add(1000.0, "1000")
    add(12345.678, "12345.678")
    add(2.0**20, "2^20")
    add(2.0**29, "2^29: sh=1")
    add(2.0**30 - 1.0, "2^30 - 1: sh=1, M=2^31-2")
    add(below((1 - 2.0**-32) * 2.0**30), "largest m that does not overflow: M=2^31-1, sh=1")
    add((1 - 2.0**-32) * 2.0**30, "smallest m that overflows: carry makes sh=0")
    add(below(2.0**30), "just below 2^30: carry makes sh=0 -> overflow")
    add(2.0**30, "2^30: sh=0 -> overflow")
    add(2.0**40, "2^40 -> overflow")
    add(1.7976931348623157e308, "f64::MAX -> overflow")
    add(5e-324, "smallest subnormal -> underflow")
    add(0.0, "zero -> invalid")
    add(-0.0, "-0.0 -> invalid")
    add(-0.25, "negative -> invalid")
    add(math.inf, "inf -> invalid")
    add(-math.inf, "-inf -> invalid")
    add(math.nan, "nan -> invalid")
    return cases


def rand_x(rng, n, z_in):
    """Activations: around the zero point, a few at the u8 extremes."""
    spread = rng.choice([20, 60, 128])
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.05:
            out.append(0)
        elif r < 0.10:
            out.append(255)
        else:
            out.append(clamp(int(round(rng.gauss(z_in, spread))), 0, 255))
    return out


def rand_w(rng, n):
    """s8 weights in [-127, 127]; per-row scale makes some rows hit +-127."""
    out = []
    for _ in range(n):
        if rng.random() < 0.03:
            out.append(rng.choice([-127, 127]))
        else:
            out.append(clamp(int(round(rng.gauss(0, 45))), -127, 127))
    return out


def calibrated_multipliers(rng, raw, n_ch, per_ch, z_out, lo=0.7, hi=1.3):
    """Per channel, a real multiplier that maps the channel's largest |acc| to
    about the u8 room on the wider side of z_out (as calibration would, with
    some saturation), turned into (M, sh) by C."""
    room = max(z_out, 255 - z_out)
    ms, shs = [], []
    for o in range(n_ch):
        a = raw[o * per_ch:(o + 1) * per_ch]
        span = max(1, max(abs(v) for v in a))
        m_real = rng.uniform(lo, hi) * room / span
        M, sh = derive_multiplier(m_real)
        ms.append(M)
        shs.append(sh)
    return ms, shs


def gen_dense(rng):
    shapes = [(1, 1), (97, 37), (3, 5), (17, 1), (1, 13), (64, 16), (31, 7),
              (50, 29), (7, 37), (97, 2), (12, 12), (23, 19)]
    z_ins = [0, 255, 128, 17, 200, 3, 255, 0, 99, 140, 64, 128]
    z_outs = [128, 128, 255, 5, 77, 0, 128, 250, 30, 0, 190, 128]
    cases = []
    for i, (n_in, n_out) in enumerate(shapes):
        z_in, z_out = z_ins[i], z_outs[i]
        relu = i % 3 == 1
        x = rand_x(rng, n_in, z_in)
        w = rand_w(rng, n_in * n_out)
        note = "random"
        if i == 11:
            # huge bias: |bias| + sum|w||x-z| <= i32::MAX, so every partial sum
            # in any summation order fits i32
            bound = max(sum(abs(w[o * n_in + j]) * 255 for j in range(n_in)) for o in range(n_out))
            bias = [rng.choice([-1, 1]) * (I32_MAX - bound)
                    for _ in range(n_out)]
            note = "bias near i32 limits (partial sums in any order fit i32)"
        else:
            bias = [int(round(rng.gauss(0, 3000))) for _ in range(n_out)]
        raw = [bias[o] + sum(w[o * n_in + j] * (x[j] - z_in) for j in range(n_in))
               for o in range(n_out)]
        if i == 11:
            # multiplier from the data spread around the (large) common offset
            ms, shs = [], []
            for o in range(n_out):
                m_real = rng.uniform(0.5, 1.5) * 100.0 / abs(raw[o])
                M, sh = derive_multiplier(m_real)
                ms.append(M)
                shs.append(sh)
        else:
            # one sample per channel: calibrate on the whole layer's |acc| range
            ms, shs = calibrated_multipliers(rng, raw * n_out, n_out, n_out, z_out, 0.4, 1.1)
        acc, q = dense(x, w, bias, n_in, n_out, z_in, ms, shs, z_out, relu)
        cases.append({"in": n_in, "out": n_out, "zero_in": z_in, "x": x, "w": w,
                      "bias": bias, "multiplier": ms, "shift": shs, "zero_out": z_out,
                      "relu": relu, "acc": acc, "q": q, "note": note})
    return cases


def gen_conv1d(rng):
    # (cin, cout, t_in, k, padding)
    shapes = [(1, 1, 1, 1, "same"), (1, 1, 1, 3, "same"), (3, 4, 10, 3, "same"),
              (9, 19, 40, 7, "same"), (2, 5, 8, 4, "same"), (4, 3, 13, 2, "same"),
              (5, 7, 5, 5, "valid"), (1, 19, 40, 7, "valid"), (9, 2, 11, 4, "valid"),
              (6, 11, 21, 1, "valid"), (7, 3, 2, 5, "same"), (3, 8, 17, 3, "valid")]
    cases = []
    for i, (cin, cout, t_in, k, padding) in enumerate(shapes):
        z_in = [0, 255, 128, 37, 211, 90, 0, 255, 128, 60, 150, 5][i]
        z_out = [0, 255, 128, 3, 77, 128, 250, 0, 128, 20, 0, 128][i]
        relu = i % 3 == 0
        x = rand_x(rng, cin * t_in, z_in)
        w = rand_w(rng, cout * cin * k)
        bias = [int(round(rng.gauss(0, 2000))) for _ in range(cout)]
        raw, t_out = conv1d_acc(x, w, bias, cin, cout, t_in, k, padding, z_in)
        ms, shs = calibrated_multipliers(rng, raw, cout, t_out, z_out)
        q = [requant(raw[o * t_out + t], ms[o], shs[o], z_out, relu)
             for o in range(cout) for t in range(t_out)]
        cases.append({"cin": cin, "cout": cout, "t_in": t_in, "k": k, "padding": padding,
                      "zero_in": z_in, "x": x, "w": w, "bias": bias, "multiplier": ms,
                      "shift": shs, "zero_out": z_out, "relu": relu, "t_out": t_out,
                      "acc": raw, "q": q})
    return cases


def gen_maxpool(rng):
    cases = []
    for c, t in [(1, 2), (1, 3), (3, 8), (4, 9), (16, 33)]:
        x = [rng.choice([0, 255, rng.randrange(256), rng.randrange(256)]) for _ in range(c * t)]
        cases.append({"c": c, "t": t, "t_out": t // 2, "x": x, "q": maxpool(x, c, t)})
    return cases


def gen_gap(rng):
    cases = []
    for i, (c, t, z_in, z_out) in enumerate([(1, 1, 0, 0), (3, 7, 128, 128), (8, 40, 255, 250),
                                              (5, 16, 17, 200), (19, 33, 90, 60), (2, 2, 1, 3),
                                              (4, 5, 0, 255)]):
        x = rand_x(rng, c * t, z_in)
        acc = gap_acc(x, c, t, z_in)
        m_real = rng.uniform(0.5, 2.0) / t
        if i == 5:
            m_real = 0.5  # mean of two values: ties at half steps
        M, sh = derive_multiplier(m_real)
        q = [requant(a, M, sh, z_out, False) for a in acc]
        cases.append({"c": c, "t": t, "zero_in": z_in, "x": x, "multiplier": M, "shift": sh,
                      "zero_out": z_out, "acc": acc, "q": q})
    return cases


def build():
    rng = random.Random(SEED)
    return {
        "format": "ltvx-numerics-golden",
        "version": 1,
        "generator": "tests/golden/gen_numerics.py",
        "seed": SEED,
        "doc": "docs/NUMERICS.md",
        "input_quant": gen_input_quant(rng),
        "requant": gen_requant(rng),
        "multiplier": gen_multiplier(),
        "dense": gen_dense(rng),
        "conv1d": gen_conv1d(rng),
        "maxpool": gen_maxpool(rng),
        "gap": gen_gap(rng),
    }


def dump(doc):
    """JSON with one case per line (readable diffs, modest size)."""
    enc = lambda v: json.dumps(v, separators=(", ", ": "), allow_nan=False)
    lines = ["{"]
    keys = list(doc)
    for n, key in enumerate(keys):
        sep = "," if n + 1 < len(keys) else ""
        val = doc[key]
        if isinstance(val, list):
            lines.append("  %s: [" % json.dumps(key))
            for i, case in enumerate(val):
                lines.append("    " + enc(case) + ("," if i + 1 < len(val) else ""))
            lines.append("  ]" + sep)
        else:
            lines.append("  %s: %s%s" % (json.dumps(key), enc(val), sep))
    lines.append("}")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="write here instead of stdout")
    args = ap.parse_args()
    text = dump(build())
    assert json.loads(text)  # round-trips
    if args.out:
        with open(args.out, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
