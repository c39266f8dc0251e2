// loadgen's charts in Locust's LLM tab: TTFT and TPOT p50/p99, output tokens/s and requests in flight per window
// of the run clock, the stage boundaries marked. Data: /loadgen/live (loadgen/live/webtab.py). Locust's own tabs
// draw tables only, so this script draws below its page while the LLM tab is open.
(function () {
  "use strict";
  const TAB = "llm";
  const CHARTS = [
    { key: "ttft", title: "TTFT (ms)", lines: [["ttft_p50_ms", "p50", "#1976d2"], ["ttft_p99_ms", "p99", "#d32f2f"]] },
    // A reasoning model's answer after its thinking: drawn only where a request thought (`optional`).
    { key: "answer_ttft", title: "Answer TTFT (ms)", optional: true,
      lines: [["answer_ttft_p50_ms", "p50", "#1976d2"], ["answer_ttft_p99_ms", "p99", "#d32f2f"]] },
    { key: "tpot", title: "TPOT (ms)", lines: [["tpot_p50_ms", "p50", "#1976d2"], ["tpot_p99_ms", "p99", "#d32f2f"]] },
    { key: "tokens", title: "Output tokens/s", lines: [["output_tokens_per_s", "tok/s", "#2e7d32"]] },
    { key: "in_flight", title: "Requests in flight", lines: [["in_flight", "in flight", "#6a1b9a"]] },
  ];
  const W = 600, H = 230, L = 56, R = 12, T = 28, B = 30;
  const box = document.createElement("div");
  box.id = "loadgen-charts";
  box.style.cssText = "display:none;position:absolute;left:0;right:0;flex-wrap:wrap;gap:16px;padding:0 40px;" +
    "font:12px sans-serif;";
  document.body.appendChild(box);
  // The tab's table has 20 columns: compact cells, so that it fits a window 1,280 px wide, and beyond that it
  // scrolls inside its card (the scrollbar under the table), never past the page's edge. Only while the LLM tab
  // is open: Locust's own tabs keep their look.
  const style = document.createElement("style");
  style.textContent =
    "body.loadgen-llm #root .MuiTableContainer-root{overflow-x:auto;max-width:100%}" +
    "body.loadgen-llm #root .MuiTableCell-root{padding:6px 8px;font-size:13px}";
  document.head.appendChild(style);

  const onTab = () => new URLSearchParams(window.location.search).get("tab") === TAB;
  const fmt = (v) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

  function chart(spec, series, stages, width) {
    const ts = series.t_s || [];
    const x0 = 0, x1 = Math.max(ts.length ? ts[ts.length - 1] + width : 1, 1);
    let ymax = 0, points = 0;
    for (const [key] of spec.lines) for (const v of series[key] || []) if (v !== null) { ymax = Math.max(ymax, v); points++; }
    ymax = ymax > 0 ? ymax * 1.1 : 1;
    const px = (t) => L + ((t - x0) / (x1 - x0)) * (W - L - R);
    const py = (v) => H - B - (v / ymax) * (H - T - B);
    let svg = `<svg class="loadgen-chart" data-chart="${spec.key}" data-points="${points}" data-max="${fmt(ymax / 1.1)}"` +
      ` width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" style="background:#fff;border:1px solid #ddd;border-radius:4px">`;
    svg += `<text x="${L}" y="16" font-weight="bold">${esc(spec.title)}</text>`;
    for (const f of [0, 0.5, 1]) {
      const v = (ymax / 1.1) * f, y = py(v);
      svg += `<line x1="${L}" x2="${W - R}" y1="${y}" y2="${y}" stroke="#eee"/>`;
      svg += `<text x="${L - 4}" y="${y + 4}" text-anchor="end">${fmt(v)}</text>`;
    }
    for (const [f, anchor] of [[0, "start"], [0.5, "middle"], [1, "end"]]) {
      const t = x0 + (x1 - x0) * f;
      svg += `<text x="${px(t)}" y="${H - 10}" text-anchor="${anchor}">${fmt(t)} s</text>`;
    }
    let free = -Infinity;  // where the last name drawn ends: a sweep's short stages get names only where they fit
    for (const s of stages) {
      const x = px(s.start_s);
      svg += `<line class="stage" x1="${x}" x2="${x}" y1="${T}" y2="${H - B}" stroke="#888" stroke-dasharray="4 3"/>`;
      if (x >= free) {
        svg += `<text x="${x + 3}" y="${T + 10}" fill="#555">${esc(s.stage)}</text>`;
        free = x + 7 * s.stage.length + 8;
      }
    }
    spec.lines.forEach(([key, label, color], i) => {
      let path = "", pen = false;
      (series[key] || []).forEach((v, j) => {
        if (v === null) { pen = false; return; }
        path += `${pen ? "L" : "M"}${px(ts[j] + width / 2).toFixed(1)},${py(v).toFixed(1)}`;
        pen = true;
      });
      svg += `<path class="line" data-key="${key}" d="${path}" fill="none" stroke="${color}" stroke-width="1.6"/>`;
      svg += `<text x="${W - R - 70 * (spec.lines.length - i)}" y="16" fill="${color}">&#9644; ${esc(label)}</text>`;
    });
    return svg + "</svg>";
  }

  // Below the tab's table (Locust's page is React's; this box stays outside its tree).
  function place() {
    box.style.display = onTab() ? "flex" : "none";
    document.body.classList.toggle("loadgen-llm", onTab());
    const tables = document.querySelectorAll("#root table");
    const above = tables.length ? tables[tables.length - 1].getBoundingClientRect().bottom : 120;
    box.style.top = `${above + window.scrollY + 24}px`;
  }

  async function refresh() {
    place();
    if (!onTab()) return;
    try {
      const live = await (await fetch("./loadgen/live")).json();
      const drawn = CHARTS.filter((c) => !c.optional ||
        c.lines.some(([k]) => (live.series[k] || []).some((v) => v !== null)));
      box.innerHTML = drawn.map((c) => chart(c, live.series, live.stages, live.series.width_s)).join("");
      box.dataset.final = live.final ? "1" : "0";
      place();
    } catch (e) {
      box.textContent = "loadgen: the live figures are not reachable (" + e + ")";
    }
  }
  let last = "";
  setInterval(() => {
    place();
    if (window.location.search !== last) { last = window.location.search; refresh(); }
  }, 300);
  setInterval(refresh, 2000);
})();
