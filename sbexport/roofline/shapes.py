"""SqueezeBERT's projection shapes and what one call of each costs: the roofline's x and y axes.

Every projection of a SqueezeBERT layer is a 1x1 Conv1d over [batch, channels, seq]: query, key,
value (hidden -> hidden), post-attention (hidden -> hidden), intermediate (hidden -> intermediate)
and output (intermediate -> hidden), each with its own group count. With the public config
(hidden 768, intermediate 3072, groups 4/4/4/1/4/4) they fall into four distinct shapes.

FLOPs here is the one formula of the roofline: 2 FLOPs per multiply-accumulate, a 1x1 conv of
`cin -> cout` channels in `g` groups doing cin/g multiply-adds per output value, so

    flops = 2 * cin * cout / g * seq * batch

The bias add (cout * seq adds) is not counted, as torch's FlopCounterMode does not count it
(bench/flops.py counts the whole model the same way).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import SqueezeBertConfig

BYTES_PER_VALUE = 4   # fp32
FORMULA = ("2 * cin * cout / groups * seq * batch (2 per multiply-accumulate of the 1x1 convolution; "
           "bias adds not counted)")


@dataclass(frozen=True)
class Projection:
    """One distinct projection shape and the projections of a layer that have it."""

    cin: int
    cout: int
    groups: int
    names: tuple[str, ...]      # e.g. ("query", "key", "value")

    @property
    def key(self) -> str:
        """'768x3072/g4': input x output channels / groups, the shape's name in the report."""
        return f"{self.cin}x{self.cout}/g{self.groups}"

    def flops(self, seq: int, batch: int = 1) -> int:
        """FLOPs of one call at [batch, cin, seq]: FORMULA, the module docstring's."""
        return 2 * self.cin * self.cout // self.groups * seq * batch

    def bytes_moved(self, seq: int, batch: int = 1) -> int:
        """The least memory traffic of one call: read the input [batch, cin, seq], the weight
        [cout, cin/g, 1] and bias [cout] once, write the output [batch, cout, seq], in fp32."""
        values = batch * seq * (self.cin + self.cout) + self.cout * self.cin // self.groups + self.cout
        return BYTES_PER_VALUE * values

    def intensity(self, seq: int, batch: int = 1) -> float:
        """Arithmetic intensity, FLOPs per byte of that least traffic."""
        return self.flops(seq, batch) / self.bytes_moved(seq, batch)


def projections(config: SqueezeBertConfig | None = None) -> list[Projection]:
    """The distinct projection shapes of a layer of `config` (default: the public full-size
    one), in the order their first projection runs; each names the projections sharing it."""
    config = config or SqueezeBertConfig()
    h, i = config.hidden_size, config.intermediate_size
    channels = {"query": (h, h), "key": (h, h), "value": (h, h), "post_attention": (h, h),
                "intermediate": (h, i), "output": (i, h)}
    shapes: dict[tuple[int, int, int], list[str]] = {}
    for name, groups in config.groups.items():
        shapes.setdefault((*channels[name], groups), []).append(name)
    return [Projection(cin, cout, g, tuple(names)) for (cin, cout, g), names in shapes.items()]


def dense_reference(shape: Projection, shapes: list[Projection]) -> Projection | None:
    """The ungrouped shape a grouped one is compared with: among `shapes` with groups 1, the
    one whose FLOPs per token are nearest (equal for the FFN's 768x3072/g4 and 3072x768/g4
    against 768x768/g1; 4x more for 768x768/g4, which has no dense peer of equal FLOPs in
    the model). None for an ungrouped shape or when no dense shape was measured."""
    dense = [s for s in shapes if s.groups == 1]
    if shape.groups == 1 or not dense:
        return None
    return min(dense, key=lambda d: abs(d.flops(1) - shape.flops(1)))
