// Progressive enhancement only: every page works without this file.
// - forms with data-confirm ask in a dialog instead of a confirmation page;
// - elements with data-live refresh their content every few seconds from the URL given,
//   until the fragment marks itself final (a finished job).
"use strict";

const REFRESH_MS = 2000;

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.dataset.confirm) return;
  if (!window.confirm(form.dataset.confirm)) {
    event.preventDefault();
    return;
  }
  const flag = form.querySelector("input[name=confirm]");
  if (flag) flag.value = "yes";
});

async function refresh(element) {
  const url = element.dataset.live;
  if (!url) return;
  try {
    const answer = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (answer.ok) {
      // The fragment is rendered and escaped by the server, like the page it replaces.
      element.innerHTML = await answer.text();
      if (element.querySelector("[data-final]")) {
        delete element.dataset.live;
        return;
      }
    }
  } catch (error) {
    // Offline for a moment: try again at the next tick.
  }
  window.setTimeout(() => refresh(element), REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  for (const element of document.querySelectorAll("[data-live]")) {
    window.setTimeout(() => refresh(element), REFRESH_MS);
  }
});
