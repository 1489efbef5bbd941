#!/usr/bin/python3
"""Coefficients of the degree-4 polynomial for 2^f on [-1/2, 1/2] with the least maximum
relative error, used by exp_nonpositive (ops/cpu/attention_dpbf16_kernels.h): Lawson's
iteratively reweighted least squares on Chebyshev nodes converges to the minimax fit. Prints the
f32 coefficients (constant term first) and the error of Horner's rule evaluated in f32."""
import numpy as np

DEGREE = 4
nodes = np.cos(np.pi * (np.arange(4000) + 0.5) / 4000) * 0.5
target = 2.0**nodes
weights = np.ones_like(nodes)
for _ in range(200):
    scale = np.sqrt(weights) / target  # relative error
    design = np.vander(nodes, DEGREE + 1, increasing=True) * scale[:, None]
    coeffs, *_ = np.linalg.lstsq(design, target * scale, rcond=None)
    error = np.abs(np.polyval(coeffs[::-1], nodes) / target - 1)
    weights = weights * error
    weights /= weights.sum()

c32 = coeffs.astype(np.float32)
f = np.linspace(-0.5, 0.5, 200001).astype(np.float32)
p = np.full_like(f, c32[-1])
for k in range(DEGREE - 1, -1, -1):
    p = (p * f + c32[k]).astype(np.float32)
print("coefficients (1, f, f^2, ...):", [repr(float(c)) for c in c32])
print("max relative error in f32: %.3g" % np.max(np.abs(p / 2.0 ** f.astype(np.float64) - 1)))
