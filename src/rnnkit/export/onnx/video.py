"""The video EncoderForecaster's graph: frames (k, B, C, S, S) -> logits (n, B, C, S, S) of the next n frames.

Frames are cut into p×p patches (pixel_unshuffle) and back (pixel_shuffle) by Reshape/Transpose;
forecaster_input "none" with the pixel head runs the forecaster once over n zero inputs from the
encoder's state; otherwise it rolls out one step at a time on its own previous frame (fed, or moved
by the advection head: Pad, the K² shifted Slices, Einsum with the kernels, Softmax masks),
unrolled over the fixed n.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from ...models.video import AdvectionHead, EncoderForecaster
from .graph import ExportError, Graph, f32
from .layer import check_layer, recurrent_graph
from .registry import ExportOptions, register_graph


class _VideoGraph:
    """Writes one EncoderForecaster's graph; its methods are the model's pieces in ONNX operators."""

    def __init__(self, g: Graph, model: EncoderForecaster, native_ops: bool) -> None:
        c = model.config
        self.g, self.model, self.config, self.native_ops = g, model, c, native_ops
        self.C, self.S, self.p = c.channels, c.frame_size, c.patch_size
        self.s = self.S // self.p  # the patch grid

    def shape(self, dims) -> str:
        return self.g.const(np.array(dims, dtype=np.int64), "shape")

    def lead(self, x: str) -> str:  # (T, B) of a sequence
        return self.g.slice_shape(x, 0, 2)

    def patch(self, x: str) -> str:
        """(T, B, C, S, S) -> (T, B, C·p², s, s), as F.pixel_unshuffle."""
        g, C, s, p = self.g, self.C, self.s, self.p
        y = g.op("Reshape", [x, self.shape([-1, C, s, p, s, p])])
        y = g.op("Transpose", [y], perm=[0, 1, 3, 5, 2, 4])
        return g.op("Reshape", [y, g.op("Concat", [self.lead(x), self.shape([self.model.patch_channels, s, s])],
                                        axis=0)])

    def unpatch(self, y: str, channels: int) -> str:
        """(N, channels·p², s, s) -> (N, channels, S, S), as F.pixel_shuffle."""
        g, s, p = self.g, self.s, self.p
        y = g.op("Transpose", [g.op("Reshape", [y, self.shape([-1, channels, p, p, s, s])])], perm=[0, 1, 4, 2, 5, 3])
        return g.op("Reshape", [y, self.shape([-1, channels, self.S, self.S])])

    def conv1x1(self, x: str, conv: nn.Conv2d, hint: str) -> str:
        return self.g.op("Conv", [x, self.g.const(f32(conv.weight), hint + "_w"),
                                  self.g.const(f32(conv.bias), hint + "_b")], kernel_shape=[1, 1])

    def moved(self, head: AdvectionHead, h: str, prev: str) -> str:
        """prev (N, C, S, S) moved by each of the M kernels read from h (N, Hc, s, s) -> (N, M, C, S, S)."""
        g, S, pool = self.g, self.S, head.pool_size
        M, K, r = head.kernels, head.size, head.size // 2
        pooled = g.op("AveragePool", [h], kernel_shape=[self.s // pool] * 2, strides=[self.s // pool] * 2)
        flat = g.op("Reshape", [pooled, self.shape([-1, self.config.hidden_channels * pool ** 2])])
        logits = g.matmul_t(flat, f32(head.kernel_logits.weight), f32(head.kernel_logits.bias), "kernels")
        kernels = g.op("Softmax", [g.op("Reshape", [logits, self.shape([-1, M, K * K])])], axis=-1)
        padded = g.op("Pad", [prev, self.shape([0, 0, r, r, 0, 0, r, r])])
        axes = self.shape([2, 3])
        shifted = g.op("Concat", [g.op("Unsqueeze", [g.op("Slice", [padded, self.shape([dy, dx]),
                                                                    self.shape([dy + S, dx + S]), axes]),
                                                     self.shape([1])])
                                  for dy in range(K) for dx in range(K)], axis=1)  # (N, K², C, S, S)
        return g.op("Einsum", [kernels, shifted], equation="bmq,bqcyx->bmcyx")

    def advect(self, h: str, prev: str) -> str:
        """h (N, Hc, s, s), prev (N, C, S, S) -> the logits of the next frame (N, C, S, S)."""
        g, head = self.g, self.model.advect
        M = head.kernels
        masks = g.op("Softmax", [self.unpatch(self.conv1x1(h, head.mask_logits, "masks"), M + 1)], axis=1)
        kept = g.op("Unsqueeze", [g.op("Slice", [masks, self.shape([0]), self.shape([M]), self.shape([1])]),
                                  self.shape([2])])
        probs = g.op("ReduceSum", [g.mul(kept, self.moved(head, h, prev)), self.shape([1])], keepdims=0)
        eps = self.model.logit_eps  # probabilities squeezed into [eps, 1 − eps] before the logit, as the model
        squeezed = g.add(g.mul(probs, g.const(np.float32(1 - 2 * eps), "scale")), g.const(np.float32(eps), "eps"))
        return g.sub(g.op("Log", [squeezed]), g.op("Log", [g.one_minus(squeezed)]))

    def logits(self, h: str, prev: str) -> str:
        """h (T, B, Hc, s, s), the frames before them (T, B, C, S, S) -> frame logits (T, B, C, S, S)."""
        g, C, S, s = self.g, self.C, self.S, self.s
        frames_h = g.op("Reshape", [h, self.shape([-1, self.config.hidden_channels, s, s])])
        if self.config.head == "pixels":
            y = self.unpatch(self.conv1x1(frames_h, self.model.head, "head"), C)
        else:
            y = self.advect(frames_h, g.op("Reshape", [prev, self.shape([-1, C, S, S])]))
        return g.op("Reshape", [y, g.op("Concat", [self.lead(h), self.shape([C, S, S])], axis=0)])

    def zeros(self, steps: int) -> str:
        """(steps, B, C·p², s, s) zeros: the forecaster's input when it reads nothing."""
        g, s = self.g, self.s
        batch = g.slice_shape("frames", 1, 2)
        return g.op("ConstantOfShape", [g.op("Concat", [self.shape([steps]), batch,
                                                        self.shape([self.model.patch_channels, s, s])], axis=0)])

    def forecast(self, state) -> str:
        """The logits (n, B, C, S, S) of the next n frames from the encoder's state."""
        g, c, n, forecaster = self.g, self.config, self.config.output_frames, self.model.forecaster
        last = g.last_along("frames", 0)
        if c.forecaster_input == "none" and c.head == "pixels":
            h, _ = recurrent_graph(g, forecaster, self.zeros(n), None, state, self.native_ops)
            return self.logits(h, last)
        # each step reads or moves the previous frame: σ of the previous logits, first the last observed one
        prev, outs = last, []
        for _ in range(n):
            step = self.patch(prev) if c.forecaster_input == "frames" else self.zeros(1)
            h, state = recurrent_graph(g, forecaster, step, None, state, self.native_ops)
            outs.append(self.logits(h, prev))  # (1, B, C, S, S)
            prev = g.sigmoid(outs[-1])
        return g.op("Concat", outs, axis=0)


@register_graph(EncoderForecaster)
def _video_graph(g: Graph, model: EncoderForecaster, options: ExportOptions) -> None:
    """frames (k, B, C, S, S) -> logits (n, B, C, S, S), as the model in eval mode."""
    c = model.config
    for layer in (model.encoder, model.forecaster):
        check_layer(layer)
    s = c.frame_size // c.patch_size
    if c.head == "advect" and s % model.advect.pool_size:
        pool = model.advect.pool_size
        raise ExportError(f"cannot export EncoderForecaster with head 'advect': its kernels average-pool the "
                          f"{s}x{s} patch grid to {pool}x{pool}, which ONNX AveragePool does only when {s} is a "
                          f"multiple of {pool}")
    writer = _VideoGraph(g, model, options.native_ops)
    g.input("frames", ["time", "batch", c.channels, c.frame_size, c.frame_size])
    _, state = recurrent_graph(g, model.encoder, writer.patch("frames"), None, None, options.native_ops)
    g.output("logits", writer.forecast(state), [c.output_frames, "batch", c.channels, c.frame_size, c.frame_size])
