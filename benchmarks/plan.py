"""What a run of the benchmark measures, and the targets from issues 6, 24 and 25."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    size: str  # a key of checkpoint.SIZES
    decode_context: int  # prompt length before the timed decode steps
    decode_pairs: int
    decode_warmup: int
    prefill_fractions: tuple[int, ...]  # prefill lengths as n_ctx // fraction
    prefill_pairs: int
    stream_bytes: int  # the buffer read to measure memory bandwidth
    stream_repeats: int
    ui_tokens: int  # length of the run the panes render
    ui_presses: int  # key presses timed during generation
    cold_starts: int  # launches of the command; the median is reported
    why_tokens: int  # DLA, one knock-out and saliency at this length
    effect_tokens: int  # every head's effect at this length
    why_pairs: int
    # Every head's effect, ours against TransformerLens's loop: a pair takes up to a minute
    # here, long enough for the machine's speed to drift, hence two (ab then ba) in full.
    effect_pairs: int
    patch_tokens: int = 16  # the prompts of the patching sweeps
    patch_pairs: int = 1  # TransformerLens's loop of 192 hooked forwards takes most of a minute


PLANS = {
    "full": Plan("small", 128, 30, 3, (8, 2, 1), 3, 1 << 30, 5, 256, 20, 3, 128, 32, 5, 2),
    # The smoke test's: every section, tiny sizes, a few seconds.
    "quick": Plan("tiny", 16, 4, 1, (8, 2, 1), 1, 64 << 20, 2, 32, 3, 1, 16, 8, 1, 1, 8),
}

DECODE_RATIO = 0.6  # our step over transformers'
FLOOR_MULTIPLE = 2.0  # our step over the bandwidth floor
PREFILL_RATIO = 1.0
PEAK_RSS_BYTES = 1.3e9
PEAK_RSS_RATIO = 0.8  # "well under transformers with attentions", read as 80% at most
PANE_RENDER_MS = 15.0
KEY_REPAINT_MS = 50.0
COLD_START_S = 4.0
# Why this token (issue 24); the ratios named LENS are over TransformerLens's paths.
DLA_MS = 10.0  # one target at 128 tokens, from a finished run
DLA_LENS_RATIO = 0.05  # over run_with_cache + stack_head_results + logit_attrs
KNOCK_OUT_RATIO = 0.65  # one middle-layer head knocked out over a full prefill
KNOCK_OUT_LENS_RATIO = 0.5  # the same over one hooked forward
HEAD_EFFECTS_LENS_RATIO = 0.3  # all heads' effects over one hooked forward per head
FIRST_ROW_S = 1.0  # from calling head_effects to its first row
SALIENCY_LENS_RATIO = 1.0  # gradient x input over a forward + backward
# Activation patching (issue 25), over TransformerLens's loop of hooked forwards.
RESID_SWEEP_LENS_RATIO = 0.25  # resid_pre at every (layer, position)
HEAD_SWEEP_LENS_RATIO = 0.3  # each head's z at every position
ESTIMATE_LENS_RATIO = 1.5  # all four maps' estimate over one forward + backward
FIRST_EXACT_ROW_S = 1.0
HEADS_MS = 1000.0  # issue 27: head_stats over a full context, and the induction probe
PROBE_MS = 1000.0
# GPT-2 medium and xl at full size (issue 28, `--sizes`).
LOAD_RSS_RATIO = 1.15  # the peak RSS of loading over the float32 weights' bytes
SIZE_FLOOR_MULTIPLE = 1.5  # a decode step over its bandwidth floor
