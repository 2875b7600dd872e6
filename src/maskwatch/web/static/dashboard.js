// Live counts per camera, a timeline per minute/hour/day, recent events; refreshed every 2 s.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const LABELS = ["mask", "no_mask", "incorrect", "unsettled"];
  const chip = (label, n) =>
    `<span class="chip" style="background:${maskwatch.colours[label]}">${maskwatch.display[label] || label} ${n}</span>`;

  const byName = new Intl.Collator(undefined, { numeric: true }).compare;

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

  // A camera that failed shows its error where the people in view would be.
  function cameraRow(name, c) {
    const now = c.error
      ? `<td class="error">${escape(c.error)}</td>`
      : `<td>${Object.entries(c.in_view).map(([l, n]) => chip(l, n)).join(" ") || "nobody"}</td>`;
    return `<tr><td>${escape(name)}</td><td>${c.people_seen}</td>${now}</tr>`;
  }

  function render(stats) {
    const names = Object.keys(stats.cameras).sort(byName);
    cameraChoices(names);
    $("cameras").tBodies[0].innerHTML = names.map((n) => cameraRow(n, stats.cameras[n])).join("");
    $("total-people").textContent = stats.people_seen;
    const timeline = stats.timeline;
    const peak = Math.max(1, ...timeline.rows.map((r) => r.people));
    $("timeline").innerHTML = timeline.rows.slice(-60).map((r) =>
      `<div class="bar" title="${r.period}: ${r.people} people"><span class="period">${
        r.period.slice(-5)}</span>${LABELS.map((l) => r[l]
          ? `<span style="width:${(100 * r[l]) / peak}%;background:${maskwatch.colours[l]}">${r[l]}</span>`
          : "").join("")}</div>`).join("") || "<p>no people yet</p>";
    $("stored").textContent = stats.stored
      ? "from the server's event log"
      : "kept in memory only (start the server with --events FILE to store events)";
    $("events").innerHTML = stats.recent.slice(0, 20).map((e) =>
      `<li>${new Date(e.time * 1000).toLocaleTimeString()} · ${escape(e.camera)} · #${e.track} ${
        e.kind}${e.label ? " " + chip(e.label, "") : ""}</li>`).join("");
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  function escape(text) {
    const div = document.createElement("div");
    div.textContent = text;
    return div.innerHTML;
  }

  async function refresh() {
    try {
      const camera = $("camera").value;
      const query = `by=${$("by").value}${camera ? "&camera=" + encodeURIComponent(camera) : ""}`;
      render(await maskwatch.getJson(`api/v1/stats?${query}`));
    } catch (error) {
      $("updated").textContent = error.message;
    }
  }

  $("page-link").href = maskwatch.withToken(".");
  $("by").addEventListener("change", refresh);
  $("camera").addEventListener("change", refresh);
  refresh();
  setInterval(refresh, 2000);
})();
