// Progressive enhancement only: every page works without this file.
// - forms with data-confirm ask in a dialog instead of a confirmation page;
// - elements with data-live redraw from the URL given whenever the store's change feed says
//   something changed (the body's data-changes URL answers when it does, or after a few
//   seconds with nothing new), at most every 2 seconds, until the fragment marks itself final
//   (a finished job). Without that URL they redraw every few seconds.
"use strict";

const REFRESH_MS = 2000;
const MIN_REDRAW_MS = 2000;

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

const pause = (ms) => new Promise((resolve) => window.setTimeout(resolve, ms));

async function redraw(element) {
  const url = element.dataset.live;
  if (!url) return;
  try {
    const answer = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (answer.ok) {
      // The fragment is rendered and escaped by the server, like the page it replaces.
      element.innerHTML = await answer.text();
      if (element.querySelector("[data-final]")) delete element.dataset.live;
    }
  } catch (error) {
    // Offline for a moment: the next change or tick tries again.
  }
}

async function follow(changes, elements) {
  let since = "";
  let first = true;
  const live = () => elements.filter((element) => element.dataset.live);
  while (live().length) {
    let changed = false;
    try {
      const query = since ? `?since=${encodeURIComponent(since)}` : "";
      const answer = await fetch(changes + query, { credentials: "same-origin", cache: "no-store" });
      if (!answer.ok) throw new Error(`changes: ${answer.status}`);
      const body = await answer.json();
      // The first answer only learns the token: the page was drawn a moment ago.
      changed = Boolean(body.changed) && !first;
      first = false;
      since = String(body.token);
    } catch (error) {
      await pause(REFRESH_MS);
      changed = true;
    }
    if (changed) {
      const started = Date.now();
      await Promise.all(live().map(redraw));
      await pause(Math.max(0, MIN_REDRAW_MS - (Date.now() - started)));
    }
  }
}

async function tick(elements) {
  while (elements.some((element) => element.dataset.live)) {
    await pause(REFRESH_MS);
    await Promise.all(elements.map(redraw));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const elements = Array.from(document.querySelectorAll("[data-live]"));
  if (!elements.length) return;
  const changes = document.body.dataset.changes;
  if (changes) follow(changes, elements);
  else tick(elements);
});
