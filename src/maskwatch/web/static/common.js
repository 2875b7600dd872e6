// Shared by the page and the dashboard: the token from the address, labels, colours, chips.
"use strict";
const maskwatch = (() => {
  const token = new URLSearchParams(location.search).get("token");
  const withToken = (path) =>
    token ? `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : path;
  const display = { mask: "Mask", no_mask: "No mask", incorrect: "Mask worn incorrectly",
                    uncertain: "Uncertain", unsettled: "Not yet settled" };
  const colours = { mask: "#3cb43c", no_mask: "#dc2828", incorrect: "#ffa500",
                    uncertain: "#a0a0a0", unsettled: "#a0a0a0" };
  async function getJson(path) {
    const response = await fetch(withToken(path));
    if (!response.ok) throw new Error(`${path}: ${response.status}`);
    return response.json();
  }
  // A coloured pill: the label's name, and a count when given.
  function chip(label, count) {
    const span = document.createElement("span");
    span.className = "chip";
    span.dataset.label = label;
    span.style.background = colours[label] || "#a0a0a0";
    span.textContent = `${display[label] || label}${count === undefined ? "" : " " + count}`;
    return span;
  }
  // A legend: one chip per label, put first in `element`.
  function legend(element, labels) {
    element.prepend(...labels.map((label) => chip(label)));
  }
  return { token, withToken, display, colours, getJson, chip, legend };
})();
