"""The throughput chart: jobs finished per minute over the last hour, as inline SVG."""
from __future__ import annotations

import datetime as dt

from jobkit.api.dashboard.markup import Safe, html, join

MINUTES = 60
BAR_W, PLOT_H, TOP, BOTTOM = 12, 110, 14, 18
WIDTH = MINUTES * BAR_W
COLOURS = {"succeeded": "#2e7d32", "failed": "#c62828"}


def window(now: float) -> tuple[int, float]:
    """The chart's last minute (``now``'s) and the unix second its first minute starts."""
    last = int(now // 60)
    return last, float((last - MINUTES + 1) * 60)


def throughput(per_minute: dict[int, dict[str, int]], now: float) -> Safe:
    """Stacked bars, succeeded under failed, one per minute ending with ``now``'s minute."""
    last, _ = window(now)
    minutes = range(last - MINUTES + 1, last + 1)
    totals = [sum(per_minute.get(m, {}).get(s, 0) for s in COLOURS) for m in minutes]
    peak = max(totals + [1])
    bars = join(_bar(i, m, per_minute.get(m, {}), peak) for i, m in enumerate(minutes))
    done = {s: sum(per_minute.get(m, {}).get(s, 0) for m in minutes) for s in COLOURS}
    label = f"last hour: {done['succeeded']} succeeded, {done['failed']} failed"
    return html(
        '<svg class="chart" role="img" aria-label="{label}" viewBox="0 0 {w} {h}" width="{w}" height="{h}"'
        '>'
        '<line x1="0" y1="{base}" x2="{w}" y2="{base}" stroke="#bbb"/>{bars}'
        '<text x="2" y="10" font-size="10" fill="#666">{peak}/min</text>'
        '<text x="2" y="{ty}" font-size="10" fill="#666">-60 min</text>'
        '<text x="{w}" y="{ty}" font-size="10" fill="#666" text-anchor="end">now</text></svg>'
        '<p class="legend"><span class="sw ok"></span>succeeded {ok} '
        '<span class="sw bad"></span>failed {bad} <span class="muted">(per minute, UTC)</span></p>',
        label=label, w=WIDTH, h=TOP + PLOT_H + BOTTOM, base=TOP + PLOT_H, bars=bars, peak=peak,
        ty=TOP + PLOT_H + 13, ok=done["succeeded"], bad=done["failed"])


def _bar(index: int, minute: int, states: dict[str, int], peak: int) -> Safe:
    x, y = index * BAR_W + 1, float(TOP + PLOT_H)
    rects = []
    for state, colour in COLOURS.items():
        height = PLOT_H * states.get(state, 0) / peak
        if height:
            y -= height
            rects.append(html('<rect x="{}" y="{}" width="{}" height="{}" fill="{}"/>',
                              x, f"{y:.1f}", BAR_W - 2, f"{height:.1f}", colour))
    at = dt.datetime.fromtimestamp(minute * 60, dt.timezone.utc).strftime("%H:%M")
    title = f"{at} UTC: {states.get('succeeded', 0)} succeeded, {states.get('failed', 0)} failed"
    hit = html('<rect x="{}" y="{}" width="{}" height="{}" fill="transparent"/>', x, TOP, BAR_W - 2, PLOT_H)
    return html("<g><title>{}</title>{}{}</g>", title, hit, join(rects))
