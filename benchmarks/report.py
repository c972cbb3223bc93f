"""The benchmark's results as a plain-text table, each figure beside its target."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks import heads_bench
from benchmarks import plan as targets

MB = 1e6


TRANSFORMERS = "transformers"
LENS = "TransformerLens"


@dataclass(frozen=True)
class Row:
    label: str
    ours: str
    theirs: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None
    peer: str = ""  # whom `theirs` is of: TRANSFORMERS, LENS, ...


def ms(x: float) -> str:
    """Milliseconds to a tenth under 100, whole above."""
    return f"{x:.1f} ms" if x < 100 else f"{x:.0f} ms"


def verdict(met: bool | None) -> str:
    return "" if met is None else ("yes" if met else "NO")


def header(results: dict) -> list[str]:
    m, size = results["machine"], results["model"]
    gpu = f", {m['gpu']}" if m.get("gpu") else ""
    return [
        f"machine: {m['cpu']} ({m['cores']} cores{gpu}), {m['platform']}",
        f"torch {m['torch']}, transformers {m['transformers']}, "
        f"TransformerLens {m.get('transformer_lens') or 'not installed'}, "
        f"textual {m['textual']}, python {m['python']}",
        f"device {m['device']}, dtype {m['dtype']}, threads {m['threads']}",
        f"model: random weights, GPT-2 '{size['size']}' shapes: {size['n_layer']} layers, "
        f"{size['n_head']} heads, width {size['n_embd']}, context {size['n_positions']}, "
        f"vocabulary {size['vocab_size']}",
    ]


def decode_rows(d: dict) -> list[Row]:
    bw = d["bandwidth"]
    floor = (
        f"bandwidth floor: {bw['weight_bytes_per_token'] / MB:.0f} MB of weights "
        f"/ {bw['stream_bytes_per_s'] / 1e9:.1f} GB/s"
    )
    return [
        Row(
            f"decode step, context {d['context']}, ours with sampling (median of {d['pairs']})",
            f"{d['ours_ms']:.1f} ms",
            f"{d['transformers_ms']:.1f} ms",
            f"{d['ratio']:.2f}x",
            f"<= {targets.DECODE_RATIO}x",
            d["ratio"] <= targets.DECODE_RATIO,
            TRANSFORMERS,
        ),
        Row(
            floor,
            f"{bw['floor_ms']:.1f} ms",
            "",
            f"{bw['ours_over_floor']:.2f}x",
            f"step <= {targets.FLOOR_MULTIPLE:.0f}x floor",
            bw["ours_over_floor"] <= targets.FLOOR_MULTIPLE,
        ),
    ]


def prefill_rows(rows: list[dict]) -> list[Row]:
    out = []
    for p in rows:
        out.append(
            Row(
                f"prefill {p['tokens']} tokens, one pass",
                f"{p['ours_ms']:.0f} ms",
                f"{p['transformers_ms']:.0f} ms",
                f"{p['ratio']:.2f}x",
                f"<= {targets.PREFILL_RATIO:.0f}x",
                p["ratio"] <= targets.PREFILL_RATIO,
                TRANSFORMERS,
            )
        )
        out.append(
            Row(
                f"  in the runner's chunks ({p['tokens']} tokens)", f"{p['ours_chunked_ms']:.0f} ms"
            )
        )
    return out


def memory_rows(m: dict) -> list[Row]:
    ours = m["ours_peak_rss_bytes"]
    rows = [
        Row(
            f"peak RSS, {m['tokens']}-token run ({m['prompt']} prompt + generation)",
            f"{ours / MB:.0f} MB",
            f"{m['transformers_peak_rss_bytes'] / MB:.0f} MB",
            f"{m['ratio']:.2f}x",
            f"<= {targets.PEAK_RSS_BYTES / 1e9:.1f} GB, <= {targets.PEAK_RSS_RATIO}x",
            ours <= targets.PEAK_RSS_BYTES and m["ratio"] <= targets.PEAK_RSS_RATIO,
            TRANSFORMERS,
        ),
        Row(
            "  peak while loading the weights",
            f"{m['ours_load_peak_rss_bytes'] / MB:.0f} MB",
            f"{m['transformers_load_peak_rss_bytes'] / MB:.0f} MB",
            peer=TRANSFORMERS,
        ),
    ]
    if "ours_peak_cuda_bytes" in m:
        rows.append(
            Row(
                "  peak CUDA memory allocated",
                f"{m['ours_peak_cuda_bytes'] / MB:.0f} MB",
                f"{m['transformers_peak_cuda_bytes'] / MB:.0f} MB",
                peer=TRANSFORMERS,
            )
        )
    return rows


def ui_rows(u: dict) -> list[Row]:
    rows = [
        Row(
            f"render {pane} pane at {u['width']}x{u['height']}, {u['tokens']} tokens",
            f"{ms:.1f} ms",
            target=f"<= {targets.PANE_RENDER_MS:.0f} ms",
            met=ms <= targets.PANE_RENDER_MS,
        )
        for pane, ms in u["render_ms"].items()
    ]
    key = u["key_repaint_ms"]
    rows.append(
        Row(
            f"key press to repaint while generating (median of {u['presses']})",
            f"{key:.1f} ms",
            target=f"<= {targets.KEY_REPAINT_MS:.0f} ms",
            met=key <= targets.KEY_REPAINT_MS,
        )
    )
    cold = u["cold_start_s"]
    rows.append(
        Row(
            f"cold start to the first full screen (median of {len(u['cold_starts_s'])})",
            "no tmux" if cold is None else f"{cold:.2f} s",
            target=f"<= {targets.COLD_START_S:.0f} s",
            met=None if cold is None else cold <= targets.COLD_START_S,
        )
    )
    return rows


def why_rows(w: dict) -> list[Row]:
    """Each figure against TransformerLens; without it installed, its cells say so."""
    d, k, kl, e, s = (
        w[n]
        for n in ("dla", "knock_out_vs_prefill", "knock_out_vs_lens", "head_effects", "saliency")
    )

    def lens_row(label: str, f: dict, limit: float, digits: int = 2) -> Row:
        if f["ratio"] is None:
            return Row(label, ms(f["ours_ms"]), "not installed", "", f"<= {limit}x", None, LENS)
        ratio, met = f"{f['ratio']:.{digits}f}x", f["ratio"] <= limit
        return Row(label, ms(f["ours_ms"]), ms(f["lens_ms"]), ratio, f"<= {limit}x", met, LENS)

    return [
        Row(
            f"DLA, one target, {d['tokens']} tokens, from a finished run",
            f"{d['ours_ms']:.1f} ms",
            target=f"<= {targets.DLA_MS:.0f} ms",
            met=d["ours_ms"] <= targets.DLA_MS,
        ),
        lens_row(
            "  vs run_with_cache + stack_head_results + logit_attrs",
            d,
            targets.DLA_LENS_RATIO,
            digits=3,
        ),
        Row(
            f"L{k['layer']} head knocked out, {k['tokens']} tokens, vs a full prefill",
            ms(k["ours_ms"]),
            ms(k["prefill_ms"]),
            f"{k['ratio']:.2f}x",
            f"<= {targets.KNOCK_OUT_RATIO}x",
            k["ratio"] <= targets.KNOCK_OUT_RATIO,
            "ours (prefill)",
        ),
        lens_row("  vs one forward with a hook on hook_z", kl, targets.KNOCK_OUT_LENS_RATIO),
        lens_row(
            f"{e['heads']} head effects, {e['tokens']} tokens, vs {e['heads']} hooked forwards",
            e,
            targets.HEAD_EFFECTS_LENS_RATIO,
        ),
        Row(
            f"  first row of head effects (median of {len(e['first_rows_s'])})",
            f"{e['first_row_s']:.3f} s",
            target=f"<= {targets.FIRST_ROW_S:.0f} s",
            met=e["first_row_s"] <= targets.FIRST_ROW_S,
        ),
        lens_row(
            f"saliency, {s['tokens']} tokens, vs forward + backward",
            s,
            targets.SALIENCY_LENS_RATIO,
        ),
    ]


def patching_rows(p: dict) -> list[Row]:
    def lens_row(label: str, f: dict, limit: float) -> Row:
        if f["ratio"] is None:
            return Row(label, ms(f["ours_ms"]), "not installed", "", f"<= {limit}x", None, LENS)
        ratio, met = f"{f['ratio']:.3f}x", f["ratio"] <= limit
        return Row(label, ms(f["ours_ms"]), ms(f["lens_ms"]), ratio, f"<= {limit}x", met, LENS)

    r, h, e = p["resid_pre"], p["heads"], p["estimate"]
    return [
        lens_row(
            f"patching resid_pre, {r['cells']} cells ({p['tokens']} tokens), vs hooked forwards",
            r,
            targets.RESID_SWEEP_LENS_RATIO,
        ),
        lens_row(
            f"  each head's z, {h['cells']} cells, vs hooked forwards",
            h,
            targets.HEAD_SWEEP_LENS_RATIO,
        ),
        lens_row(
            "  estimate of all 4 maps vs one forward + backward", e, targets.ESTIMATE_LENS_RATIO
        ),
        Row(
            f"  first exact row (median of {len(p['first_rows_s'])})",
            f"{p['first_row_s']:.3f} s",
            target=f"<= {targets.FIRST_EXACT_ROW_S:.0f} s",
            met=p["first_row_s"] <= targets.FIRST_EXACT_ROW_S,
        ),
        repaint_row(p["key_repaint_during_sweep"]),
    ]


def repaint_row(r: dict) -> Row:
    if not r["presses"]:
        return Row("  key to repaint while the sweep runs", "the sweep ended first")
    return Row(
        f"  key to repaint while the sweep runs (median of {r['presses']}, "
        f"max {r['max_ms']:.0f} ms)",
        f"{r['median_ms']:.0f} ms",
        target=f"<= {targets.KEY_REPAINT_MS:.0f} ms",
        met=r["median_ms"] <= targets.KEY_REPAINT_MS,
    )


def sizes_rows(sizes: list[dict]) -> list[Row]:
    """Per size and dtype: load against a plain read, peak RSS against the float32 file,
    decode against its bandwidth floor, a prefill of the whole context."""
    rows = []
    for s in sizes:
        name, f32 = f"{s['size']} {s['dtype']}", s["file_bytes"]
        rss_ratio = s["load_peak_rss_bytes"] / f32
        floor_ratio = s["decode_ms"] / s["floor_ms"]
        rss_goal = targets.LOAD_RSS_RATIO * (1 if s["dtype"] == "float32" else 0.5)
        rows += [
            Row(
                f"{name}: load, against reading the {f32 / 1e9:.2f} GB file",
                f"{s['load_s']:.1f} s",
                f"{s['read_s']:.1f} s",
                f"{s['load_s'] / s['read_s']:.1f}x",
                peer="plain read",
            ),
            Row(
                f"{name}: peak RSS of loading (before: {s['rss_before_load_bytes'] / 1e9:.2f} GB)",
                f"{s['load_peak_rss_bytes'] / 1e9:.2f} GB",
                f"{f32 / 1e9:.2f} GB",
                f"{rss_ratio:.2f}x",
                f"<= {rss_goal:.3g}x",
                rss_ratio <= rss_goal,
                "float32 file",
            ),
            Row(
                f"{name}: decode step, context {s['context']}, over its bandwidth floor",
                ms(s["decode_ms"]),
                ms(s["floor_ms"]),
                f"{floor_ratio:.2f}x",
                f"<= {targets.SIZE_FLOOR_MULTIPLE}x",
                floor_ratio <= targets.SIZE_FLOOR_MULTIPLE,
                "floor",
            ),
            Row(f"{name}: prefill {s['prefill_tokens']} tokens", f"{s['prefill_s']:.1f} s"),
            *app_rows(name, s["ui"]),
        ]
    return rows


def app_rows(name: str, u: dict) -> list[Row]:
    """The app on a model of this size: its slowest pane's render, and key to repaint."""
    pane, slowest = max(u["render_ms"].items(), key=lambda item: item[1])
    key = u["key_repaint_ms"]
    return [
        Row(
            f"{name}: slowest pane render ({pane}), {u['tokens']} tokens",
            ms(slowest),
            target=f"<= {targets.PANE_RENDER_MS:.0f} ms",
            met=slowest <= targets.PANE_RENDER_MS,
        ),
        Row(
            f"{name}: key press to repaint while generating (median of {u['presses']}, "
            f"max {u['key_repaint_max_ms']:.0f} ms)",
            ms(key),
            target=f"<= {targets.KEY_REPAINT_MS:.0f} ms",
            met=key <= targets.KEY_REPAINT_MS,
        ),
    ]


def table(results: dict) -> str:
    rows = []
    if "decode" in results:
        rows += decode_rows(results["decode"])
    if "prefill" in results:
        rows += prefill_rows(results["prefill"])
    if "memory" in results:
        rows += memory_rows(results["memory"])
    if "ui" in results:
        rows += ui_rows(results["ui"])
    if "why" in results:
        rows += why_rows(results["why"])
    if "patching" in results:
        rows += patching_rows(results["patching"])
    if "heads" in results:
        rows += heads_bench.rows(results["heads"])
    rows += sizes_rows(results.get("sizes", []))
    cells = [["", "ours", "peer", "theirs", "ratio", "target", "met"]]
    cells += [[r.label, r.ours, r.peer, r.theirs, r.ratio, r.target, verdict(r.met)] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    left = {0, 2}  # the label and the peer's name
    lines = [
        "  ".join(
            cell.ljust(w) if i in left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in cells
    ]
    took = ", ".join(f"{name} {s:.0f} s" for name, s in results["seconds"].items())
    return "\n".join([*header(results), "", *lines, "", f"took: {took}"])
