// Shared by the page and the dashboard: the token from the address, labels and colours.
"use strict";
const maskwatch = (() => {
  const token = new URLSearchParams(location.search).get("token");
  const withToken = (path) =>
    token ? `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : path;
  const display = { mask: "Mask", no_mask: "No mask", incorrect: "Mask worn incorrectly",
                    uncertain: "Uncertain", unsettled: "Not yet settled" };
  const colours = { mask: "#3cb43c", no_mask: "#dc2828", incorrect: "#ffa500",
                    uncertain: "#a0a0a0", unsettled: "#c8c8c8" };
  async function getJson(path) {
    const response = await fetch(withToken(path));
    if (!response.ok) throw new Error(`${path}: ${response.status}`);
    return response.json();
  }
  return { token, withToken, display, colours, getJson };
})();
