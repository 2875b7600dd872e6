// Live counts per camera with a sparkline of mask compliance over the last hour, a timeline per
// minute/hour/day with its legend, recent events; refreshed every 2 s. Fields this page does
// not know are ignored.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const LABELS = ["mask", "no_mask", "incorrect", "unsettled"];
  const SVG = "http://www.w3.org/2000/svg";
  const SPARK = { width: 120, height: 28, pad: 3 };
  const TIMELINE_PERIODS = 60; // the server reads only the people of these periods

  const byName = new Intl.Collator(undefined, { numeric: true }).compare;

  function element(tag, props = {}, ...children) {
    const node = Object.assign(document.createElement(tag), props);
    node.append(...children);
    return node;
  }

  function svg(tag, attributes) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    return node;
  }

  // The cameras on the board now (ended browser sessions drop out) and the one chosen, in
  // natural order; rebuilt only when they change, so an open list is left alone.
  function cameraChoices(names) {
    const select = $("camera");
    const chosen = select.value;
    const shown = chosen && !names.includes(chosen) ? [...names, chosen].sort(byName) : names;
    const listed = [...select.options].slice(1).map((o) => o.value);
    if (listed.join("\0") === shown.join("\0")) return;
    select.replaceChildren(new Option("all cameras", ""), ...shown.map((n) => new Option(n, n)));
    select.value = chosen;
  }

  // Share of settled people with a mask per period of the last hour: a line (broken where
  // nobody settled), the newest share beside it.
  function sparkline(compliance) {
    const cell = element("td", { className: "spark" });
    const shares = compliance && Array.isArray(compliance.share) ? compliance.share : [];
    const known = shares.map((s, i) => [s, i]).filter(([s]) => typeof s === "number");
    if (!known.length) {
      cell.append(element("span", { className: "note", textContent: "no settled people" }));
      return cell;
    }
    const { width, height, pad } = SPARK;
    const x = (i) => pad + ((i + 0.5) * (width - 2 * pad)) / shares.length;
    const y = (s) => pad + (1 - s) * (height - 2 * pad);
    const chart = svg("svg", { class: "sparkline", width, height, viewBox: `0 0 ${width} ${height}`,
                               role: "img" });
    chart.append(svg("rect", { x: 0, y: 0, width, height, class: "spark-back" }));
    chart.append(svg("line", { x1: pad, x2: width - pad, y1: y(0.5), y2: y(0.5),
                               class: "spark-half" }));
    let run = [];
    const flush = () => {
      if (run.length > 1) {
        chart.append(svg("polyline", { points: run.map(([s, i]) => `${x(i)},${y(s)}`).join(" "),
                                       class: "spark-line" }));
      }
      run = [];
    };
    shares.forEach((s, i) => { if (typeof s === "number") run.push([s, i]); else flush(); });
    flush();
    for (const [s, i] of known) chart.append(svg("circle", { cx: x(i), cy: y(s), r: 2.5,
                                                             class: "spark-dot" }));
    const settled = (compliance.settled || []).reduce((a, b) => a + b, 0);
    const masked = (compliance.mask || []).reduce((a, b) => a + b, 0);
    const [last] = known[known.length - 1];
    const title = svg("title", {});
    title.textContent = `${masked} of ${settled} settled people wore a mask in the last hour`;
    chart.prepend(title);
    cell.append(chart, element("span", { className: "spark-value",
                                         textContent: `${Math.round(last * 100)}%` }));
    return cell;
  }

  // A camera that failed shows its error where the people in view would be.
  function cameraRow(name, camera, compliance) {
    const row = element("tr", {}, element("td", { textContent: name, title: name }),
                        element("td", { textContent: camera.people_seen }));
    if (camera.error) {
      row.className = "failed";
      row.append(element("td", { className: "error", textContent: `camera failed: ${camera.error}` }));
    } else {
      const chips = Object.entries(camera.in_view || {}).map(([l, n]) => maskwatch.chip(l, n));
      row.append(element("td", { className: "chips" }, ...(chips.length ? chips : ["nobody"])));
    }
    row.append(sparkline(compliance));
    return row;
  }

  function bar(row, peak) {
    const parts = LABELS.filter((l) => row[l]).map((l) => element("span", {
      textContent: row[l],
      style: `width:${(100 * row[l]) / peak}%;background:${maskwatch.colours[l]}`,
    }));
    return element("div", { className: "bar", title: `${row.period}: ${row.people} people` },
                   element("span", { className: "period", textContent: row.period.slice(-5) }),
                   ...parts);
  }

  function render(stats) {
    const names = Object.keys(stats.cameras).sort(byName);
    cameraChoices(names);
    const compliance = stats.compliance || {};
    $("cameras").tBodies[0].replaceChildren(
      ...names.map((n) => cameraRow(n, stats.cameras[n], compliance[n])));
    $("total-people").textContent = stats.people_seen;
    const rows = stats.timeline.rows;
    const peak = Math.max(1, ...rows.map((r) => r.people));
    $("timeline").replaceChildren(...(rows.length
      ? rows.map((r) => bar(r, peak))
      : [element("p", { textContent: "no people yet" })]));
    $("stored").textContent = stats.stored
      ? "from the server's event log"
      : "kept in memory only (start the server with --events FILE to store events)";
    $("events").replaceChildren(...stats.recent.slice(0, 20).map((e) => element("li", {},
      `${new Date(e.time * 1000).toLocaleTimeString()} · ${e.camera} · #${e.track} ${e.kind} `,
      ...(e.label ? [maskwatch.chip(e.label)] : []))));
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  async function refresh() {
    try {
      const camera = $("camera").value;
      const query = `by=${$("by").value}&periods=${TIMELINE_PERIODS}${camera ? "&camera=" + encodeURIComponent(camera) : ""}`;
      render(await maskwatch.getJson(`api/v1/stats?${query}`));
    } catch (error) {
      $("updated").textContent = error.message;
    }
  }

  $("page-link").href = maskwatch.withToken(".");
  maskwatch.legend($("timeline-legend"), LABELS);
  $("by").addEventListener("change", refresh);
  $("camera").addEventListener("change", refresh);
  async function poll() {
    await refresh();
    setTimeout(poll, 2000); // after the answer: a slow server gets one poll of a page at a time
  }

  poll();
})();
