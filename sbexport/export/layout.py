"""The ExecuTorch export's layout of the SqueezeBERT encoder: [B, C, 1, S] with Conv2d projections.

XNNPACK runs convolutions channels-last. ExecuTorch's Conv1dUnsqueezePass turns each Conv1d of
[B, C, S] into a Conv2d of [B, C, 1, S] with an unsqueeze before and a squeeze after, and the
squeeze, which needs the channels-first layout, makes the delegate transpose every projection's
output back (and the next one's input forward again). Running the encoder on [B, C, 1, S]
throughout, each projection a Conv2d with the same weights as [cout, cin/g, 1, 1], lets a
convolution's output feed the residual add, GELU and the next convolution channels-last
without those transposes: 0.92-0.96x the model's time at one thread (benchmarks/NOTES.md),
with bit-identical outputs. The projections stay native grouped convolutions.

XNNPACK has no LayerNorm, and its mean reduces only the spatial dimensions, so a LayerNorm over
the channels stays outside the delegate and splits the program (29 delegates for 12 layers).
DelegatedLayerNorm computes the channel mean and variance as 1x1 convolutions to one output
channel and the rest with elementwise ops XNNPACK takes, channels-last like the convolutions
around it: 5 delegates, logits ~2e-7 from the native LayerNorm's, 0.97x the model's time at
one thread and 0.89-0.95x at two, for about 10% more export time (benchmarks/NOTES.md,
stop 17). The same ops on a permuted tensor (XNNPACK's spatial mean) were as fast but cost 47%
more export time: each LayerNorm became eleven nodes, and XNNPACK's passes cost per node.

Opt-in (`per_group`, export --grouped-conv per-group): each grouped projection as one dense
(groups=1) Conv2d per group on its chunk of the channels, the outputs concatenated. XNNPACK runs
a dense 1x1 convolution on its fully-connected GEMM and a grouped one on its IGEMM, and on x86
with AVX2 alone (AMD Zen 3) the IGEMM ran at 40% of the GEMM's rate (roofline, ETDump): there
the per-group program took 0.59-0.64x the default's time on one thread and 0.70-0.82x on two,
with the same outputs, for twice the export time; on AVX-512 the grouped IGEMM is as fast, and
one projection in this form was a little slower (benchmarks/NOTES.md, stop 18). Not the
default: the projection is then `groups` native convolutions, not one grouped convolution.
Each channel split runs outside the delegate (a copy, and transposes at the boundary), so the
form splits as little as it can: the query, key and value share one split of their input
(share_group_splits), and the intermediate hands its groups to the output's uncatenated
(PerGroupActivation): 2 splits per layer instead of 5, 29 delegates instead of 41, 0.91-0.94x
the time (stop 19).

The reference model (modeling.py) is not changed: `conv2d_layout` returns a copy whose
encoders run the same modules' forwards on 4-D tensors, so verify still compares the file
against the unchanged [B, C, S] reference.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling import ChannelLayerNorm, SqueezeBertEncoder, SqueezeBertModule, run_layers


def conv2d_layout(module: nn.Module, per_group: bool = False) -> nn.Module:
    """A copy of `module` whose SqueezeBERT encoders run on [B, C, 1, S] (`per_group`: each
    grouped projection a PerGroupConv2d); a model without one (BERT), or whose projections are
    not all Conv1d (the exporter's check then names them), comes back unchanged (not copied).
    Inputs and outputs are those of `module`."""
    layers = [m for m in module.modules() if isinstance(m, SqueezeBertModule)]
    if not layers or not all(isinstance(getattr(owner, name), nn.Conv1d)
                             for layer in layers for owner, name in projection_slots(layer)):
        return module
    module = copy.deepcopy(module)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SqueezeBertEncoder):
                setattr(parent, name, Encoder2d(child, per_group))
    return module


class Encoder2d(nn.Module):
    """SqueezeBertEncoder on [B, H, 1, S] inside: takes and returns [B, S, H] as it does."""

    def __init__(self, encoder: SqueezeBertEncoder, per_group: bool = False):
        super().__init__()
        self.num_heads = encoder.num_heads
        self.layers = nn.ModuleList(Layer2d(layer, per_group) for layer in encoder.layers)

    def forward(self, x, mask=None, head_masks=None, output_attentions=False, output_hidden_states=False):
        if mask is not None:   # as SqueezeBertEncoder: heads folded into the batch
            mask = mask.expand(-1, self.num_heads, -1, -1).flatten(0, 1)   # [B, 1, 1, S] -> [B*h, 1, S]
        to_bsh = lambda t: t.squeeze(2).permute(0, 2, 1)                   # noqa: E731  [B, H, 1, S] -> [B, S, H]
        x, hidden_states, attentions = run_layers(self.layers, x.permute(0, 2, 1).unsqueeze(2), mask, head_masks,
                                                  output_attentions, output_hidden_states, view=to_bsh)
        return to_bsh(x), hidden_states, attentions


class Layer2d(nn.Module):
    """A SqueezeBertModule on [B, H, 1, S]: its own submodules, each Conv1d made a Conv2d (a
    grouped one, with `per_group`, a PerGroupConv2d) and each ChannelLayerNorm a
    DelegatedLayerNorm (same parameters). Changes `layer`'s submodules in place (conv2d_layout
    passes a copy)."""

    def __init__(self, layer: SqueezeBertModule, per_group: bool = False):
        super().__init__()
        for owner, name in projection_slots(layer):
            conv = as_conv2d(getattr(owner, name))
            setattr(owner, name, PerGroupConv2d(conv) if per_group and conv.groups > 1 else conv)
        if per_group and _same_groups(layer.intermediate.conv1d, layer.output.conv1d):
            layer.intermediate = PerGroupActivation(layer.intermediate)
        for norm_owner in (layer.post_attention, layer.output):
            norm_owner.layernorm = DelegatedLayerNorm(norm_owner.layernorm)
        self.attention, self.post_attention = layer.attention, layer.post_attention
        self.intermediate, self.output = layer.intermediate, layer.output

    def forward(self, x, mask=None, head_mask=None):
        """x [B, H, 1, S] -> (y [B, H, 1, S], attention probs [B, heads, S, S])."""
        # The attention's .view(b * h, d, -1) needs channels-first memory; the encoder's entry
        # leaves x channels-last strided (a copy in XNNPACK, not a transpose).
        context, probs = self.attention(x.contiguous(), mask, head_mask)  # context [B, H, S]
        b, c = context.shape[:2]   # a view with int sizes stays in the delegate; unsqueeze would not
        x = self.post_attention(context.view(b, c, 1, -1), x)
        return self.output(self.intermediate(x), x), probs


def projection_slots(layer: SqueezeBertModule) -> list[tuple[nn.Module, str]]:
    """(owner module, attribute name) of the layer's six projections, in graph order."""
    a = layer.attention
    return [(a, "query"), (a, "key"), (a, "value"), (layer.post_attention, "conv1d"),
            (layer.intermediate, "conv1d"), (layer.output, "conv1d")]


