"""The resilience matrix's heatmaps (``byzmtl matrix``): rules x attacks, coloured by how many
times worse than no cooperation each rule does under each attack."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize, SymLogNorm
from matplotlib.ticker import FuncFormatter

from byzmtl.names import NO_ATTACK, NO_COOPERATION
from byzmtl.plots.saving import DPI

NO_ATTACK_LABEL = "no attack"
NO_COOPERATION_LABEL = "none (no cooperation)"


def matrix_label(name: str, kind: str) -> str:
    """How the matrix shows a rule or attack name: attack ``none`` is "no attack", rule
    ``none`` is "none (no cooperation)", so that the two are never confused."""
    if kind == "attack" and name == NO_ATTACK:
        return NO_ATTACK_LABEL
    if kind != "attack" and name == NO_COOPERATION:
        return NO_COOPERATION_LABEL
    return name


def matrix_colours(log_ratios: np.ndarray) -> Normalize:
    """The colour scale of a heatmap of log10 factors (how many times worse than no
    cooperation): linear within a factor of 10 either way, logarithmic in the exponent beyond,
    up to the largest finite magnitude (at least 1): 26 and 1e155 stay far apart."""
    finite = np.abs(np.asarray(log_ratios, dtype=float))
    finite = finite[np.isfinite(finite)]
    top = max(1.0, float(finite.max(initial=0.0)))
    return SymLogNorm(linthresh=1.0, linscale=1.0, vmin=-top, vmax=top, base=10)


def _compact(value: float) -> str:
    """3 significant digits (all digits from 1000 on); scientific notation outside
    [1e-3, 1e4)."""
    if not np.isfinite(value):
        return "n/a" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    if value != 0 and not 1e-3 <= abs(value) < 1e4:
        mantissa, exponent = f"{value:.2e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _power_of_ten(exponent: float) -> str:
    """10**exponent as a tick label: 0.01, 0.1, 1, 10, 100, then 1e3, 1e10, ..."""
    if abs(exponent - round(exponent)) > 1e-9:
        return _compact(10.0**exponent)
    power = round(exponent)
    return f"{10.0**power:g}" if -2 <= power <= 2 else f"1e{power}"


def _text_colour(rgb: Sequence[float]) -> str:
    """Black on light cells, white on dark ones (relative luminance of the cell's colour)."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb[:3]]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return "black" if luminance > 0.18 else "white"


def matrix_figure(
    table: pd.DataFrame,
    rules: Sequence[str],
    attacks: Sequence[str],
    metrics: Sequence[str],
    higher_is_better: Iterable[str],
    path: Path,
    title: str = "",
) -> None:
    """The resilience matrix (``byzmtl matrix``'s table): one heatmap per metric, rules x
    attacks, coloured by the log10 factor by which the rule is worse than no cooperation under
    the same attack (rule / none, or none / rule where higher is better: red worse, blue
    better; see :func:`matrix_colours`), each cell annotated with the mean and the factor."""
    higher = set(higher_is_better)
    indexed = table.set_index(["rule", "attack"])
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.8")
    fig, axes = plt.subplots(
        len(metrics),
        1,
        figsize=(1.05 * len(attacks) + 4.2, (0.48 * len(rules) + 1.9) * len(metrics)),
        squeeze=False,
        layout="constrained",
    )
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        values = np.full((len(rules), len(attacks)), np.nan)
        ratios = np.full_like(values, np.nan)
        for i, rule in enumerate(rules):
            for j, attack in enumerate(attacks):
                row = indexed.loc[(rule, attack)]
                values[i, j], ratios[i, j] = row[f"{metric}_mean"], row[f"{metric}_vs_none"]
        with np.errstate(divide="ignore", invalid="ignore"):
            factors = 1 / ratios if metric in higher else ratios
            exponents = np.log10(factors)
        norm = matrix_colours(exponents)
        shown = np.clip(
            np.where(np.isinf(exponents), np.sign(exponents) * norm.vmax, exponents),
            norm.vmin,
            norm.vmax,
        )
        image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, norm=norm, aspect="auto")
        for i, rule in enumerate(rules):
            for j in range(len(attacks)):
                text = _compact(values[i, j])
                if rule != NO_COOPERATION and np.isfinite(values[i, j]):
                    text += f"\n×{_compact(ratios[i, j])}"
                colour = "black" if np.isnan(shown[i, j]) else _text_colour(cmap(norm(shown[i, j])))
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
        ax.set_xticks(
            range(len(attacks)),
            [matrix_label(a, "attack") for a in attacks],
            rotation=40,
            ha="right",
            fontsize=8,
        )
        ax.set_yticks(range(len(rules)), [matrix_label(r, "rule") for r in rules], fontsize=8)
        ax.set_xlabel("attack")
        ax.set_ylabel("rule")
        worse = "none / rule" if metric in higher else "rule / none"
        ax.set_title(f"{metric}: mean over normal agents; ×: rule / none", fontsize=9)
        bar = fig.colorbar(image, ax=ax, shrink=0.9, pad=0.02)
        bar.set_label(f"times worse than no cooperation\n({worse}, log scale)", fontsize=8)
        bar.formatter = FuncFormatter(lambda x, _: _power_of_ten(x))
        bar.update_ticks()
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=DPI, format="png")
    plt.close(fig)
