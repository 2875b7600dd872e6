// Live counts per camera, a timeline per minute/hour/day, recent events; refreshed every 2 s.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const LABELS = ["mask", "no_mask", "incorrect", "unsettled"];
  const chip = (label, n) =>
    `<span class="chip" style="background:${maskwatch.colours[label]}">${maskwatch.display[label] || label} ${n}</span>`;

  function cameraChoices(names) {
    const select = $("camera");
    const known = new Set([...select.options].map((o) => o.value));
    for (const name of names) {
      if (!known.has(name)) select.add(new Option(name, name));
    }
  }

  function render(stats) {
    cameraChoices(Object.keys(stats.cameras));
    const rows = Object.entries(stats.cameras).map(([name, c]) =>
      `<tr><td>${escape(name)}</td><td>${c.people_seen}</td><td>${
        Object.entries(c.in_view).map(([l, n]) => chip(l, n)).join(" ") || "nobody"}</td></tr>`);
    $("cameras").tBodies[0].innerHTML = rows.join("");
    $("total-people").textContent =
      Object.values(stats.cameras).reduce((sum, c) => sum + c.people_seen, 0);
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