class DelegatedLayerNorm(nn.Module):
    """ChannelLayerNorm's LayerNorm over the channels of a [B, C, 1, S] tensor, written with ops
    XNNPACK delegates: the channel mean (twice) and variance as 1x1 convolutions to one output
    channel (weights 1/C), so that no permute is needed (module docstring)."""

    def __init__(self, norm: ChannelLayerNorm):
        super().__init__()
        c = norm.normalized_shape[0]
        self.register_buffer("average", torch.full((1, c, 1, 1), 1.0 / c))     # [1, C, 1, 1]
        self.register_buffer("eps", torch.tensor([norm.eps]))                    # the variance conv's bias
        self.register_buffer("scale", norm.weight.detach().view(1, c, 1, 1))
        self.register_buffer("shift", norm.bias.detach().view(1, c, 1, 1))

    def forward(self, x):
        """x [B, C, 1, S] -> [B, C, 1, S]."""
        centred = x - F.conv2d(x, self.average)                                 # mean [B, 1, 1, S]
        # Again on the centred values: a GEMM sums the C products in order, and the first
        # mean's rounding grows with the token's mean (output 1.5e-5 from float64 at a mean
        # of 1, 1e-3 at 50); after this pass it is 4-5e-6, as near as torch's LayerNorm
        # (1.6e-6 to 4e-5; tests/test_export_executorch.py).
        centred = centred - F.conv2d(centred, self.average)
        inverse_std = torch.rsqrt(F.conv2d(centred * centred, self.average, self.eps))
        return centred * inverse_std * self.scale + self.shift


