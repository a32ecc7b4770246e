"""The Python API: run the paper experiment, read the metrics, save the results folder."""

from __future__ import annotations

import byzmtl

result = byzmtl.run({"case": "target-localization", "attackers": 20, "seed": 0})

# metrics: one row per (rule, group, iteration) with <metric>_mean/_min/_max over normal agents
table = result.metrics
loss_rule = table[(table.rule == "loss") & (table.group == "all")]
print(loss_rule[["iteration", "loss_mean", "msd_mean"]].tail(3).to_string(index=False))

# the summary: "final" values average the last 10% of iterations
for rule in result.config.rules:
    print(
        f"{rule:8s} loss {result.final(rule, 'loss'):8.4f}   worst agent "
        f"{result.final(rule, 'loss', 'max'):8.4f}"
    )

result.save("runs/api-example", overwrite=True)  # config.toml, metrics.csv, summary.json, figures