def as_conv2d(conv: nn.Conv1d) -> nn.Conv2d:
    """The 1x1 Conv1d `conv` as a Conv2d: weight [cout, cin/g, 1] viewed as [cout, cin/g, 1, 1]."""
    return _conv2d(conv.weight.detach().unsqueeze(-1), conv.bias, conv.groups)


def _conv2d(weight, bias, groups: int = 1) -> nn.Conv2d:
    """A frozen 1x1 Conv2d holding `weight` [cout, cin/groups, 1, 1] and `bias` [cout] or None."""
    out = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], kernel_size=1, groups=groups, bias=bias is not None)
    out.weight = nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        out.bias = nn.Parameter(bias.detach(), requires_grad=False)
    return out


class PerGroupConv2d(nn.Module):
    """A grouped 1x1 Conv2d as one dense Conv2d per group on its chunk of the input channels,
    the outputs concatenated in group order: the same products summed in the same order (the
    full-size program's logits were bit-identical to the grouped convolution's). The chunking is
    a split_with_sizes that runs outside the delegate: XNNPACK slices only tensors of static
    shape, and the sequence is dynamic. Per-group slices instead left four ops outside per
    projection, at the same speed (benchmarks/NOTES.md, stop 18). Given its input already
    split (a tuple of g chunks, PerGroupActivation's output), it splits nothing."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        g = conv.groups
        biases = conv.bias.detach().chunk(g) if conv.bias is not None else [None] * g
        self.parts = nn.ModuleList(_conv2d(w.clone(), b) for w, b in zip(conv.weight.detach().chunk(g), biases))

    def forward(self, x):
        """x [B, cin, 1, S], or its g channel groups -> [B, cout, 1, S]."""
        return torch.cat(self.each_group(x), dim=1)

    def each_group(self, x) -> list:
        """x [B, cin, 1, S], or its g channel groups -> g x [B, cout/g, 1, S], uncatenated."""
        chunks = x if isinstance(x, tuple) else x.chunk(len(self.parts), dim=1)   # g x [B, cin/g, 1, S]
        return [part(chunk) for part, chunk in zip(self.parts, chunks)]


class PerGroupActivation(nn.Module):
    """The intermediate ConvActivation of the per-group form, when the output projection has as
    many groups: its g activated group outputs, left uncatenated for the output's
    PerGroupConv2d, whose group i reads exactly the channels of the intermediate's group i. The
    cat, the split of its 4x-wide result outside the delegate and a delegate boundary go."""

    def __init__(self, intermediate: nn.Module):
        super().__init__()
        self.conv1d, self.act = intermediate.conv1d, intermediate.act

    def forward(self, x):
        """x [B, H, 1, S] -> g x [B, I/g, 1, S]."""
        return tuple(self.act(y) for y in self.conv1d.each_group(x))


def _same_groups(first: nn.Module, second: nn.Module) -> bool:
    """Whether two projections are PerGroupConv2d with the same number of groups."""
    return isinstance(first, PerGroupConv2d) and isinstance(second, PerGroupConv2d) and \
        len(first.parts) == len(second.parts)


def share_group_splits(program) -> None:
    """Merge, in place, the identical channel splits of a torch.export program of the per-group
    form: the query, key and value projections chunk the same input alike, and torch.export
    keeps all three (it eliminates no common subexpression); each split runs outside the
    delegate, a copy and two transposes at its boundary. `program`: an ExportedProgram."""
    graph, first = program.graph_module.graph, {}
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target is torch.ops.aten.chunk.default:
            key = (node.args, tuple(node.kwargs.items()))
            if key in first:
                node.replace_all_uses_with(first[key])
                graph.erase_node(node)
            else:
                first[key] = node
    program.graph_module.recompile()
